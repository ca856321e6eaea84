"""The chart grants exactly what the operator says it needs (rbac.PERMISSIONS), per mode."""

from __future__ import annotations

from typing import Any

import pytest

from voicefleet_operator.rbac import Permission, permissions_for

RELEASE_NAMESPACE = "voicefleet-system"
WATCHED = ["speech", "speech-batch"]

Grant = tuple[str, str, str, str]
"""(where: "cluster" or a namespace, API group, resource, verb)"""


def granted(objects: list[dict[str, Any]]) -> set[Grant]:
    """Every (where, group, resource, verb) the rendered roles give the operator's account."""
    account = {"kind": "ServiceAccount", "name": "vf-voicefleet", "namespace": RELEASE_NAMESPACE}
    bound: set[tuple[str, str]] = set()
    for binding in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [account]
        where = binding["metadata"].get("namespace", "cluster")
        bound.add((where, binding["roleRef"]["name"]))
    grants: set[Grant] = set()
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        where = role["metadata"].get("namespace", "cluster")
        assert (where, role["metadata"]["name"]) in bound, f"{role['metadata']} is not bound"
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add((where, group, resource, verb))
    return grants


def expected(permissions: tuple[Permission, ...], watched: list[str] | None) -> set[Grant]:
    grants: set[Grant] = set()
    for permission in permissions:
        places = ["cluster"] if permission.scope == "cluster" or watched is None else watched
        for where in places:
            for verb in permission.verbs:
                grants.add((where, permission.api_group, permission.resource, verb))
    return grants


@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "peering"])
@pytest.mark.parametrize("watched", [None, WATCHED], ids=["all-namespaces", "watched"])
def test_chart_grants_exactly_the_operators_permissions(
    render: Any, watched: list[str] | None, peering: bool
) -> None:
    values: dict[str, Any] = {"peering": {"enabled": peering}}
    if watched:
        values["watchNamespaces"] = watched
    if peering:
        values["replicaCount"] = 2
    needed = permissions_for(all_namespaces=watched is None, peering=peering)
    want = expected(needed, watched)
    have = granted(render(values))
    assert want - have == set(), "the operator needs these and the chart does not grant them"
    assert have - want == set(), "the chart grants these and the operator never uses them"


def test_no_wildcards_anywhere(render: Any, combination: dict[str, Any]) -> None:
    for role in (o for o in render(combination) if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert all("*" not in item for item in rule[field]), rule
            assert "nonResourceURLs" not in rule


def test_rbac_can_be_left_to_the_cluster_admin(render: Any) -> None:
    objects = render({"rbac": {"create": False}})
    assert not [o for o in objects if "Role" in o["kind"]]
