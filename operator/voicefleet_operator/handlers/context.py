"""What every handler shares: settings, the API client, per-VoiceService locks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.discovery import OptionalApis
from voicefleet_operator.settings import OperatorSettings


@dataclass
class OperatorContext:
    settings: OperatorSettings
    api: KubeApi | None = None
    optional_apis: OptionalApis = field(
        default_factory=lambda: OptionalApis(servicemonitors=False, scaledobjects=False)
    )
    optional_apis_checked_at: float | None = None
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def lock_for(self, namespace: str, name: str) -> asyncio.Lock:
        """One reconcile at a time per VoiceService, whichever event started it."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    @property
    def client(self) -> KubeApi:
        if self.api is None:
            raise RuntimeError("the API client is created by the startup handler")
        return self.api
