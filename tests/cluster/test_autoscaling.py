"""The builtin autoscaler end to end on the real control plane, with real runtime processes.

The operator scales the Deployment; the real Deployment and ReplicaSet controllers create and
delete the pods (the ReplicaSet picks by pod-deletion-cost); the real scheduler binds them to
the pod runner's node, where each runs `voicefleet serve` on the packaged tiny.en; the real
EndpointSlice controller follows their readiness, and the load reaches the pods through the
EndpointSlices, as kube-proxy would. Load is real HTTP with real speech.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import io
import secrets
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import kopf
import numpy as np
import pytest
from aiohttp import web

from tests.cluster.conftest import OPERATOR
from tests.cluster.controlplane import ControlPlane
from tests.cluster.faultproxy import FaultProxy
from tests.cluster.podrunner import RUNNER_TAINT, PodRunner, pod_network
from tests.cluster.test_operator import (
    apply,
    get,
    kubeconfig_through,
    now_rfc3339,
    ready,
    voiceservice,
)
from tests.operator.harness.running import RunningOperator, eventually
from voicefleet_operator.autoscaler.timer import DELETION_COST, scale_deployment
from voicefleet_operator.crd.models import parse_voiceservice
from voicefleet_operator.k8s.apply import FIELD_MANAGER
from voicefleet_operator.k8s.client import KubeApi
from voicefleet_operator.k8s.connection import load_connection
from voicefleet_operator.settings import OperatorSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "tiny-en"
CLIP_SECONDS = 4.0
"""jfk.flac's first words ("And so my fellow Americans ask"): the encoder's 30 s window costs
the same for any clip, so a short one only saves decoding steps."""
HEAVY_CLIENTS = 6
LIGHT_CLIENTS = 2
"""Two requests in the system against a target of two per replica: one pod's worth."""
REQUESTS = 200


@pytest.fixture
def operator_settings(operator_settings: OperatorSettings) -> OperatorSettings:
    return operator_settings.model_copy(update={"autoscaler_interval": 1.0})


@pytest.fixture
def pod_runner(control_plane: ControlPlane, tmp_path: Path) -> Iterator[PodRunner]:
    with pod_network() as next_ip:
        runner = PodRunner(
            control_plane.client,
            node=f"pod-runner-{secrets.token_hex(2)}",
            workdir=tmp_path / "pods",
            next_ip=next_ip,
            executables=REPO_ROOT / ".venv" / "bin",
        )
        runner.start()
        try:
            yield runner
        finally:
            runner.stop()


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    """One kept-alive admin client for the polling (a client per poll is a TLS handshake)."""
    with control_plane.client() as client:
        yield client


