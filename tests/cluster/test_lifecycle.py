"""What the emulator alone showed before, on the real control plane: every spec only the
operator can refuse, pruning after an autoscaling mode change (KEDA's own ScaledObject CRD
installed), pods scheduled but never ready, and the operator's own metrics."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import OPERATOR, PROMETHEUS
from tests.cluster.controlplane import ControlPlane, FakeNode
from tests.cluster.test_operator import apply, condition, get, items, now_rfc3339, voiceservice
from tests.operator.harness.running import MovableClock, RunningOperator, eventually
from tests.operator_api.spec_cases import INVALID
from tests.operator_api.spec_cases import OPERATOR as OPERATOR_LAYER

Json = dict[str, Any]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(operator: RunningOperator) -> Samples:
    """Every sample the operator's /metrics serves, by (name, sorted labels)."""
    settings = operator.settings
    response = httpx.get(f"http://{settings.metrics_host}:{settings.metrics_port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ----- the operator's layer of the spec table ---------------------------------------------------


async def test_every_spec_only_the_operator_refuses_is_degraded_once_and_left_alone(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    """Accepted by kube-apiserver (tests/cluster/test_crd.py checks the other layers), refused
    by the operator's models: Degraded with the models' message, one Warning, nothing built,
    and no retry."""
    cases = {}
    for index, case in enumerate(c for c in INVALID if c.layer == OPERATOR_LAYER):
        body = copy.deepcopy(case.body)
        name = body["metadata"]["name"]  # unless the name is what the case is about:
        body["metadata"] = {
            "name": f"case-{index:03d}" if name == "whisper" else name,
            "namespace": namespace,
        }
        apply(control_plane, body)
        cases[body["metadata"]["name"]] = case

    def degraded(name: str) -> Json:
        found = condition(control_plane, namespace, "Degraded", name)
        return found if found.get("status") == "True" else {}

    await eventually(
        lambda: all(degraded(name) for name in cases),
        within=90,
        what="every operator-layer case turns Degraded",
    )
    for name, case in cases.items():
        assert degraded(name)["reason"] == "InvalidSpec", case.id
        assert case.message in degraded(name)["message"], (case.id, degraded(name))
    assert items(control_plane, namespace, "deployments") == [], "nothing is built"

    def warnings() -> list[str]:
        events = control_plane.client().get(f"/api/v1/namespaces/{namespace}/events").json()
        return [e["reason"] for e in events["items"] if e.get("type") == "Warning"]

    await eventually(lambda: len(warnings()) >= len(cases), what="one Warning per case")
    await asyncio.sleep(2)  # kopf's own bookkeeping patch after the handler lands
    settled = now_rfc3339()
    await asyncio.sleep(3)  # three resyncs at the test's interval: nothing retried
    writes = control_plane.writes_by(OPERATOR.name, after=settled)
    assert writes == [], [(w["verb"], w["requestURI"]) for w in writes]
    assert warnings() == ["InvalidSpec"] * len(cases)
    samples = metric_samples(operator)
    reconciles = "voicefleet_operator_reconciles_total"
    assert sample(samples, reconciles, result="invalid_spec") == len(cases)


# ----- pruning, with KEDA's CRD -----------------------------------------------------------------


def decoy(namespace: str, kind: str, api_version: str, owner_uid: str | None) -> Json:
    """Labelled exactly like our children, but owned by another object (or none)."""
    metadata: Json = {
        "name": "stt-by-hand",
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/managed-by": "voicefleet-operator",
            "voicefleet.io/voiceservice": "stt",
        },
    }
    if owner_uid is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stt", "uid": owner_uid}
        ]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stt"}
    spec: Json = {"scaleTargetRef": target}
    if kind == "ScaledObject":
        spec["triggers"] = [
            {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}
        ]
    else:
        spec["maxReplicas"] = 2
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def names(plane: ControlPlane, path: str) -> set[str]:
    listing = plane.client().get(path)
    # A new CRD's API is served a moment after Established (404), and answers 429 while its
    # watch cache fills: not yet.
    if listing.status_code in (404, 429):
        return set()
    listing.raise_for_status()
    return {o["metadata"]["name"] for o in listing.json()["items"]}


