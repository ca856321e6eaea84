"""The pure parts of the apply layer and the RBAC declaration."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.k8s.apply import contains, is_up_to_date
from voicefleet_operator.rbac import PERMISSIONS, allows, permissions_for


def _child(image: str, digest: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "annotations": {"voicefleet.io/spec-hash": digest}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}},
    }


def test_server_defaults_are_not_drift_but_edits_are() -> None:
    desired = _child("a:1", "h1")
    defaulted = _child("a:1", "h1")
    defaulted["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    assert is_up_to_date(desired, defaulted)
    assert not is_up_to_date(desired, _child("b:2", "h1")), "an edited field is drift"
    assert not is_up_to_date(desired, _child("a:1", "h0")), "an old hash needs a write"


def test_contains_compares_lists_whole_and_maps_by_key() -> None:
    assert contains({"a": 1, "b": 2}, {"a": 1})
    assert not contains({"a": [1, 2]}, {"a": [1]})


def test_permissions_are_exact_and_mode_dependent() -> None:
    for permission in PERMISSIONS:
        assert "*" not in permission.verbs
        assert "*" not in (permission.api_group, permission.resource)
    namespaced = permissions_for(all_namespaces=False, peering=True)
    clusterwide = permissions_for(all_namespaces=True, peering=True)
    assert allows(namespaced, verb="watch", api_group="kopf.dev", resource="kopfpeerings")
    assert not allows(
        namespaced, verb="watch", api_group="kopf.dev", resource="clusterkopfpeerings"
    )
    assert allows(clusterwide, verb="patch", api_group="kopf.dev", resource="clusterkopfpeerings")
    assert not allows(clusterwide, verb="list", api_group="", resource="namespaces")
    assert not allows(
        namespaced, verb="update", api_group="voicefleet.io", resource="voiceservices"
    ), "the operator never replaces a VoiceService"


def _labelled(name: str, owner_uid: str | None, *, controller: bool = True) -> dict[str, Any]:
    refs = [{"uid": owner_uid, "controller": controller}] if owner_uid else []
    return {"metadata": {"name": name, "uid": f"uid-{name}", "ownerReferences": refs}}


def test_only_owned_unwanted_children_are_pruned() -> None:
    from voicefleet_operator.k8s.prune import unwanted

    listed = [
        _labelled("stt", "vs-uid"),  # still wanted
        _labelled("stt-old", "vs-uid"),  # ours, no longer wanted
        _labelled("stt-by-hand", "someone-else"),
        _labelled("stt-orphan", None),
        _labelled("stt-adopted", "vs-uid", controller=False),  # we are not its controller
    ]
    assert [o["metadata"]["name"] for o in unwanted(listed, "vs-uid", {"stt"})] == ["stt-old"]


def _pod(candidate: int, scheduled: str, reason: str | None = None) -> dict[str, object]:
    condition = {"type": "PodScheduled", "status": scheduled}
    if reason:
        condition["reason"] = reason
    return {
        "metadata": {"annotations": {"voicefleet.io/placement-candidate": str(candidate)}},
        "status": {"conditions": [condition]},
    }


def test_only_pods_the_scheduler_refused_count_as_unschedulable() -> None:
    from voicefleet_operator.handlers.reconcile import pods_unschedulable

    refused = _pod(0, "False", "Unschedulable")
    assert pods_unschedulable([refused, refused], 0)
    assert not pods_unschedulable([], 0), "no pods yet: nothing to judge"
    assert not pods_unschedulable([refused, _pod(0, "True")], 0), "short capacity, not none"
    assert not pods_unschedulable([_pod(0, "True")], 0), "scheduled, maybe slow to start"
    assert not pods_unschedulable([refused], 1), "pods of an earlier candidate do not count"
    assert not pods_unschedulable([_pod(0, "False", "SchedulingGated")], 0)