def read(api: httpx.Client, path: str) -> Any:
    response = api.get(path)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def clip(shared_audio: Path) -> bytes:
    """The first CLIP_SECONDS of jfk.flac as 16 kHz mono WAV."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    chunks: list[np.ndarray[Any, Any]] = []
    with av.open(str(shared_audio / "jfk.flac")) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    pcm = np.concatenate(chunks)[: int(CLIP_SECONDS * 16000)]
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm.astype(np.int16).tobytes())
    return out.getvalue()


def served_on_runner(namespace: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"name": "tiny.en", "source": "image"},
            "precision": "int8",
            "replicas": {"min": 1, "max": 3},
            "autoscaling": {
                "mode": "builtin",
                "targetQueueDepthPerReplica": 2,
                # Seconds instead of minutes, so the test sees whole cycles quickly.
                "stableWindowSeconds": 4,
                "burstWindowSeconds": 2,
                "scaleDownStabilizationSeconds": 6,
                "startupSeconds": 0,
                "metrics": {"pollIntervalSeconds": 1},
            },
            "runtime": {
                "concurrency": 1,
                "queueSize": 8,
                "beamSize": 1,
                "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                "env": [{"name": "VOICEFLEET_LOG_LEVEL", "value": "warning"}],
            },
            # Onto the runner's node only: it runs the pods as local processes.
            "pod": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "tolerations": [{**RUNNER_TAINT, "operator": "Equal"}],
            },
        },
    }


@dataclass
class Answer:
    endpoint: str
    status: int
    text: str


@dataclass
class EndpointLoad:
    """Clients that send the clip to the Service's ready endpoints, read from its
    EndpointSlices (as kube-proxy does), each to the endpoint with the fewest requests
    outstanding from this load."""

    api: httpx.Client
    namespace: str
    audio: bytes
    ready: list[str] = field(default_factory=list)
    outstanding: collections.Counter[str] = field(default_factory=collections.Counter)
    answers: list[Answer] = field(default_factory=list)

    def read_endpoints(self) -> list[str]:
        slices = read(
            self.api,
            f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"
            f"?labelSelector=kubernetes.io/service-name={NAME}",
        )["items"]
        found: list[str] = []
        for piece in slices:
            ports = [p["port"] for p in piece.get("ports") or [] if p.get("name") == "http"]
            for endpoint in piece.get("endpoints") or []:
                if endpoint.get("conditions", {}).get("ready") and ports:
                    found.extend(f"{address}:{ports[0]}" for address in endpoint["addresses"])
        return sorted(found)

    async def follow_endpoints(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.ready = await asyncio.to_thread(self.read_endpoints)
            await asyncio.sleep(0.2)

    async def client(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not stop.is_set():
                if not self.ready:
                    await asyncio.sleep(0.1)
                    continue
                endpoint = min(self.ready, key=lambda e: (self.outstanding[e], e))
                self.outstanding[endpoint] += 1
                try:
                    response = await http.post(
                        f"http://{endpoint}/v1/audio/transcriptions",
                        files={"file": ("clip.wav", self.audio, "audio/wav")},
                        data={"model": "whisper-1"},
                    )
                except httpx.TransportError as error:  # unanswered: fails the test
                    self.answers.append(Answer(endpoint, -1, repr(error)))
                    continue
                finally:
                    self.outstanding[endpoint] -= 1
                text = response.json().get("text", "") if response.status_code == 200 else ""
                self.answers.append(Answer(endpoint, response.status_code, text))
                if response.status_code == 429:
                    await asyncio.sleep(0.2)  # the queue is full: back off a little

    def statuses(self) -> collections.Counter[int]:
        return collections.Counter(a.status for a in self.answers)


class Clients:
    """A number of load clients that can grow and shrink; a stopped client finishes the
    request it has sent first."""

    def __init__(self, load: EndpointLoad) -> None:
        self.load = load
        self.running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def grow_to(self, count: int) -> None:
        while len(self.running) < count:
            stop = asyncio.Event()
            self.running.append((stop, asyncio.create_task(self.load.client(stop))))

    async def shrink_to(self, count: int) -> None:
        leaving, self.running = self.running[count:], self.running[:count]
        for stop, _ in leaving:
            stop.set()
        await asyncio.gather(*(task for _, task in leaving))


def replicas(api: httpx.Client, namespace: str, name: str = NAME) -> int:
    response = api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    return int(response.json().get("spec", {}).get("replicas", 0)) if response.is_success else 0


def pods(api: httpx.Client, namespace: str) -> list[dict[str, Any]]:
    return list(read(api, f"/api/v1/namespaces/{namespace}/pods")["items"])


AUTOSCALER_DECISIONS = ("scale up", "scale down")
"""How the builtin autoscaler's Scaled events begin; the operator's own say "Deployment ..."."""


def scaled_events(api: httpx.Client, namespace: str) -> list[str]:
    """The message of every Scaled event: the autoscaler's, and the reconcile's own when it set
    the count (replicas.fixed, or autoscaling off)."""
    listing = read(api, f"/api/v1/namespaces/{namespace}/events")
    return [e.get("message", "") for e in listing["items"] if e.get("reason") == "Scaled"]


async def one_event_per_scale(plane: ControlPlane, api: httpx.Client, namespace: str) -> list[str]:
    """The Scaled events, once there is one for each scale the operator carried out (an event is
    posted a moment after its write) and each is the autoscaler's own."""

    def scales() -> int:
        return sum(w["responseStatus"]["code"] < 300 for w in scale_writes(plane, namespace))

    def settled() -> list[str] | None:
        events = scaled_events(api, namespace)
        mine = all(e.startswith(AUTOSCALER_DECISIONS) for e in events)
        return events if events and mine and len(events) == scales() else None

    try:
        return await eventually(settled, within=30, what="one Scaled event per scale")
    except AssertionError as error:
        events = scaled_events(api, namespace)
        raise AssertionError(f"{error}: {scales()} scales, events {events}") from None


def cost(annotations: dict[str, str]) -> int:
    return int(annotations.get(DELETION_COST, "0"))


