"""The real operator (kopf, the handlers, the apply layer) against the emulated API server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.operator.harness import ApiServer, Fault
from tests.operator.harness.running import RunningOperator, eventually

NS = "speech"
VS_PATH = "voicefleet.io/v1alpha1/voiceservices"
VS_URL = f"/apis/voicefleet.io/v1alpha1/namespaces/{NS}/voiceservices"
DEPLOYMENTS = "apps/v1/deployments"
DEPLOYMENT_URL = f"/apis/apps/v1/namespaces/{NS}/deployments"
MERGE = {"Content-Type": "application/merge-patch+json"}


def voiceservice(name: str = "stt", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "tiny.en"},
        "gpu": {"type": "NVIDIA-L4"},
        "precision": "float16",
        "replicas": {"fixed": 2},
        "autoscaling": {"mode": "off"},
    }
    base.update(spec)
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": base,
    }


async def send(cluster: ApiServer, method: str, url: str, body: Any = None) -> dict[str, Any]:
    """A request as a person (kubectl) would make it: real HTTP, merge patches."""
    headers = MERGE if method == "PATCH" else {"Content-Type": "application/json"}
    data = json.dumps(body) if body is not None else None
    async with cluster.request(method, url, data=data, headers=headers) as response:
        reply: dict[str, Any] = await response.json(content_type=None)
        assert response.status < 300, reply
        return reply


def runtime_env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def ready_status(cluster: ApiServer, name: str = "stt") -> dict[str, Any] | None:
    vs = cluster.read(VS_PATH, NS, name) or {}
    status = vs.get("status") or {}
    return status if status.get("phase") == "Ready" else None


@pytest.mark.usefixtures("operator")
async def test_create_builds_children_and_reports_ready(cluster: ApiServer) -> None:
    created = await send(cluster, "POST", VS_URL, voiceservice())
    status = await eventually(lambda: ready_status(cluster), what="the VoiceService turns Ready")
    deployment = cluster.read(DEPLOYMENTS, NS, "stt")
    assert deployment is not None
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("VoiceService", created["metadata"]["uid"])
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == (
        "NVIDIA-L4"
    )
    assert set(cluster.alive("v1/services", NS)) == {"stt"}
    assert len(cluster.alive("policy/v1/poddisruptionbudgets", NS)) == 1
    assert (status["readyReplicas"], status["gpu"], status["model"]) == (2, "NVIDIA-L4", "tiny.en")
    assert status["observedGeneration"] == 1
    reasons = {e.get("reason") for e in cluster.alive("v1/events", NS).values()}
    assert "Created" in reasons


def operator_requests(cluster: ApiServer, since: int = 0) -> list[Any]:
    return [r for r in cluster.journal[since:] if not r.user_agent.startswith("kmock")]


def operator_writes(cluster: ApiServer, since: int = 0) -> list[Any]:
    writes = {"create", "update", "patch", "delete"}
    return [
        r for r in operator_requests(cluster, since) if r.verb in writes and r.resource != "events"
    ]


async def ready_service(cluster: ApiServer, **spec: Any) -> dict[str, Any]:
    await send(cluster, "POST", VS_URL, voiceservice(**spec))
    return await eventually(lambda: ready_status(cluster), what="the VoiceService turns Ready")


@pytest.mark.usefixtures("operator")
async def test_model_and_precision_updates_roll_the_deployment(cluster: ApiServer) -> None:
    await ready_service(cluster)
    await send(
        cluster,
        "PATCH",
        f"{VS_URL}/stt",
        {"spec": {"model": {"name": "base"}, "precision": "int8"}},
    )

    def rolled() -> dict[str, Any] | None:
        status = ready_status(cluster) or {}
        return status if status.get("observedGeneration") == 2 else None

    status = await eventually(rolled, what="status observes generation 2")
    env = runtime_env(cluster.read(DEPLOYMENTS, NS, "stt") or {})
    assert (env["VOICEFLEET_MODEL"], env["VOICEFLEET_PRECISION"]) == ("base", "int8")
    assert (status["model"], status["precision"]) == ("base", "int8")
    assert len(cluster.alive(DEPLOYMENTS, NS)) == 1


@pytest.mark.usefixtures("operator")
async def test_scale_subresource_and_bounds_drive_replicas(cluster: ApiServer) -> None:
    await ready_service(cluster)
    await send(cluster, "PATCH", f"{VS_URL}/stt/scale", {"spec": {"replicas": 3}})
    await eventually(
        lambda: (cluster.read(DEPLOYMENTS, NS, "stt") or {})["spec"]["replicas"] == 3,
        what="kubectl scale reaches the Deployment",
    )
    await send(
        cluster,
        "PATCH",
        f"{VS_URL}/stt",
        {"spec": {"replicas": {"fixed": None, "min": 4, "max": 6}}},
    )
    await eventually(
        lambda: (cluster.read(DEPLOYMENTS, NS, "stt") or {})["spec"]["replicas"] == 4,
        what="autoscaling off without a fixed count runs replicas.min",
    )
    reasons = [e.get("reason") for e in cluster.alive("v1/events", NS).values()]
    assert "Scaled" in reasons


@pytest.mark.usefixtures("operator")
async def test_deleted_and_edited_children_are_restored(cluster: ApiServer) -> None:
    await ready_service(cluster)
    original = cluster.read(DEPLOYMENTS, NS, "stt") or {}
    await send(cluster, "DELETE", f"/api/v1/namespaces/{NS}/services/stt")
    await eventually(lambda: cluster.read("v1/services", NS, "stt"), what="the Service returns")
    edit = {"spec": {"template": {"spec": {"nodeSelector": {"nvidia.com/gpu.product": "T4"}}}}}
    await send(cluster, "PATCH", f"{DEPLOYMENT_URL}/stt", edit)

    def restored() -> bool:
        live = cluster.read(DEPLOYMENTS, NS, "stt") or {}
        selector = live["spec"]["template"]["spec"]["nodeSelector"]
        return bool(selector == original["spec"]["template"]["spec"]["nodeSelector"])

    await eventually(restored, what="the edited node selector is repaired")
    assert len(cluster.alive(DEPLOYMENTS, NS)) == 1


@pytest.mark.parametrize("crd_enforces_cel", [False])
@pytest.mark.usefixtures("operator")
async def test_invalid_spec_is_degraded_without_a_retry_storm(cluster: ApiServer) -> None:
    # The cluster's CRD lacks the CEL rules (an older chart), so min > max gets stored.
    await send(cluster, "POST", VS_URL, voiceservice(replicas={"min": 5, "max": 2}))

    def degraded() -> dict[str, Any] | None:
        status = (cluster.read(VS_PATH, NS, "stt") or {}).get("status") or {}
        return status if status.get("phase") == "Degraded" else None

    status = await eventually(degraded, what="the VoiceService turns Degraded")
    condition = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert condition["status"] == "True"
    assert "replicas.min must not exceed replicas.max" in condition["message"]
    assert not cluster.alive(DEPLOYMENTS, NS), "nothing is built from an invalid spec"
    settled = len(cluster.journal)
    await asyncio.sleep(3 * 1.0)  # an observation window of three resync intervals
    later_writes = operator_writes(cluster, settled)
    assert later_writes == [], f"retry storm: {[(w.verb, w.path) for w in later_writes]}"
    warnings = [e for e in cluster.alive("v1/events", NS).values() if e.get("type") == "Warning"]
    assert len(warnings) == 1


@pytest.mark.usefixtures("operator")
async def test_deleting_the_voiceservice_cascades(cluster: ApiServer) -> None:
    await ready_service(cluster)
    await send(cluster, "DELETE", f"{VS_URL}/stt")
    await eventually(lambda: cluster.read(VS_PATH, NS, "stt") is None, what="the VoiceService goes")
    assert not cluster.alive(DEPLOYMENTS, NS)
    assert not cluster.alive("v1/services", NS)
    assert not cluster.alive("policy/v1/poddisruptionbudgets", NS)


async def test_restart_creates_no_duplicates_and_idle_writes_nothing(
    cluster: ApiServer, operator_settings: Any
) -> None:
    first = RunningOperator(operator_settings)
    await first.start()
    try:
        await ready_service(cluster)
    finally:
        await first.stop()
    restarted_at = len(cluster.journal)
    second = RunningOperator(operator_settings)
    await second.start()
    try:
        await eventually(
            lambda: any(
                r.resource == "deployments" for r in operator_requests(cluster, restarted_at)
            ),
            what="the restarted operator looks at the children",
        )
        await asyncio.sleep(3 * 1.0)  # an observation window of three resync intervals
    finally:
        await second.stop()
    creates = [
        r for r in operator_requests(cluster) if r.verb == "create" and r.resource != "events"
    ]
    assert sorted(r.resource for r in creates) == [
        "deployments",
        "poddisruptionbudgets",
        "services",
    ]
    child_writes = [
        r for r in operator_writes(cluster, restarted_at) if r.resource != "voiceservices"
    ]
    assert child_writes == [], [(w.verb, w.path) for w in child_writes]


@pytest.mark.usefixtures("operator")
async def test_converges_through_server_errors_and_conflicts(cluster: ApiServer) -> None:
    cluster.inject(Fault(status=500, times=2, verb="create", resource="deployments"))
    cluster.inject(
        Fault(status=409, times=1, verb="patch", resource="voiceservices", subresource="status")
    )
    cluster.inject(Fault(status=503, times=2, verb="get", resource="services"))
    await ready_service(cluster)
    assert all(f.served == f.times for f in cluster.faults)
    assert len(cluster.alive(DEPLOYMENTS, NS)) == 1


async def test_operator_never_writes_the_spec_and_stays_within_rbac(
    cluster: ApiServer, operator: RunningOperator
) -> None:
    from voicefleet_operator.rbac import allows, permissions_for

    await ready_service(cluster)
    await send(cluster, "PATCH", f"{VS_URL}/stt", {"spec": {"precision": "int8"}})
    await eventually(
        lambda: (ready_status(cluster) or {}).get("observedGeneration") == 2, what="generation 2"
    )
    vs = cluster.read(VS_PATH, NS, "stt") or {}
    assert vs["metadata"]["generation"] == 2, "only the two writes by the test moved generation"
    for request in operator_requests(cluster):
        if request.resource == "voiceservices" and request.verb in ("patch", "update"):
            touched = request.body if isinstance(request.body, dict) else {}
            paths = (
                [op.get("path", "") for op in request.body]
                if isinstance(request.body, list)
                else []
            )
            assert "spec" not in touched
            assert not any(p.startswith("/spec") for p in paths)
    granted = permissions_for(
        all_namespaces=operator.settings.all_namespaces, peering=not operator.settings.standalone
    )
    denied = {
        (r.verb, r.group, r.resource, r.subresource)
        for r in operator_requests(cluster)
        if r.verb is not None
        and not allows(
            granted,
            verb=r.verb,
            api_group=r.group or "",
            resource=r.resource or "",
            subresource=r.subresource,
        )
    }
    assert denied == set(), f"requests outside rbac.PERMISSIONS: {sorted(denied)}"
