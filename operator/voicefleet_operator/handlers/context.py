"""What every handler shares: settings, the API client, metrics, per-VoiceService state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voicefleet_operator.handlers.metrics import OperatorMetrics
from voicefleet_operator.k8s.cache import ChildCache, is_newer
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.discovery import OptionalApis
from voicefleet_operator.k8s.resources import WATCHED_CHILDREN, Resource
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
    discovery_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    children: ChildCache = field(init=False)
    """The children as the operator's watches last saw them (see k8s/cache.py)."""
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _waiting: dict[tuple[str, str], int] = field(default_factory=dict)
    _failed_versions: dict[tuple[str, str], ObjectVersion] = field(default_factory=dict)
    _reconciled_generations: dict[tuple[str, str], ObjectVersion] = field(default_factory=dict)
    _written: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    _pruned_for: dict[tuple[str, str], tuple[ObjectVersion, tuple[Resource, ...]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.children = ChildCache(WATCHED_CHILDREN, max_age=self.settings.child_cache_seconds)

    def lock_for(self, namespace: str, name: str) -> asyncio.Lock:
        """One reconcile at a time per VoiceService, whichever event started it."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def reconcile_queued(self, namespace: str, name: str) -> bool:
        """Whether a reconcile of this VoiceService is waiting for its turn: it reads the
        children when it runs, so a child event or resync arriving now needs no reconcile of
        its own (without this, every status change of every child queued a full one)."""
        return self._waiting.get((namespace, name), 0) > 0

    @contextlib.asynccontextmanager
    async def turn(self, namespace: str, name: str) -> AsyncIterator[None]:
        """Hold this VoiceService's lock; `reconcile_queued` is true while waiting for it."""
        key = (namespace, name)
        lock = self.lock_for(namespace, name)
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            await lock.acquire()
        finally:
            self._waiting[key] -= 1
        try:
            yield
        finally:
            lock.release()

    def superseded(self, namespace: str, name: str, version: ObjectVersion) -> bool:
        """A newer generation of the same object was reconciled already: this body is stale
        (a trigger that waited behind the reconcile of a spec change)."""
        done = self._reconciled_generations.get((namespace, name))
        return (
            done is not None
            and done[0] == version[0]
            and done[1] is not None
            and version[1] is not None
            and version[1] < done[1]
        )

    def mark_reconciled(self, namespace: str, name: str, version: ObjectVersion) -> None:
        self._reconciled_generations[(namespace, name)] = version

    def freshest(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """`body`, or the VoiceService as the operator's last status write stored it when that
        is newer: a trigger's body (a watch event, kopf's timer) can predate the operator's
        own last write, and deciding from its older status (the fallback step, say) would undo
        that write."""
        meta = body["metadata"]
        written = self._written.get((meta["namespace"], meta["name"]))
        if written is None or written["metadata"].get("uid") != meta.get("uid"):
            return body
        return written if is_newer(written, body) else body

    def remember_written(self, written: Mapping[str, Any]) -> None:
        meta = written["metadata"]
        self._written[(meta["namespace"], meta["name"])] = written

    def prune_due(
        self, namespace: str, name: str, version: ObjectVersion, prunable: Sequence[Resource]
    ) -> bool:
        """Children can only become unwanted when the spec or the served APIs change (or
        before this process pruned once): only then are they listed."""
        return self._pruned_for.get((namespace, name)) != (version, tuple(prunable))

    def mark_pruned(
        self, namespace: str, name: str, version: ObjectVersion, prunable: Sequence[Resource]
    ) -> None:
        self._pruned_for[(namespace, name)] = (version, tuple(prunable))

    def mark_failed(self, namespace: str, name: str, version: ObjectVersion) -> None:
        """This generation cannot be reconciled: retrying it unchanged would fail again."""
        self._failed_versions[(namespace, name)] = version

    def clear_failed(self, namespace: str, name: str) -> None:
        self._failed_versions.pop((namespace, name), None)

    def failed_at(self, namespace: str, name: str, version: ObjectVersion) -> bool:
        return self._failed_versions.get((namespace, name)) == version

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._waiting.pop((namespace, name), None)
        self._failed_versions.pop((namespace, name), None)
        self._reconciled_generations.pop((namespace, name), None)
        self._written.pop((namespace, name), None)
        self._pruned_for.pop((namespace, name), None)
        self.metrics.forget_voiceservice(namespace, name)

    @property
    def client(self) -> KubeApi:
        if self.api is None:
            raise RuntimeError("no API client: serve() opens it before kopf starts")
        return self.api