@pytest.mark.usefixtures("operator")
async def test_the_autoscaler_scales_real_runtimes_through_the_real_controllers(
    control_plane: ControlPlane,
    namespace: str,
    pod_runner: PodRunner,
    clip: bytes,
    api: httpx.Client,
    operator: RunningOperator,
) -> None:
    plane = control_plane
    apply(plane, served_on_runner(namespace, pod_runner.node))
    load = EndpointLoad(api, namespace, clip)
    stop_following = asyncio.Event()
    following = asyncio.create_task(load.follow_endpoints(stop_following))
    clients = Clients(load)
    started = time.monotonic()
    timeline: list[str] = []

    async def until(check: Any, within: float, what: str) -> Any:
        try:
            found = await eventually(check, within=within, what=what)
            timeline.append(f"{time.monotonic() - started:.0f}s {what} ({len(load.answers)})")
            return found
        except AssertionError as error:
            pod_runner.check()
            vs = get(plane, namespace, "voiceservices", NAME) or {}
            raise AssertionError(
                f"{error}; autoscaler: {vs.get('status', {}).get('autoscaler')}; "
                f"answers: {load.statuses()}; endpoints: {load.ready}\n{pod_runner.log_tails()}"
            ) from None

    async def until_answered(count: int) -> None:
        """CPU-bound (about 0.55 s of CPU a request), so as slow as the machine is busy: fail
        only when no answer came for a minute."""
        answered, since = len(load.answers), time.monotonic()
        while len(load.answers) < count:
            await asyncio.sleep(0.5)
            if len(load.answers) > answered:
                answered, since = len(load.answers), time.monotonic()
            elif time.monotonic() - since > 60:
                await until(lambda: False, 0, f"an answer within a minute, at {answered}")
        timeline.append(f"{time.monotonic() - started:.0f}s {count} requests ({len(load.answers)})")

    try:
        await until(lambda: len(load.ready) == 1, 90, "the first pod ready in the slices")
        # Heavy load: the queue grows, the autoscaler scales up to the maximum.
        clients.grow_to(HEAVY_CLIENTS)
        await until(lambda: replicas(api, namespace) == 3, 60, "scale-up to 3")
        await until(
            lambda: (
                len(load.ready) == 3
                and {a.endpoint for a in load.answers if a.status == 200} >= set(load.ready)
            ),
            60,
            "three pods serving",
        )
        # Light load: the autoscaler scales down to one; the ReplicaSet removes the pods with
        # the lowest deletion cost while the remaining clients keep sending.
        await clients.shrink_to(LIGHT_CLIENTS)
        await until(lambda: replicas(api, namespace) == 1, 60, "scale-down to 1")
        await until(
            lambda: (
                len(pod_runner.running()) == 1
                and len(load.ready) == 1
                and len(pods(api, namespace)) == 1
            ),
            60,
            "two pods drained and gone",
        )
        removed = list(pod_runner.deletions)
        (survivor,) = pods(api, namespace)
        # Heavy load again: a third scale event, and the rest of the requests.
        clients.grow_to(HEAVY_CLIENTS)
        await until(lambda: replicas(api, namespace) > 1, 60, "scale-up again")
        await until_answered(REQUESTS)
    finally:
        await clients.shrink_to(0)
        stop_following.set()
        await following
    pod_runner.check()

    statuses = load.statuses()
    print(f"answers by status: {dict(statuses)}; scale events: {scaled_events(api, namespace)}")
    print("timeline (answers so far): " + "; ".join(timeline))
    # Every accepted request was answered, with the speech in it; 429s were refused at once.
    assert set(statuses) <= {200, 429}, [a for a in load.answers if a.status not in (200, 429)]
    assert statuses[200] >= REQUESTS // 2
    assert all("americans" in a.text.lower() for a in load.answers if a.status == 200)

    # One event per scale, the autoscaler's: the reconcile that follows each scale says nothing.
    events = await one_event_per_scale(plane, api, namespace)
    assert len(events) >= 3, events
    assert any(e.startswith("scale up") for e in events)
    assert any(e.startswith("scale down") for e in events)

    # The ReplicaSet removed the pods the operator priced lowest.
    assert len(removed) == 2, removed
    survivor_cost = cost(survivor["metadata"].get("annotations") or {})
    assert all(DELETION_COST in r.annotations for r in removed), removed
    assert max(cost(r.annotations) for r in removed) <= survivor_cost, (removed, survivor_cost)

    vs = get(plane, namespace, "voiceservices", NAME)
    assert vs["spec"]["replicas"] == {"min": 1, "max": 3}  # the spec is never touched
    assert vs["status"]["autoscaler"]["lastScaleTime"]


