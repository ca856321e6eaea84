"""The real operator (kopf, the handlers, the autoscaler's timer) scaling real runtimes.

Three `voicefleet serve` processes stand in for the pods a ReplicaSet would run: the test
plays the ReplicaSet (it creates a Pod object in the emulated API server for each replica the
Deployment asks for, pointing at the next free process, and removes the pod with the lowest
pod-deletion-cost when asked for fewer) and the Service (it routes each request to the ready
pod with the fewest requests outstanding). Load is real HTTP with real audio.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import yaml

from tests.autoscaler.runtime_fleet import RuntimeProcess
from tests.loopback import free_port
from tests.operator.harness import ApiServer, ScalePaths, register_cluster_resources
from tests.operator.harness.crd import CrdSchema
from tests.operator.harness.running import RunningOperator, eventually
from voicefleet_operator.autoscaler.timer import DELETION_COST
from voicefleet_operator.crd.generate import build_crd
from voicefleet_operator.settings import OperatorSettings

NS = "speech"
NAME = "tiny-en"
VS_PATH = "voicefleet.io/v1alpha1/voiceservices"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
CLIENTS = 6


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ApiServer]:
    schema = CrdSchema(build_crd())
    assert schema.scale is not None
    async with ApiServer() as server, kmock.Server(server):
        server.namespaces.add(NS)
        server.deployments.manage_pods = False  # ReplicaSetStandIn below runs the pods
        register_cluster_resources(
            server,
            voiceservice_validator=schema.violations,
            voiceservice_defaulter=schema.default,
            voiceservice_scale=ScalePaths(
                spec_replicas=schema.scale["specReplicasPath"],
                status_replicas=schema.scale["statusReplicasPath"],
                label_selector=schema.scale.get("labelSelectorPath"),
            ),
        )
        yield server


@pytest.fixture
async def operator(cluster: ApiServer, tmp_path: Path) -> AsyncIterator[RunningOperator]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e", "cluster": {"server": str(cluster.url).rstrip("/")}}],
                "users": [{"name": "operator", "user": {"token": "test-token-not-a-secret"}}],
                "contexts": [
                    {"name": "e", "context": {"cluster": "e", "user": "operator", "namespace": NS}}
                ],
                "current-context": "e",
            }
        )
    )
    settings = OperatorSettings(
        namespaces=[NS],
        standalone=True,
        kubeconfig=kubeconfig,
        metrics_port=free_port(),
        metrics_host="127.0.0.1",
        autoscaler_interval=1.0,
        resync_interval=1.0,
        backoff=0.2,
        backoff_max=1.0,
        idle_timeout=1.0,
    )
    running = RunningOperator(settings)
    await running.start()
    yield running
    await running.stop()


async def send(cluster: ApiServer, method: str, url: str, body: Any = None) -> dict[str, Any]:
    content = "application/merge-patch+json" if method == "PATCH" else "application/json"
    headers = {"Content-Type": content}
    data = json.dumps(body) if body is not None else None
    async with cluster.request(method, url, data=data, headers=headers) as response:
        reply: dict[str, Any] = await response.json(content_type=None)
        assert response.status < 300, reply
        return reply


def voiceservice() -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "model": {"name": "tiny.en", "source": "image"},
            "precision": "int8",
            "replicas": {"min": 1, "max": 3},
            "autoscaling": {
                "mode": "builtin",
                "targetQueueDepthPerReplica": 2,
                # Seconds instead of minutes, so the test sees a whole cycle quickly.
                "stableWindowSeconds": 4,
                "burstWindowSeconds": 2,
                "scaleDownStabilizationSeconds": 6,
                "startupSeconds": 0,
                "metrics": {"pollIntervalSeconds": 1},
            },
            "runtime": {"concurrency": 1, "queueSize": 16},
        },
    }


class ReplicaSetStandIn:
    """Pods for the Deployment's replicas, each backed by a free runtime process."""

    def __init__(self, cluster: ApiServer, fleet: list[RuntimeProcess]) -> None:
        self.cluster = cluster
        self.fleet = fleet
        self.removed: list[dict[str, Any]] = []

    def pods(self) -> dict[str, dict[str, Any]]:
        return self.cluster.alive(PODS, NS)

    async def reconcile(self) -> None:
        deployment = self.cluster.read(DEPLOYMENTS, NS, NAME)
        if deployment is None:
            return
        wanted = int(deployment["spec"]["replicas"])
        labels = deployment["spec"]["selector"]["matchLabels"]
        pods = self.pods()
        used = {p["metadata"]["annotations"]["prometheus.io/port"] for p in pods.values()}
        free = [r for r in self.fleet if str(r.port) not in used]
        for runtime in free[: max(0, wanted - len(pods))]:
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            await send(
                self.cluster,
                "POST",
                f"/api/v1/namespaces/{NS}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{NAME}-7d9f-{runtime.pod}",
                        "namespace": NS,
                        "labels": labels,
                        "annotations": {"prometheus.io/port": str(runtime.port)},
                        "creationTimestamp": now,
                    },
                    "spec": {"containers": [{"name": "runtime"}]},
                },
            )
            # The kubelet's part: the pod runs (the process is up) and is ready.
            await send(
                self.cluster,
                "PATCH",
                f"/api/v1/namespaces/{NS}/pods/{NAME}-7d9f-{runtime.pod}/status",
                {
                    "status": {
                        "phase": "Running",
                        "podIP": "127.0.0.1",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    }
                },
            )
        if len(pods) > wanted:
            # The ReplicaSet removes the pods with the lowest deletion cost first.
            def cost(pod: dict[str, Any]) -> int:
                return int(pod["metadata"].get("annotations", {}).get(DELETION_COST, "0"))

            for pod in sorted(pods.values(), key=cost)[: len(pods) - wanted]:
                self.removed.append(pod)
                await send(
                    self.cluster,
                    "DELETE",
                    f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}",
                )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.reconcile()
            await asyncio.sleep(0.2)


