"""Scenarios over a VoiceService's life on the emulator: pruning, slow pods, metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.operator.harness import ApiServer
from tests.operator.harness.running import MovableClock, RunningOperator, eventually
from voicefleet_operator.settings import OperatorSettings

NS = "speech"
VS_PATH = "voicefleet.io/v1alpha1/voiceservices"
VS_URL = f"/apis/voicefleet.io/v1alpha1/namespaces/{NS}/voiceservices"
DEPLOYMENTS = "apps/v1/deployments"
SCALEDOBJECTS = "keda.sh/v1alpha1/scaledobjects"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
PODS = "v1/pods"
PRIMARY = "NVIDIA-A100-SXM4-80GB"
SECOND = "NVIDIA-L4"
PROMETHEUS = {"source": "prometheus", "prometheus": {"url": "http://127.0.0.1:9"}}


def voiceservice(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "tiny.en"},
        "gpu": {"type": SECOND},
        "precision": "float16",
        "replicas": {"fixed": 1},
        "autoscaling": {"mode": "off"},
    }
    base.update(spec)
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": "stt", "namespace": NS},
        "spec": base,
    }


async def send(cluster: ApiServer, method: str, url: str, body: Any = None) -> dict[str, Any]:
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    async with cluster.request(
        method, url, json=body, headers={"Content-Type": content_type}
    ) as response:
        reply: dict[str, Any] = await response.json(content_type=None)
        assert response.status < 300, reply
        return reply


def status_of(cluster: ApiServer) -> dict[str, Any]:
    return dict((cluster.read(VS_PATH, NS, "stt") or {}).get("status") or {})


def deployment(cluster: ApiServer) -> dict[str, Any]:
    return cluster.read(DEPLOYMENTS, NS, "stt") or {}


def pod_spec(cluster: ApiServer) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(cluster).get("spec", {}).get("template", {}).get("spec", {})
    return spec


def runtime_container(cluster: ApiServer) -> dict[str, Any]:
    containers = pod_spec(cluster).get("containers") or [{}]
    return dict(containers[0])


def runtime_env(cluster: ApiServer) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in runtime_container(cluster).get("env", [])}


def warnings(cluster: ApiServer) -> list[dict[str, Any]]:
    return [e for e in cluster.alive("v1/events", NS).values() if e.get("type") == "Warning"]


def child_writes(cluster: ApiServer, since: int) -> list[tuple[str | None, str]]:
    return [
        (r.verb, r.path)
        for r in cluster.journal[since:]
        if not r.user_agent.startswith("kmock")
        and r.verb in ("create", "patch", "update", "delete")
        and r.resource not in ("events", "voiceservices")
    ]


async def scrape(
    settings: OperatorSettings,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the operator's /metrics serves, by (name, sorted labels)."""
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ----- pruning --------------------------------------------------------------------------------