def replica_owners(plane: ControlPlane, namespace: str, name: str) -> set[tuple[str, str, str]]:
    """(manager, operation, subresource) of every managedFields entry owning spec.replicas."""
    deployment = get(plane, namespace, "deployments", name)
    return {
        (entry["manager"], entry["operation"], entry.get("subresource", ""))
        for entry in deployment["metadata"].get("managedFields") or []
        if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
    }


def floor_around_now(min_replicas: int) -> dict[str, Any]:
    """A schedule window from an hour ago to an hour ahead (UTC), whatever the time."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=1)
    return {
        "start": f"{start.minute} {start.hour} * * *",
        "end": f"{end.minute} {end.hour} * * *",
        "minReplicas": min_replicas,
    }


def with_env(body: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    """The same VoiceService with one more runtime env var: a change the operator applies to
    the Deployment's pod template."""
    changed = copy.deepcopy(body)
    changed["spec"].setdefault("runtime", {}).setdefault("env", []).append(
        {"name": name, "value": value}
    )
    return changed


def template_env(api: httpx.Client, namespace: str, name: str) -> dict[str, str]:
    deployment = read(api, f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def scale_writes(
    plane: ControlPlane, namespace: str, *, after: str | None = None
) -> list[dict[str, Any]]:
    """The operator's requests to write a scale subresource in `namespace` (refused ones too)."""
    return [
        event
        for event in plane.writes_by(OPERATOR.name, after=after)
        if event.get("objectRef", {}).get("subresource") == "scale"
        and event["objectRef"].get("namespace") == namespace
    ]


async def test_the_autoscaler_and_the_reconcile_do_not_fight_over_the_count(
    control_plane: ControlPlane, namespace: str, api: httpx.Client, operator: RunningOperator
) -> None:
    plane = control_plane
    autoscaling = {
        "mode": "builtin",
        "schedule": [floor_around_now(2)],
        "metrics": {"pollIntervalSeconds": 1},
    }
    body = voiceservice(namespace, replicas={"min": 1, "max": 3}, autoscaling=autoscaling)
    apply(plane, body)
    # No pod reports metrics (kwok's), so only the scheduled floor moves the count: 1 -> 2.
    await eventually(lambda: replicas(api, namespace, "stt") == 2, within=60, what="floor of 2")
    assert replica_owners(plane, namespace, "stt") == {("voicefleet-autoscaler", "Apply", "scale")}

    after = now_rfc3339()
    apply(plane, with_env(body, "EXAMPLE_SETTING", "on"))
    await eventually(
        lambda: "EXAMPLE_SETTING" in template_env(api, namespace, "stt"),
        within=60,
        what="the operator applies the changed Deployment",
    )
    await asyncio.sleep(3)  # a few autoscaler rounds: time for a fight to show
    assert replicas(api, namespace, "stt") == 2
    assert replica_owners(plane, namespace, "stt") == {("voicefleet-autoscaler", "Apply", "scale")}
    assert scale_writes(plane, namespace, after=after) == [], (
        "the autoscaler had to put its count back"
    )

    # Someone scales by hand below the floor: in builtin mode the autoscaler takes the count
    # back, and says from whom.
    plane.kubectl("scale", "deployment", "stt", "-n", namespace, "--replicas=1")
    await eventually(lambda: replicas(api, namespace, "stt") == 2, within=30, what="taken back")
    assert replica_owners(plane, namespace, "stt") == {("voicefleet-autoscaler", "Apply", "scale")}
    warnings = [
        e["message"]
        for e in read(api, f"/api/v1/namespaces/{namespace}/events")["items"]
        if e.get("reason") == "FieldConflict"
    ]
    assert any("spec.replicas back from kubectl" in w for w in warnings), warnings
    events = await one_event_per_scale(plane, api, namespace)
    assert len(events) == 2, "the floor, then the count taken back"


async def test_a_count_set_by_an_hpa_is_never_clobbered(
    control_plane: ControlPlane, namespace: str, api: httpx.Client, operator: RunningOperator
) -> None:
    plane = control_plane
    body = voiceservice(namespace, replicas={"min": 1, "max": 4}, autoscaling={"mode": "hpa"})
    apply(plane, body)
    await eventually(
        lambda: (
            api.get(
                f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/stt"
            ).is_success
        ),
        within=60,
        what="the HPA",
    )
    # What an HPA (or KEDA's) does: write the count through the Deployment's scale subresource.
    plane.kubectl("scale", "deployment", "stt", "-n", namespace, "--replicas=3")
    after = now_rfc3339()
    apply(plane, with_env(body, "EXAMPLE_SETTING", "on"))
    await eventually(
        lambda: "EXAMPLE_SETTING" in template_env(api, namespace, "stt"),
        within=60,
        what="the operator applies the changed Deployment",
    )
    await asyncio.sleep(3)  # a few autoscaler rounds
    assert replicas(api, namespace, "stt") == 3
    owners = replica_owners(plane, namespace, "stt")
    assert len(owners) == 1, owners
    ((manager, operation, subresource),) = owners
    assert (manager.startswith("kubectl"), operation, subresource) == (True, "Update", "scale")
    assert scale_writes(plane, namespace, after=after) == []

    # A builtin decision made on a stale view (the mode changed since) leaves the count alone:
    # the conflict makes the autoscaler read the stored VoiceService first.
    stored = get(plane, namespace, "voiceservices", "stt")
    stale = parse_voiceservice(
        {**stored, "spec": {**stored["spec"], "autoscaling": {"mode": "builtin"}}}
    )
    connection = load_connection(plane.kubeconfig(OPERATOR, namespace=namespace))
    async with KubeApi(connection, request_timeout=30, connect_timeout=10) as kube:
        assert not await scale_deployment(kube, stale, 1, kopf.Body(stored))
    assert replicas(api, namespace, "stt") == 3
    assert replica_owners(plane, namespace, "stt") == owners


async def test_a_scale_during_a_reconcile_is_reported_once_by_whoever_scaled(
    control_plane: ControlPlane,
    namespace: str,
    operator_settings: OperatorSettings,
    api: httpx.Client,
    tmp_path: Path,
) -> None:
    """A reconcile that applies the Deployment while an autoscaler scales it posts no Scaled
    event of its own (the autoscaler reports its scale); a count the operator sets itself gets
    exactly one. The scale is made to land inside the reconcile, between its read of the
    Deployment and its apply, by a proxy in front of the API server."""
    plane = control_plane
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/stt"
    armed: list[bool] = []
    scaled_meanwhile: list[bool] = []

    async def scale_first(request: web.Request) -> None:
        """Before the operator's next apply of the Deployment reaches the server, scale the
        Deployment as an HPA does: through the scale subresource, as another field manager."""
        if not (
            armed
            and request.method == "PATCH"
            and request.path == deployment
            and request.query.get("fieldManager") == FIELD_MANAGER
        ):
            return
        armed.clear()
        await asyncio.to_thread(
            plane.kubectl, "scale", "deployment", "stt", "-n", namespace, "--replicas=3"
        )
        scaled_meanwhile.append(True)

    proxy = FaultProxy(plane.server, plane.ca_path, rate=0, before_forward=scale_first)
    await proxy.start()
    kubeconfig = kubeconfig_through(plane, proxy, namespace, tmp_path)
    running = RunningOperator(operator_settings.model_copy(update={"kubeconfig": kubeconfig}))
    try:
        await running.start()
        body = voiceservice(namespace, replicas={"min": 1, "max": 4}, autoscaling={"mode": "hpa"})
        apply(plane, body)
        await eventually(lambda: ready(plane, namespace), within=90, what="Ready")
        armed.append(True)
        apply(plane, with_env(body, "EXAMPLE_SETTING", "on"))
        await eventually(
            lambda: "EXAMPLE_SETTING" in template_env(api, namespace, "stt"),
            within=60,
            what="the operator applies the changed Deployment",
        )
        assert scaled_meanwhile, "the Deployment was scaled while the reconcile applied it"
        assert replicas(api, namespace, "stt") == 3
        await asyncio.sleep(3)  # that reconcile's events are posted by now
        assert scaled_events(api, namespace) == []

        # The operator sets the count itself: one event, its own.
        apply(plane, voiceservice(namespace, replicas={"fixed": 2}, autoscaling={"mode": "off"}))
        await eventually(lambda: scaled_events(api, namespace), within=60, what="a Scaled event")
        await asyncio.sleep(3)  # a second one would be posted by now
        assert replicas(api, namespace, "stt") == 2
        assert scaled_events(api, namespace) == [
            "Deployment stt: replicas 3 -> 2, as the spec sets them"
        ]
    finally:
        await running.stop()
        await proxy.stop()
