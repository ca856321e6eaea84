"""What every handler shares: settings, the API client, metrics, per-VoiceService state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voicefleet_operator.handlers.metrics import OperatorMetrics
from voicefleet_operator.k8s.cache import ChildCache, is_newer
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.discovery import OptionalApis
from voicefleet_operator.k8s.resources import DEPLOYMENTS, WATCHED_CHILDREN, Resource
from voicefleet_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ObjectVersion = tuple[str | None, int | None]
"""(uid, generation): a re-created object of the same name is a new one."""
RECONCILES_AT_ONCE = 16
"""Reconciles running at once; the others wait for a turn holding only their trigger's body.
A thousand VoiceServices applied together each start one: unbounded, every one held its parsed
spec, built children and the API server's answers while the requests went out 20 at a time,
and the operator's memory peaked above 500 MB. With 16, a new VoiceService's reconcile takes
about 1.5 s (most of it the API server's ClusterIP allocation for its Service), room for 10
new ones a second: on 2 shared cores the control plane itself managed about 5. 64 at once
came no faster and wrote more intermediate states of each rollout."""
FOLLOW_UPS_AT_ONCE = 8
"""Reconciles started by a child's change (a rollout's progress: mostly one status write) take
their turn from slots of their own. Sharing the RECONCILES_AT_ONCE, they queued behind a
thousand new VoiceServices' first reconciles, which wait on the API server's ClusterIP
allocation (one Service at a time), and every VoiceService turned Ready only once the last
one's children were created (the median VoiceService 116 s after its apply, the last 119 s)."""


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
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILES_AT_ONCE))
    _follow_up_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(FOLLOW_UPS_AT_ONCE)
    )
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _waiting: dict[tuple[str, str], int] = field(default_factory=dict)
    _failed_versions: dict[tuple[str, str], ObjectVersion] = field(default_factory=dict)
    _reconciled_generations: dict[tuple[str, str], ObjectVersion] = field(default_factory=dict)
    _written: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    _pruned_for: dict[tuple[str, str], tuple[ObjectVersion, tuple[Resource, ...]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.children = ChildCache(
            WATCHED_CHILDREN,
            max_age=self.settings.child_cache_seconds,
            with_status=(DEPLOYMENTS,),  # the rollout the VoiceService's status reports
        )

    def lock_for(self, namespace: str, name: str) -> asyncio.Lock:
        """One reconcile at a time per VoiceService, whichever event started it."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def reconcile_queued(self, namespace: str, name: str) -> bool:
        """Whether a reconcile of this VoiceService is waiting for its turn: it reads the
        children when it runs, so a child event or resync arriving now needs no reconcile of
        its own (without this, every status change of every child queued a full one)."""
        return self._waiting.get((namespace, name), 0) > 0

    def reconcile_in_background(
        self, namespace: str, name: str, reconcile: Callable[[], Awaitable[object]]
    ) -> None:
        """Run `reconcile` as a task of its own, counted as queued from now on.

        For child events: kopf hands an object's next event to its handler only once the
        handler returned, so a handler waiting for its owner's turn held back the child's
        later events, and the reconcile it waited for read the child as it was a turn ago
        (with a thousand VoiceServices, two minutes: each step of a rollout became a status
        write of its own, and Ready came last)."""
        key = (namespace, name)
        self._waiting[key] = self._waiting.get(key, 0) + 1

        async def queued() -> None:
            # turn() counts it from here on: no await in between, so no gap
            self._waiting[key] = max(0, self._waiting.get(key, 1) - 1)
            try:
                await reconcile()
            except Exception:
                logger.exception("a reconcile of %s/%s failed", namespace, name)

        task = asyncio.create_task(queued(), name=f"reconcile {namespace}/{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop_background(self) -> None:
        """Cancel the reconciles still running in the background (the operator stops)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def turn(
        self, namespace: str, name: str, *, follow_up: bool = False
    ) -> AsyncIterator[None]:
        """Hold this VoiceService's lock and one of the RECONCILES_AT_ONCE slots (one of the
        FOLLOW_UPS_AT_ONCE for a `follow_up` of a child's change); `reconcile_queued` is true
        while waiting for either."""
        key = (namespace, name)
        lock = self.lock_for(namespace, name)
        slots = self._follow_up_slots if follow_up else self._slots
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            await lock.acquire()
            try:
                await slots.acquire()
            except BaseException:
                lock.release()
                raise
        finally:
            self._waiting[key] -= 1
        try:
            yield
        finally:
            slots.release()
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