class Load:
    """Clients sending jfk.flac to the ready pod with the fewest requests outstanding."""

    def __init__(self, replicaset: ReplicaSetStandIn, audio: bytes) -> None:
        self.replicaset = replicaset
        self.audio = audio
        self.outstanding: collections.Counter[str] = collections.Counter()
        self.answers: list[tuple[str, int, str]] = []

    def endpoint(self) -> tuple[str, str] | None:
        ready = {
            name: pod["metadata"]["annotations"]["prometheus.io/port"]
            for name, pod in self.replicaset.pods().items()
            if (pod.get("status") or {}).get("podIP")
        }
        if not ready:
            return None
        name = min(ready, key=lambda n: (self.outstanding[n], n))
        return name, f"http://127.0.0.1:{ready[name]}/v1/audio/transcriptions"

    async def client(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not stop.is_set():
                target = self.endpoint()
                if target is None:
                    await asyncio.sleep(0.1)
                    continue
                pod, url = target
                self.outstanding[pod] += 1
                try:
                    response = await http.post(
                        url,
                        files={"file": ("jfk.flac", self.audio, "audio/flac")},
                        data={"model": "whisper-1"},
                    )
                except httpx.TransportError as error:  # unanswered: fails the test below
                    self.answers.append((pod, -1, f"{url}: {error!r}"))
                    continue
                finally:
                    self.outstanding[pod] -= 1
                text = response.json().get("text", "") if response.status_code == 200 else ""
                self.answers.append((pod, response.status_code, text))


def autoscaler_status(cluster: ApiServer) -> dict[str, Any]:
    """What the operator last said about its decision (for failure messages)."""
    vs = cluster.read(VS_PATH, NS, NAME) or {}
    status: dict[str, Any] = (vs.get("status") or {}).get("autoscaler") or {}
    return status


@pytest.mark.usefixtures("operator")
async def test_the_operator_scales_real_runtimes_up_under_load_and_down_after(
    cluster: ApiServer, runtime_fleet: list[RuntimeProcess], shared_audio: Path
) -> None:
    await send(
        cluster,
        "POST",
        f"/apis/voicefleet.io/v1alpha1/namespaces/{NS}/voiceservices",
        voiceservice(),
    )
    created = await eventually(
        lambda: cluster.read(DEPLOYMENTS, NS, NAME), within=30, what="the Deployment"
    )
    assert created["spec"]["replicas"] == 1
    replicaset = ReplicaSetStandIn(cluster, runtime_fleet)
    load = Load(replicaset, (shared_audio / "jfk.flac").read_bytes())
    stop_pods, stop_load = asyncio.Event(), asyncio.Event()
    pods_task = asyncio.create_task(replicaset.run(stop_pods))
    try:
        await eventually(lambda: len(replicaset.pods()) == 1, within=10, what="the first pod")
        clients = [asyncio.create_task(load.client(stop_load)) for _ in range(CLIENTS)]

        def replicas() -> int:
            deployment = cluster.read(DEPLOYMENTS, NS, NAME) or {}
            return int(deployment.get("spec", {}).get("replicas", 0))

        try:
            await eventually(
                lambda: replicas() == 3 or any(status < 0 for _, status, _ in load.answers),
                within=60,
                what="scale-up to 3 under load",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}: {autoscaler_status(cluster)}") from None
        assert replicas() == 3, (load.answers[:3], autoscaler_status(cluster))
        # Keep the load on until every pod has answered some of it.
        await eventually(
            lambda: len({pod for pod, _, _ in load.answers}) == 3,
            within=60,
            what="all three pods serving",
        )
        stop_load.set()
        await asyncio.gather(*clients)
        await eventually(lambda: replicas() == 1, within=60, what="scale-down after the load")
        await eventually(lambda: len(replicaset.pods()) == 1, within=10, what="pods removed")
    finally:
        stop_load.set()
        stop_pods.set()
        await pods_task

    # Every request was answered, with the speech in it.
    assert load.answers
    assert all(status == 200 for _, status, _ in load.answers), collections.Counter(
        status for _, status, _ in load.answers
    )
    assert all("country" in text.lower() for _, _, text in load.answers)

    vs = cluster.read(VS_PATH, NS, NAME)
    assert vs is not None
    assert vs["spec"]["replicas"] == {"min": 1, "max": 3}  # the spec is never touched
    status = vs["status"]["autoscaler"]
    assert (status["desiredReplicas"], status["currentReplicas"]) in ((1, 1), (1, 3))
    assert status["lastScaleTime"]
    assert "scrapedPods" in status["metrics"]

    scaled = [
        e
        for e in [
            *cluster.alive("v1/events", NS).values(),
            *cluster.alive("events.k8s.io/v1/events", NS).values(),
        ]
        if e.get("reason") == "Scaled"
    ]
    messages = " | ".join(e.get("message") or e.get("note") or "" for e in scaled)
    assert "scale up 1->3" in messages
    assert "scale down 3->1" in messages

    # Before scaling down, the operator priced the pods: the ones removed were the cheapest.
    cost_patches = [
        r
        for r in cluster.journal
        if r.resource == "pods" and r.verb == "patch" and DELETION_COST in json.dumps(r.body)
    ]
    assert {r.name for r in cost_patches} >= {p["metadata"]["name"] for p in replicaset.removed}
    assert len(replicaset.removed) == 2
