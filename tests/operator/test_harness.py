"""The emulated API server behaves like kube-apiserver where the operator depends on it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operator.harness import ApiServer, Fault, ResourceBehaviour, ScalePaths
from tests.operator.harness.running import eventually

WIDGETS = "/apis/example.com/v1/namespaces/ns/widgets"
DEPLOYMENTS = "/apis/apps/v1/namespaces/ns/deployments"
CONFIGMAPS = "/api/v1/namespaces/ns/configmaps"
MERGE = "application/merge-patch+json"


def _needs_integer_size(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    size = new.get("spec", {}).get("size")
    return [] if isinstance(size, int) else ["spec.size: must be an integer"]


@pytest.fixture
def server(api_server: ApiServer) -> ApiServer:
    api_server.register(
        "example.com/v1/widgets",
        ResourceBehaviour(
            kind="Widget",
            status_subresource=True,
            scale=ScalePaths(spec_replicas=".spec.size", status_replicas=".status.size"),
            validate=_needs_integer_size,
        ),
    )
    api_server.register(
        "apps/v1/deployments",
        ResourceBehaviour(kind="Deployment", status_subresource=True, scale=ScalePaths()),
    )
    api_server.register("v1/configmaps", ResourceBehaviour(kind="ConfigMap"))
    return api_server


async def call(
    server: ApiServer, method: str, path: str, body: Any = None, content_type: str = MERGE
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if body is not None else {}
    data = json.dumps(body) if body is not None else None
    async with server.request(method, path, data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def create_widget(server: ApiServer, name: str = "w", size: int = 1) -> dict[str, Any]:
    status, obj = await call(
        server,
        "POST",
        WIDGETS,
        {"metadata": {"name": name}, "spec": {"size": size}, "status": {"x": 1}},
    )
    assert status == 200, obj
    return obj


async def test_create_assigns_identity_and_refuses_duplicates(server: ApiServer) -> None:
    first = await create_widget(server, "a")
    second = await create_widget(server, "b")
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert first["metadata"]["generation"] == 1
    assert first["metadata"]["creationTimestamp"].endswith("Z")
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert "status" not in first, "status is dropped on create when it is a subresource"
    status, body = await call(
        server, "POST", WIDGETS, {"metadata": {"name": "a"}, "spec": {"size": 1}}
    )
    assert (status, body["reason"]) == (409, "AlreadyExists")


async def test_generation_moves_only_with_the_spec(server: ApiServer) -> None:
    obj = await create_widget(server)
    _, labelled = await call(server, "PATCH", f"{WIDGETS}/w", {"metadata": {"labels": {"a": "b"}}})
    _, with_status = await call(server, "PATCH", f"{WIDGETS}/w/status", {"status": {"ok": True}})
    _, resized = await call(server, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 2}})
    versions = [
        int(o["metadata"]["resourceVersion"]) for o in (obj, labelled, with_status, resized)
    ]
    assert versions == sorted(set(versions)), "every write gets a new, larger resourceVersion"
    assert [o["metadata"]["generation"] for o in (obj, labelled, with_status, resized)] == [
        1,
        1,
        1,
        2,
    ]


async def test_status_and_main_resource_are_separate(server: ApiServer) -> None:
    await create_widget(server)
    _, main = await call(
        server, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 3}, "status": {"ok": 1}}
    )
    assert "status" not in main, "status written through the main resource is ignored"
    _, sub = await call(
        server, "PATCH", f"{WIDGETS}/w/status", {"spec": {"size": 9}, "status": {"ok": 2}}
    )
    assert sub["status"] == {"ok": 2}
    assert sub["spec"] == {"size": 3}, "spec written through /status is ignored"


async def test_stale_resource_version_conflicts(server: ApiServer) -> None:
    obj = await create_widget(server)
    stale = obj["metadata"]["resourceVersion"]
    await call(server, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 2}})
    status, body = await call(
        server,
        "PATCH",
        f"{WIDGETS}/w",
        {"metadata": {"resourceVersion": stale}, "spec": {"size": 5}},
    )
    assert (status, body["reason"]) == (409, "Conflict")
    replaced = dict(obj, spec={"size": 5})
    status, _ = await call(server, "PUT", f"{WIDGETS}/w", replaced, "application/json")
    assert status == 409
    del replaced["metadata"]["resourceVersion"]
    status, _ = await call(server, "PUT", f"{WIDGETS}/w", replaced, "application/json")
    assert status == 422, "an update without resourceVersion is refused"
    assert server.alive("example.com/v1/widgets", "ns")["w"]["spec"] == {"size": 2}


async def test_json_patch_test_failure_is_422_and_strategic_merge_is_refused(
    server: ApiServer,
) -> None:
    await create_widget(server)
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "replace", "path": "/spec/size", "value": 7},
    ]
    status, _ = await call(server, "PATCH", f"{WIDGETS}/w", ops, "application/json-patch+json")
    assert status == 422
    status, _ = await call(
        server,
        "PATCH",
        f"{WIDGETS}/w",
        {"spec": {"size": 7}},
        "application/strategic-merge-patch+json",
    )
    assert status == 415
    assert server.alive("example.com/v1/widgets", "ns")["w"]["spec"] == {"size": 1}


async def test_a_no_op_write_changes_nothing(server: ApiServer) -> None:
    obj = await create_widget(server)
    _, same = await call(server, "PATCH", f"{WIDGETS}/w", {"spec": {"size": 1}})
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_scale_subresource_reads_and_writes_the_configured_paths(server: ApiServer) -> None:
    await create_widget(server, size=2)
    await call(server, "PATCH", f"{WIDGETS}/w/status", {"status": {"size": 1}})
    status, scale = await call(server, "GET", f"{WIDGETS}/w/scale")
    assert status == 200
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]["replicas"]) == (
        "Scale",
        2,
        1,
    )
    _, _ = await call(server, "PATCH", f"{WIDGETS}/w/scale", {"spec": {"replicas": 4}})
    widget = server.alive("example.com/v1/widgets", "ns")["w"]
    assert widget["spec"]["size"] == 4
    assert widget["metadata"]["generation"] == 2


async def test_schema_validation_refuses_invalid_objects(server: ApiServer) -> None:
    status, body = await call(
        server, "POST", WIDGETS, {"metadata": {"name": "bad"}, "spec": {"size": "x"}}
    )
    assert (status, body["reason"]) == (422, "Invalid")
    assert "spec.size" in body["message"]
    await create_widget(server)
    status, _ = await call(server, "PATCH", f"{WIDGETS}/w", {"spec": {"size": "big"}})
    assert status == 422
    assert server.alive("example.com/v1/widgets", "ns")["w"]["spec"] == {"size": 1}


async def test_owner_references_need_a_uid(server: ApiServer) -> None:
    body = {
        "metadata": {
            "name": "c",
            "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w"}],
        }
    }
    status, reply = await call(server, "POST", CONFIGMAPS, body)
    assert status == 422, reply


async def test_deleting_an_owner_collects_its_dependents(server: ApiServer) -> None:
    owner = await create_widget(server)
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "w",
        "uid": owner["metadata"]["uid"],
    }
    _, child = await call(
        server, "POST", CONFIGMAPS, {"metadata": {"name": "child", "ownerReferences": [ref]}}
    )
    grandchild_ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "child",
        "uid": child["metadata"]["uid"],
    }
    await call(
        server,
        "POST",
        CONFIGMAPS,
        {"metadata": {"name": "grandchild", "ownerReferences": [grandchild_ref]}},
    )
    await call(server, "POST", CONFIGMAPS, {"metadata": {"name": "unrelated"}})
    status, _ = await call(server, "DELETE", f"{WIDGETS}/w")
    assert status == 200
    assert set(server.alive("v1/configmaps")) == {"unrelated"}


async def test_orphan_propagation_keeps_dependents(server: ApiServer) -> None:
    owner = await create_widget(server)
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "w",
        "uid": owner["metadata"]["uid"],
    }
    await call(
        server, "POST", CONFIGMAPS, {"metadata": {"name": "child", "ownerReferences": [ref]}}
    )
    await call(
        server, "DELETE", f"{WIDGETS}/w", {"propagationPolicy": "Orphan"}, "application/json"
    )
    child = server.read("v1/configmaps", "ns", "child")
    assert child is not None
    assert not child["metadata"].get("ownerReferences")


async def test_finalizers_hold_deletion_until_removed(server: ApiServer) -> None:
    await call(
        server,
        "POST",
        WIDGETS,
        {"metadata": {"name": "f", "finalizers": ["x/y"]}, "spec": {"size": 1}},
    )
    await call(server, "DELETE", f"{WIDGETS}/f")
    held = server.read("example.com/v1/widgets", "ns", "f")
    assert held is not None
    assert held["metadata"]["deletionTimestamp"]
    status, _ = await call(
        server, "PATCH", f"{WIDGETS}/f", {"metadata": {"finalizers": ["x/y", "new/one"]}}
    )
    assert status == 422, "no new finalizers while deleting"
    await call(server, "PATCH", f"{WIDGETS}/f", {"metadata": {"finalizers": None}})
    assert server.read("example.com/v1/widgets", "ns", "f") is None


async def test_injected_faults_answer_then_stop(server: ApiServer) -> None:
    fault = server.inject(Fault(status=500, times=2, verb="create", resource="widgets"))
    statuses = [
        (await call(server, "POST", WIDGETS, {"metadata": {"name": "x"}, "spec": {"size": 1}}))[0]
        for _ in range(3)
    ]
    assert statuses == [500, 500, 200]
    assert fault.served == 2


async def test_watch_streams_changes_filtered_by_labels(server: ApiServer) -> None:
    async with server.get(
        f"{WIDGETS}?watch=true&labelSelector=team%3Da&timeoutSeconds=1"
    ) as response:
        await call(
            server,
            "POST",
            WIDGETS,
            {"metadata": {"name": "mine", "labels": {"team": "a"}}, "spec": {"size": 1}},
        )
        await call(
            server,
            "POST",
            WIDGETS,
            {"metadata": {"name": "other", "labels": {"team": "b"}}, "spec": {"size": 1}},
        )
        await call(server, "PATCH", f"{WIDGETS}/mine", {"spec": {"size": 2}})
        await call(server, "DELETE", f"{WIDGETS}/mine")
        lines = [json.loads(line) async for line in response.content if line.strip()]
    seen = [(event["type"], event["object"]["metadata"]["name"]) for event in lines]
    assert seen == [("ADDED", "mine"), ("MODIFIED", "mine"), ("DELETED", "mine")]


async def test_deployments_report_pods_from_their_spec(server: ApiServer) -> None:
    gpu = {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}, "containers": []}
    body = {"metadata": {"name": "d"}, "spec": {"replicas": 2, "template": {"spec": gpu}}}
    server.deployments.unschedulable_gpu_products.add("NVIDIA-L4")
    await call(server, "POST", DEPLOYMENTS, body)
    await eventually(
        lambda: (server.read("apps/v1/deployments", "ns", "d") or {}).get("status"),
        within=5.0,
        what="the Deployment controller reports a status",
    )
    pending = server.alive("apps/v1/deployments", "ns")["d"]["status"]
    assert (pending["replicas"], pending["readyReplicas"]) == (2, 0)
    server.deployments.unschedulable_gpu_products.clear()
    await server.refresh_deployments()
    ready = server.alive("apps/v1/deployments", "ns")["d"]["status"]
    assert (ready["replicas"], ready["readyReplicas"], ready["observedGeneration"]) == (2, 2, 1)


async def test_the_journal_records_verbs_and_subresources(server: ApiServer) -> None:
    await create_widget(server)
    await call(server, "GET", f"{WIDGETS}/w")
    await call(server, "GET", WIDGETS)
    await call(server, "PATCH", f"{WIDGETS}/w/status", {"status": {}})
    await call(server, "DELETE", f"{WIDGETS}/w")
    assert [(r.verb, r.resource, r.subresource, r.status) for r in server.journal] == [
        ("create", "widgets", None, 200),
        ("get", "widgets", None, 200),
        ("list", "widgets", None, 200),
        ("patch", "widgets", "status", 200),
        ("delete", "widgets", None, 200),
    ]


async def test_a_dependent_of_a_gone_owner_is_collected(server: ApiServer) -> None:
    ref = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "gone"}
    status, _ = await call(
        server, "POST", CONFIGMAPS, {"metadata": {"name": "late", "ownerReferences": [ref]}}
    )
    assert status == 200
    assert server.read("v1/configmaps", "ns", "late") is None
