"""The child cache's rules (what it keeps, for how long, which version wins) and the peering
priority that keeps two replicas of one installation from pausing each other."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.k8s.cache import CachedKubeApi, ChildCache
from voicefleet_operator.k8s.connection import ClusterConnection
from voicefleet_operator.k8s.resources import (
    DEPLOYMENTS,
    PODS,
    SERVICES,
    VOICESERVICES,
    WATCHED_CHILDREN,
)
from voicefleet_operator.main import replica_priority

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
