"""The child cache's rules (what it keeps, for how long, which version wins, which events are
news), kopf's digest of a spec, the bound on reconciles at once, and the peering priority that
keeps two replicas of one installation from pausing each other."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, cast

import kopf

from voicefleet_operator.handlers.context import (
    FOLLOW_UPS_AT_ONCE,
    RECONCILES_AT_ONCE,
    OperatorContext,
)
from voicefleet_operator.k8s.cache import CachedKubeApi, ChildCache
from voicefleet_operator.k8s.connection import ClusterConnection
from voicefleet_operator.k8s.resources import (
    DEPLOYMENTS,
    PODDISRUPTIONBUDGETS,
    PODS,
    SERVICES,
    VOICESERVICES,
    WATCHED_CHILDREN,
)
from voicefleet_operator.main import DigestDiffBaseStorage, replica_priority
from voicefleet_operator.settings import OperatorSettings

OURS = {"app.kubernetes.io/managed-by": "voicefleet-operator"}


def deployment(version: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "stt",
            "namespace": "speech",
            "resourceVersion": version,
            "labels": OURS if labels is None else labels,
            "managedFields": [{"manager": "voicefleet-operator"}],
        },
        "spec": spec,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_only_single_objects_of_watched_kinds_are_cached() -> None:
    cache = ChildCache(WATCHED_CHILDREN, max_age=60)
    assert cache.covers(DEPLOYMENTS.path("speech", "stt"))
    assert cache.covers(SERVICES.path("speech", "stt"))
    assert not cache.covers(DEPLOYMENTS.path("speech"))  # a list
    assert not cache.covers(DEPLOYMENTS.path("speech", "stt", "scale"))
    assert not cache.covers(PODS.path("speech", "stt"))  # core v1 like Services, not watched
    assert not cache.covers(VOICESERVICES.path("speech", "stt"))


def test_newer_versions_win_and_managed_fields_are_dropped() -> None:
    cache = ChildCache(WATCHED_CHILDREN, max_age=60)
    path = DEPLOYMENTS.path("speech", "stt")
    cache.remember(deployment("12", replicas=2))
    cache.remember(deployment("11", replicas=1))  # a late watch event: older than our write
    cached = cache.get(path)
    assert cached is not None
    assert cached["spec"] == {"replicas": 2}
    assert "managedFields" not in cached["metadata"]
    cache.remember(deployment("13", replicas=3))
    assert (cache.get(path) or {})["spec"] == {"replicas": 3}
    cache.forget_object(deployment("13"))
    assert cache.get(path) is None


async def test_a_write_through_a_subresource_drops_the_cached_object() -> None:
    cache = ChildCache(WATCHED_CHILDREN, max_age=60)
    cache.remember(deployment("5", replicas=1))

    class Answering(CachedKubeApi):
        async def request(self, method: str, path: str, **_: Any) -> Any:
            return {"kind": "Scale", "spec": {"replicas": 3}}

    connection = ClusterConnection(server="https://127.0.0.1:1")
    api = Answering(connection, cache=cache, request_timeout=1, connect_timeout=1)
    path = DEPLOYMENTS.path("speech", "stt")
    await api.apply(f"{path}/scale", {"spec": {"replicas": 3}}, field_manager="autoscaler")
    assert cache.get(path) is None, "the next read asks the API server for the new count"
    await api.close()


def test_objects_not_ours_are_not_kept_and_old_entries_are_read_again() -> None:
    clock = Clock()
    cache = ChildCache(WATCHED_CHILDREN, max_age=60, clock=clock)
    cache.remember(deployment("1", labels={"app": "someone-elses"}))
    assert len(cache) == 0
    cache.remember(deployment("2"))
    clock.now = 59
    assert cache.get(DEPLOYMENTS.path("speech", "stt")) is not None
    clock.now = 61  # a deletion missed while a watch was down is repaired after max_age
    assert cache.get(DEPLOYMENTS.path("speech", "stt")) is None


def test_the_replica_started_first_outranks_later_ones_of_its_installation_only() -> None:
    first = replica_priority(0, started_at=1_800_000_000.000)
    later = replica_priority(0, started_at=1_800_000_000.002)
    assert first > later
    assert replica_priority(1, started_at=1_800_000_999.0) > first, "installation priority ranks"
    assert replica_priority(-1, started_at=0.0) < later
    assert abs(replica_priority(900, started_at=0.0)) < 2**63
    assert abs(replica_priority(-900, started_at=9_000_000_000.0)) < 2**63


def test_only_what_a_reconcile_reads_is_kept_and_only_its_changes_count() -> None:
    cache = ChildCache(WATCHED_CHILDREN, max_age=60, with_status=(DEPLOYMENTS,))
    path = DEPLOYMENTS.path("speech", "stt")
    ready = {"status": {"readyReplicas": 1}, **deployment("20", replicas=1)}
    assert cache.remember(ready), "a first sight is news"
    kept = cache.get(path) or {}
    assert kept["status"] == {"readyReplicas": 1}
    assert set(kept["metadata"]) == {"name", "namespace", "resourceVersion", "labels"}
    assert not cache.remember({**ready, "metadata": {**ready["metadata"], "resourceVersion": "21"}})
    assert (cache.get(path) or {})["metadata"]["resourceVersion"] == "21"
    assert cache.remember(deployment("22", replicas=2)), "a spec edit is news"
    assert not cache.remember(deployment("19", replicas=5)), "an older event is not"

    pdb: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "stt", "namespace": "speech", "resourceVersion": "30", "labels": OURS},
        "spec": {"maxUnavailable": 1},
        "status": {"currentHealthy": 0},
    }
    assert cache.remember(pdb)
    healthier = {**pdb, "status": {"currentHealthy": 1}}
    healthier["metadata"] = {**pdb["metadata"], "resourceVersion": "31"}
    assert not cache.remember(healthier), "a status the reconcile never reads is no news"
    kept_pdb = cache.get(PODDISRUPTIONBUDGETS.path("speech", "stt"))
    assert kept_pdb is not None
    assert "status" not in kept_pdb


def as_body(raw: dict[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, raw))


def test_the_digest_of_the_spec_ignores_status_and_metadata_kopf_leaves_out() -> None:
    storage = DigestDiffBaseStorage(prefix="voicefleet.io", key="last-handled-configuration")
    body: dict[str, Any] = {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {
            "name": "stt",
            "namespace": "speech",
            "labels": {"team": "a"},
            "annotations": {"note": "x", "voicefleet.io/last-handled-configuration": "{}"},
            "managedFields": [{"manager": "kubectl"}],
            "resourceVersion": "1",
        },
        "spec": {"model": {"name": "tiny.en"}},
        "status": {"phase": "Ready"},
    }
    digest = storage.build(body=as_body(body))
    # What kopf's own build keeps (spec, labels, annotations but its own), digested alike.
    essence = kopf.AnnotationsDiffBaseStorage.build(storage, body=as_body(body))
    canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"))
    assert dict(digest) == {"sha256": hashlib.sha256(canonical.encode()).hexdigest()}
    noisier = {
        **body,
        "metadata": {**body["metadata"], "resourceVersion": "2", "managedFields": []},
        "status": {"phase": "Progressing"},
    }
    assert storage.build(body=as_body(noisier)) == digest
    relabelled = {**body, "metadata": {**body["metadata"], "labels": {"team": "b"}}}
    assert storage.build(body=as_body(relabelled)) != digest
    respecced = {**body, "spec": {"model": {"name": "base.en"}}}
    assert storage.build(body=as_body(respecced)) != digest


async def test_reconciles_beyond_the_slots_wait_and_count_as_queued() -> None:
    context = OperatorContext(settings=OperatorSettings(kubeconfig=None))
    running = 0
    most = 0
    release = asyncio.Event()

    async def one(name: str) -> None:
        nonlocal running, most
        async with context.turn("speech", name):
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(one(f"stt-{i}")) for i in range(RECONCILES_AT_ONCE + 5)]
    for _ in range(RECONCILES_AT_ONCE + 20):  # every task has reached its turn or its wait
        await asyncio.sleep(0)
    assert most == RECONCILES_AT_ONCE
    waiting = [
        f"stt-{i}"
        for i in range(RECONCILES_AT_ONCE + 5)
        if context.reconcile_queued("speech", f"stt-{i}")
    ]
    assert len(waiting) == 5, "a child event for one of these needs no reconcile of its own"
    release.set()
    await asyncio.gather(*tasks)
    assert running == 0


async def test_a_childs_change_is_reconciled_while_every_other_slot_is_taken() -> None:
    """The follow-up of a rollout's progress (a status write) never queues behind new
    VoiceServices' first reconciles."""
    context = OperatorContext(settings=OperatorSettings(kubeconfig=None))
    release = asyncio.Event()
    held = 0

    async def hold(name: str, *, follow_up: bool = False) -> None:
        nonlocal held
        async with context.turn("speech", name, follow_up=follow_up):
            held += 1
            await release.wait()

    creating = [asyncio.create_task(hold(f"new-{i}")) for i in range(RECONCILES_AT_ONCE + 3)]
    following = [
        asyncio.create_task(hold(f"rolling-{i}", follow_up=True))
        for i in range(FOLLOW_UPS_AT_ONCE + 2)
    ]
    for _ in range(RECONCILES_AT_ONCE + FOLLOW_UPS_AT_ONCE + 20):
        await asyncio.sleep(0)
    assert held == RECONCILES_AT_ONCE + FOLLOW_UPS_AT_ONCE
    assert context.reconcile_queued("speech", f"rolling-{FOLLOW_UPS_AT_ONCE}")
    assert not context.reconcile_queued("speech", "rolling-0")
    release.set()
    await asyncio.gather(*creating, *following)