@pytest.mark.usefixtures("keda")
async def test_autoscaling_mode_changes_prune_only_the_old_owned_autoscaler(
    control_plane: ControlPlane, namespace: str, operator: RunningOperator
) -> None:
    scaledobjects = f"/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects"
    hpas = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"

    def autoscaled(mode: str, **metrics: Any) -> Json:
        autoscaling = {"mode": mode, "metrics": metrics or PROMETHEUS}
        return voiceservice(namespace, replicas={"min": 1, "max": 3}, autoscaling=autoscaling)

    apply(control_plane, autoscaled("keda"))
    await eventually(
        lambda: "stt" in names(control_plane, scaledobjects),
        within=60,
        what="KEDA mode creates a ScaledObject, which KEDA's own schema admits",
    )
    deployment_uid = get(control_plane, namespace, "deployments", "stt")["metadata"]["uid"]
    apply(
        control_plane,
        decoy(namespace, "HorizontalPodAutoscaler", "autoscaling/v2", deployment_uid),
    )
    apply(control_plane, decoy(namespace, "ScaledObject", "keda.sh/v1alpha1", None))

    apply(control_plane, autoscaled("hpa"))
    await eventually(
        lambda: (
            "stt" in names(control_plane, hpas) and "stt" not in names(control_plane, scaledobjects)
        ),
        within=60,
        what="hpa mode: the HPA replaces the ScaledObject",
    )
    owner_uid = get(control_plane, namespace, "voiceservices", "stt")["metadata"]["uid"]
    hpa = control_plane.client().get(f"{hpas}/stt").json()
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == owner_uid

    apply(control_plane, autoscaled("builtin", source="pods"))
    await eventually(
        lambda: "stt" not in names(control_plane, hpas), within=60, what="builtin: the HPA goes"
    )
    assert names(control_plane, hpas) == {"stt-by-hand"}, "another owner's HPA stays"
    assert names(control_plane, scaledobjects) == {"stt-by-hand"}, "an unowned one stays"
    assert get(control_plane, namespace, "deployments", "stt"), "the Deployment is never pruned"
    deletes = [
        (w["objectRef"]["resource"], w["objectRef"]["name"])
        for w in control_plane.writes_by(OPERATOR.name)
        if w["verb"] == "delete" and w["objectRef"].get("namespace") == namespace
    ]
    assert deletes == [("scaledobjects", "stt"), ("horizontalpodautoscalers", "stt")]

    samples = metric_samples(operator)
    writes = "voicefleet_operator_child_writes_total"
    assert sample(samples, writes, kind="ScaledObject", action="delete") == 1
    assert sample(samples, writes, kind="HorizontalPodAutoscaler", action="delete") == 1
    assert sample(samples, writes, kind="HorizontalPodAutoscaler", action="create") == 1
    assert sample(samples, writes, kind="Deployment", action="create") == 1
    assert sample(samples, "voicefleet_operator_reconciles_total", result="success") >= 3
    assert sample(samples, "voicefleet_operator_reconcile_duration_seconds_count") >= 3


# ----- pods scheduled but never ready -----------------------------------------------------------

UNREADY_TAINT = {"key": "voicefleet.io/test-never-ready", "value": "true", "effect": "NoSchedule"}
UNREADY_PRODUCT = "NVIDIA-H100-80GB-HBM3"


@pytest.fixture
def node_that_never_runs_pods(control_plane: ControlPlane) -> Iterator[str]:
    """A GPU node kwok does not manage: the real scheduler binds pods to it, and nothing ever
    starts them (as a node whose kubelet pulls a huge image, or loads a large model). Its own
    taint keeps every other test's pods away."""
    node = FakeNode("gpu-h100-never-ready", gpus=8, gpu_product=UNREADY_PRODUCT).manifest()
    node["metadata"]["annotations"] = {}  # not kwok's
    node["spec"]["taints"].append(UNREADY_TAINT)
    control_plane.kubectl("create", "-f", "-", stdin=yaml.safe_dump(node))
    # Admission taints a new node not-ready; the node lifecycle controller that lifts it is off.
    control_plane.kubectl(
        "taint", "node", node["metadata"]["name"], "node.kubernetes.io/not-ready:NoSchedule-"
    )
    yield node["metadata"]["name"]
    control_plane.kubectl("delete", "node", node["metadata"]["name"], "--wait=false")


async def test_pods_scheduled_but_never_ready_never_trigger_a_fallback(
    control_plane: ControlPlane,
    namespace: str,
    operator: RunningOperator,
    clock: MovableClock,
    node_that_never_runs_pods: str,
) -> None:
    toleration = {**UNREADY_TAINT, "operator": "Equal"}
    apply(
        control_plane,
        voiceservice(
            namespace,
            replicas={"fixed": 1},
            precision="float16",
            gpu={
                "type": UNREADY_PRODUCT,
                "fallbacks": [{"cpu": {"precision": "int8"}}],
                "fallbackAfterSeconds": 30,
            },
            pod={"tolerations": [toleration]},
        ),
    )

    def bound_pods() -> list[Json]:
        return [p for p in items(control_plane, namespace, "pods") if p["spec"].get("nodeName")]

    await eventually(bound_pods, within=60, what="the real scheduler binds the pod")
    (pod,) = bound_pods()
    assert pod["spec"]["nodeName"] == node_that_never_runs_pods
    clock.advance(3600)  # an hour past fallbackAfterSeconds, without waiting for it
    moved_at = now_rfc3339()
    await eventually(
        lambda: [
            e
            for e in control_plane.audit_events()
            if e.get("user", {}).get("username") == OPERATOR.name
            and e.get("verb") == "list"
            and (e.get("objectRef") or {}).get("resource") == "pods"
            and e.get("requestReceivedTimestamp", "") > moved_at
        ],
        within=30,
        what="a reconcile after the clock moved reads the pods",
    )
    status = get(control_plane, namespace, "voiceservices", "stt")["status"]
    assert status["fallback"] == {"index": 0}, status
    assert status["phase"] != "Ready"
    template = get(control_plane, namespace, "deployments", "stt")["spec"]["template"]["spec"]
    assert template["nodeSelector"]["nvidia.com/gpu.product"] == UNREADY_PRODUCT
