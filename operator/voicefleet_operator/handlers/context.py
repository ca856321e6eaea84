"""What every handler shares: settings, the API client, metrics, per-VoiceService state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from voicefleet_operator.handlers.metrics import OperatorMetrics
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.discovery import OptionalApis
from voicefleet_operator.settings import OperatorSettings

Clock = Callable[[], datetime]
ObjectVersion = tuple[str | None, int | None]
"""(uid, generation): a re-created object of the same name is a new one."""


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


@dataclass
class OperatorContext:
    settings: OperatorSettings
    api: KubeApi | None = None
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Clock = utc_now
    """What "now" is for placement fallbacks and status times (tests move it forward)."""
    optional_apis: OptionalApis = field(
        default_factory=lambda: OptionalApis(servicemonitors=False, scaledobjects=False)
    )
    optional_apis_checked_at: float | None = None
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _failed_versions: dict[tuple[str, str], ObjectVersion] = field(default_factory=dict)

    def lock_for(self, namespace: str, name: str) -> asyncio.Lock:
        """One reconcile at a time per VoiceService, whichever event started it."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def mark_failed(self, namespace: str, name: str, version: ObjectVersion) -> None:
        """This generation cannot be reconciled: retrying it unchanged would fail again."""
        self._failed_versions[(namespace, name)] = version

    def clear_failed(self, namespace: str, name: str) -> None:
        self._failed_versions.pop((namespace, name), None)

    def failed_at(self, namespace: str, name: str, version: ObjectVersion) -> bool:
        return self._failed_versions.get((namespace, name)) == version

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._failed_versions.pop((namespace, name), None)
        self.metrics.forget_voiceservice(namespace, name)

    @property
    def client(self) -> KubeApi:
        if self.api is None:
            raise RuntimeError("no API client: serve() opens it before kopf starts")
        return self.api