def decoy(kind: str, api_version: str, owner_uid: str) -> dict[str, Any]:
    """Labelled exactly like our children, but owned by another object: never ours to delete."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": "stt-by-hand",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/managed-by": "voicefleet-operator",
                "voicefleet.io/voiceservice": "stt",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "stt",
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        },
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stt"}},
    }


@pytest.mark.parametrize("cluster_serves_keda", [True])
async def test_autoscaling_mode_changes_prune_only_the_old_owned_autoscaler(
    cluster: ApiServer, operator: RunningOperator
) -> None:
    keda = {"mode": "keda", "metrics": PROMETHEUS}
    await send(
        cluster, "POST", VS_URL, voiceservice(replicas={"min": 1, "max": 3}, autoscaling=keda)
    )
    await eventually(
        lambda: cluster.read(SCALEDOBJECTS, NS, "stt"), what="KEDA mode creates a ScaledObject"
    )
    owner_uid = (cluster.read(VS_PATH, NS, "stt") or {})["metadata"]["uid"]
    # Objects labelled alike that the VoiceService does not own: one owned by another live
    # object (its Deployment: a different uid), one owned by nobody.
    await send(
        cluster,
        "POST",
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers",
        decoy("HorizontalPodAutoscaler", "autoscaling/v2", deployment(cluster)["metadata"]["uid"]),
    )
    unowned = decoy("ScaledObject", "keda.sh/v1alpha1", "unused")
    del unowned["metadata"]["ownerReferences"]
    await send(cluster, "POST", f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects", unowned)
    assert not cluster.alive(HPAS, NS).get("stt")

    await send(cluster, "PATCH", f"{VS_URL}/stt", {"spec": {"autoscaling": {"mode": "hpa"}}})
    await eventually(
        lambda: cluster.read(HPAS, NS, "stt") and not cluster.read(SCALEDOBJECTS, NS, "stt"),
        what="hpa mode: the HPA replaces the ScaledObject",
    )
    hpa = cluster.read(HPAS, NS, "stt") or {}
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == owner_uid

    builtin = {"mode": "builtin", "metrics": {"source": "pods", "prometheus": None}}
    await send(cluster, "PATCH", f"{VS_URL}/stt", {"spec": {"autoscaling": builtin}})
    await eventually(lambda: not cluster.read(HPAS, NS, "stt"), what="builtin mode: the HPA goes")
    assert set(cluster.alive(HPAS, NS)) == {"stt-by-hand"}, "another owner's HPA stays"
    assert set(cluster.alive(SCALEDOBJECTS, NS)) == {"stt-by-hand"}, "an unowned one stays"
    assert deployment(cluster), "the Deployment itself is never pruned"
    deleted = [
        (r.resource, r.name, r.body)
        for r in cluster.journal
        if r.verb == "delete" and not r.user_agent.startswith("kmock")
    ]
    assert [(resource, name) for resource, name, _ in deleted] == [
        ("scaledobjects", "stt"),
        ("horizontalpodautoscalers", "stt"),
    ]
    for _, _, options in deleted:
        assert options["preconditions"]["uid"], "each delete is fenced by the child's uid"
    await eventually(
        lambda: (
            [e.get("reason") for e in cluster.alive("v1/events", NS).values()].count("Deleted") == 2
        ),
        what="an Event for each deleted child",  # kopf posts Events in the background
    )

    samples = await scrape(operator.settings)
    writes = "voicefleet_operator_child_writes_total"
    assert sample(samples, writes, kind="ScaledObject", action="delete") == 1
    assert sample(samples, writes, kind="HorizontalPodAutoscaler", action="delete") == 1
    assert sample(samples, writes, kind="HorizontalPodAutoscaler", action="create") == 1
    assert sample(samples, writes, kind="Deployment", action="create") == 1
    assert sample(samples, "voicefleet_operator_reconciles_total", result="success") >= 3


# ----- GPU fallback ---------------------------------------------------------------------------


def with_fallbacks() -> dict[str, Any]:
    return voiceservice(
        gpu={
            "type": PRIMARY,
            "fallbacks": [{"type": SECOND}, {"cpu": {"precision": "int8"}}],
            "fallbackAfterSeconds": 30,
        }
    )


async def test_pods_slow_to_start_never_trigger_a_fallback(
    cluster: ApiServer, operator: RunningOperator, clock: MovableClock
) -> None:
    # Scheduled but never ready (a large model still loading): another GPU would not help.
    cluster.deployments.pods_become_ready = False
    await send(cluster, "POST", VS_URL, with_fallbacks())
    await eventually(lambda: cluster.alive(PODS, NS), what="the pods are created")
    clock.advance(3600)
    looked = len(cluster.journal)
    await eventually(
        lambda: [
            r
            for r in cluster.journal[looked:]
            if r.resource == "pods" and r.verb == "list" and not r.user_agent.startswith("kmock")
        ],
        what="a reconcile after the clock moved reads the pods",
    )
    await eventually(lambda: status_of(cluster).get("gpu"), what="status reports the GPU")
    assert pod_spec(cluster)["nodeSelector"]["nvidia.com/gpu.product"] == PRIMARY
    fallback = status_of(cluster)["fallback"]
    assert fallback == {"index": 0}, fallback
