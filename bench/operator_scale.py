"""The operator with 1,000 VoiceServices: on the real control plane, and on kmock's emulator.

    .venv/bin/python -m bench.operator_scale [--count 1000] [--idle 300] [--skip-emulator]

Real: the cluster the tests use (tests/cluster/controlplane.py: etcd, kube-apiserver with an
audit log, controller manager, scheduler, kwok nodes), here with client rate limits raised in
the controller manager and scheduler, as a cluster sized for 1,000 Deployments would. The
emulator: tests/operator/harness, the API server the operator tests ran against before.

In both, the operator runs as its own process (`voicefleet operator -n bench --standalone`,
default settings: a resync every 60 s), so /proc gives its memory and CPU time. The bench
applies COUNT VoiceServices (one fixed replica, autoscaling off: the builtin autoscaler's
timers would scrape kwok's pod addresses, which answer nothing) and reports:
- the time from the first apply until every VoiceService reports phase Ready, and each one's;
- the operator's resident memory (now and peak) and CPU seconds;
- API requests per VoiceService up to Ready (the real server's audit log; the emulator's
  journal), by verb;
- the operator's writes (and reads) in IDLE seconds after that, with nothing changing.
Goal on 2 cores: every one Ready within 60 s, at most 300 MB, no idle write.

    .venv/bin/python -m bench.operator_scale --floor-only [--count 1000] [--profile 40] [--gogc 100]

runs only the control plane alone (the floor above) and shows where its time goes: each part's
CPU seconds and peak memory, the API server's request, etcd and flow-control (APF) latencies
(its /metrics over the run), etcd's disk figures, the ClusterIP allocations (from the audit
log: how long each IPAddress creation took and whether two ever ran at once); with --profile S,
S-second CPU profiles of the API server and the controller manager and the API server's
blocking profile, summarised by `go tool pprof`. --gogc: the control plane's GOGC for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kmock
import yaml

from tests.cluster import controlplane
from tests.cluster.controlplane import WRITE_VERBS, ControlPlane, FakeNode, User
from tests.cluster.operatorprocess import OperatorProcess
from tests.loopback import free_port
from tests.operator.harness import ApiServer, ScalePaths, register_cluster_resources
from tests.operator.harness.crd import CrdSchema
from voicefleet_operator.builders.children import build_children
from voicefleet_operator.crd.generate import build_crd
from voicefleet_operator.crd.models import parse_voiceservice
from voicefleet_operator.k8s.resources import DEPLOYMENTS, resource_of

NAMESPACE = "bench"
FLOOR_NAMESPACE = "bench-without-operator"
OPERATOR = User("voicefleet-bench-operator", ("system:masters",))
BENCH_AGENT = "voicefleet-bench"
VS_PATH = f"/apis/voicefleet.io/v1alpha1/namespaces/{NAMESPACE}/voiceservices"
NODES = tuple(
    FakeNode(f"cpu-{i}", cpu="64", memory="4000Gi", extended={"pods": "600"}) for i in range(4)
)
"""Room for 2,400 pods of 1.25 GiB each: the operator's and the floor's."""
EMULATOR_LIMIT = 600.0
"""The emulator answers each request after scanning every request it recorded (kmock keeps
them all for assertions), so it slows down as a run goes on: it gets a fixed time."""
RATE_LIMITS = ("--kube-api-qps=300", "--kube-api-burst=500")
"""Kubernetes' defaults (20/s in the controller manager, 50/s in the scheduler) would take
minutes to create 1,000 ReplicaSets and bind 1,000 pods, whatever the operator does."""


def voiceservice(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceService",
        "metadata": {"name": f"stt-{index:04d}", "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "tiny.en"},
            "replicas": {"fixed": 1},
            "autoscaling": {"mode": "off"},
        },
    }


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Figures:
    name: str
    count: int
    ready_s: float | None = None
    per_vs_ready_s: list[float] = field(default_factory=list)
    cpu_to_ready_s: float = 0.0
    cpu_idle_s: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    requests_to_ready: collections.Counter[str] = field(default_factory=collections.Counter)
    idle_s: float = 0.0
    idle_writes: list[str] = field(default_factory=list)
    idle_reads: int = 0
    control_plane_cpu_s: dict[str, float] = field(default_factory=dict)
    """Each control-plane part's CPU seconds up to Ready (the real cluster only)."""
    load: tuple[float, float] = (0.0, 0.0)
    """The machine's 1-minute load average at the first apply and at Ready."""

    def lines(self) -> Iterator[str]:
        total = sum(self.requests_to_ready.values())
        verbs = ", ".join(f"{v} {n}" for v, n in self.requests_to_ready.most_common())
        ready = "never" if self.ready_s is None else f"{self.ready_s:.1f} s"
        yield f"{self.name}:"
        yield f"  all {self.count} Ready after     {ready}"
        if self.per_vs_ready_s:
            times = sorted(self.per_vs_ready_s)
            median, p99 = times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
            yield f"  one VoiceService Ready after  median {median:.1f} s, p99 {p99:.1f} s"
        yield f"  operator CPU to Ready         {self.cpu_to_ready_s:.1f} s"
        if self.control_plane_cpu_s:
            yield f"  control plane CPU to Ready    {cpu_line(self.control_plane_cpu_s)}"
        start, end = self.load
        yield f"  load average (1 min)          {start:.1f} at the start, {end:.1f} at Ready"
        yield f"  operator RSS                  {self.rss_mb:.0f} MB (peak {self.peak_rss_mb:.0f})"
        yield f"  API requests per VoiceService {total / self.count:.1f} ({verbs})"
        yield (
            f"  in {self.idle_s:.0f} idle s: {len(self.idle_writes)} writes, "
            f"{self.idle_reads} reads ({self.idle_reads / max(self.idle_s, 1):.1f}/s), "
            f"CPU {self.cpu_idle_s:.1f} s"
        )
        for write in collections.Counter(self.idle_writes).most_common(5):
            yield f"    write: {write[1]} x {write[0]}"


def cpu_line(by_part: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in by_part.items())
    return f"{sum(by_part.values()):.1f} s ({parts})"


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def operator_args() -> list[str]:
    return ["-n", NAMESPACE, "--standalone"]


async def post_all(client: httpx.AsyncClient, bodies: Iterable[dict[str, Any]]) -> None:
    """Create every VoiceService on the emulator, 16 at a time (its apply is only a merge)."""
    gate = asyncio.Semaphore(16)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            (await client.post(VS_PATH, json=body)).raise_for_status()

    await asyncio.gather(*(one(body) for body in bodies))


def phase_of(obj: dict[str, Any]) -> str | None:
    return ((obj.get("status") or {}).get("phase")) or None


def voiceservice_ready(obj: dict[str, Any]) -> bool:
    return phase_of(obj) == "Ready"


def deployment_ready(obj: dict[str, Any]) -> bool:
    return int((obj.get("status") or {}).get("readyReplicas") or 0) >= 1


class ReadyTimes:
    """Each object's first moment of being ready, since `started`, until `count` are."""

    def __init__(self, count: int, ready: Callable[[dict[str, Any]], bool]) -> None:
        self.count = count
        self.ready = ready
        self.first: dict[str, float] = {}

    def see(self, obj: dict[str, Any], started: float) -> bool:
        name = obj["metadata"]["name"]
        if name not in self.first and self.ready(obj):
            self.first[name] = time.monotonic() - started
        return len(self.first) >= self.count

    def result(self, done: bool) -> tuple[float | None, list[float]]:
        return (max(self.first.values()) if done else None), list(self.first.values())


async def watch_ready(
    client: httpx.AsyncClient,
    path: str,
    times: ReadyTimes,
    *,
    resource_version: str,
    started: float,
    limit: float,
) -> tuple[float | None, list[float]]:
    """Follow a watch of `path` from `resource_version` (taken before the first apply) until
    `times` has every object: a watch costs the API server far less than listing 1,000."""
    version = resource_version
    try:
        async with asyncio.timeout(limit - (time.monotonic() - started)):
            while True:
                params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "60"}
                async with client.stream("GET", path, params=params) as response:
                    async for line in response.aiter_lines():
                        event = json.loads(line)
                        obj = event["object"]
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED") and times.see(obj, started):
                            return times.result(True)
    except TimeoutError:
        return times.result(False)


async def list_version(client: httpx.AsyncClient, path: str) -> str:
    listing = (await client.get(path, params={"limit": "1"})).raise_for_status().json()
    return str(listing["metadata"]["resourceVersion"])


async def poll_ready(
    snapshot: Callable[[], Iterable[dict[str, Any]]],
    times: ReadyTimes,
    *,
    started: float,
    limit: float,
) -> tuple[float | None, list[float]]:
    """The emulator has no watch to spare for this: read its objects in-process each second."""
    while time.monotonic() - started < limit:
        if any([times.see(obj, started) for obj in snapshot()]):
            return times.result(True)
        await asyncio.sleep(1.0)
    return times.result(False)


def counted_requests(events: Iterable[tuple[str, str]]) -> collections.Counter[str]:
    return collections.Counter(verb for verb, _ in events)


# ----- the real control plane ------------------------------------------------------------------


def audited(plane: ControlPlane, username: str, after: str, before: str) -> list[dict[str, Any]]:
    return [
        event
        for event in plane.audit_events()
        if event.get("user", {}).get("username") == username
        and after < event.get("requestReceivedTimestamp", "") <= before
    ]


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{event.get('verb')} {ref.get('resource')}{sub}"


def bench_client(plane: ControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=plane.server,
        headers={"Authorization": f"Bearer {plane.users[0].token}", "User-Agent": BENCH_AGENT},
        verify=str(plane.ca_path),
        timeout=httpx.Timeout(60, read=90),  # watches end after 60 s
    )


def unowned_children(index: int) -> list[dict[str, Any]]:
    """What the operator builds for VoiceService `index`, without the owner (the garbage
    collector would delete children of an owner that does not exist)."""
    body = voiceservice(index)
    body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    children = build_children(
        parse_voiceservice(body), servicemonitor_api=False, replicas=1, placement_index=0
    )
    for child in children:
        child["metadata"].pop("ownerReferences", None)
        child["metadata"]["namespace"] = FLOOR_NAMESPACE
    return children


async def apply_objects(client: httpx.AsyncClient, objects: Iterable[dict[str, Any]]) -> None:
    """Server-side apply as a person or a GitOps tool would, 16 at a time."""
    gate = asyncio.Semaphore(16)

    async def one(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        path = resource_of(obj).path(meta["namespace"], meta["name"])
        async with gate:
            response = await client.patch(
                path,
                params={"fieldManager": "bench", "force": "true"},
                content=json.dumps(obj),
                headers={"Content-Type": "application/apply-patch+yaml"},
            )
            response.raise_for_status()

    await asyncio.gather(*(one(obj) for obj in objects))


@dataclass
class Floor:
    """The control plane alone, measured in the same run."""

    ready_s: float | None
    control_plane_cpu_s: dict[str, float]
    load: tuple[float, float]
    peak_memory_mb: dict[str, float]
    """Each control-plane part's peak resident memory over the whole run (both phases)."""


async def control_plane_floor(plane: ControlPlane, count: int) -> Floor:
    """Without the operator: the same Deployments, Services and PDBs applied directly, until
    every Deployment has its pod ready. What the control plane alone needs, whatever the
    operator does (measured after the operator's run, on the same cluster)."""
    plane.kubectl("create", "namespace", FLOOR_NAMESPACE)
    plane.wait_for_service_account(FLOOR_NAMESPACE)
    path = DEPLOYMENTS.path(FLOOR_NAMESPACE)
    async with bench_client(plane) as client:
        version = await list_version(client, path)
        cpu_before, load_before = plane.cpu_seconds(), os.getloadavg()[0]
        started = time.monotonic()
        waiting = asyncio.create_task(
            watch_ready(
                client,
                path,
                ReadyTimes(count, deployment_ready),
                resource_version=version,
                started=started,
                limit=900,
            )
        )
        await apply_objects(client, (c for i in range(count) for c in unowned_children(i)))
        ready_s, _ = await waiting
    spent = cpu_spent(cpu_before, plane.cpu_seconds())
    return Floor(ready_s, spent, (load_before, os.getloadavg()[0]), plane.peak_memory_mb())


async def run_real(count: int, idle: float, workdir: Path) -> tuple[Figures, Floor]:
    figures = Figures("real control plane (kube-apiserver 1.37, etcd, controllers, kwok)", count)
    plane = ControlPlane(
        workdir / "cluster",
        nodes=NODES,
        users=(OPERATOR,),
        extra_args={"kube-controller-manager": RATE_LIMITS, "kube-scheduler": RATE_LIMITS},
    )
    try:
        plane.start()
        plane.install_crd()
        plane.kubectl("create", "namespace", NAMESPACE)
        plane.wait_for_service_account(NAMESPACE)
        operator = OperatorProcess(
            plane.kubeconfig(OPERATOR, namespace=NAMESPACE),
            operator_args(),
            workdir / "operator-real.log",
        )
        operator.start()
        try:
            async with bench_client(plane) as client:
                version = await list_version(client, VS_PATH)
                await measure(
                    figures,
                    operator,
                    apply=lambda: apply_objects(client, (voiceservice(i) for i in range(count))),
                    wait_ready=lambda started: watch_ready(
                        client,
                        VS_PATH,
                        ReadyTimes(count, voiceservice_ready),
                        resource_version=version,
                        started=started,
                        limit=900,
                    ),
                    requests=lambda after, before: [
                        (e["verb"], describe(e))
                        for e in audited(plane, OPERATOR.name, after, before)
                    ],
                    idle=idle,
                    control_plane_cpu=plane.cpu_seconds,
                )
        finally:
            operator.stop()
            (workdir / "operator-real.tail").write_text(operator.log_tail(200))
        print("  the control plane alone (no operator) ...", flush=True)
        floor = await control_plane_floor(plane, count)
    finally:
        plane.stop()
    return figures, floor


# ----- kmock's emulator ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def emulator() -> AsyncIterator[ApiServer]:
    """The emulated API server of the operator tests, with the VoiceService CRD's schema."""
    schema = CrdSchema(build_crd())
    assert schema.scale is not None
    async with ApiServer() as server, kmock.Server(server):
        server.namespaces.add(NAMESPACE)
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


async def run_emulated(count: int, idle: float, workdir: Path) -> Figures:
    figures = Figures("kmock's emulator (tests/operator/harness)", count)
    async with emulator() as server:
        url = str(server.url).rstrip("/")
        kubeconfig = workdir / "kubeconfig-emulator"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulated", "cluster": {"server": url}}],
                    "users": [{"name": "operator", "user": {"token": "not-a-secret"}}],
                    "contexts": [
                        {
                            "name": "emulated",
                            "context": {
                                "cluster": "emulated",
                                "user": "operator",
                                "namespace": NAMESPACE,
                            },
                        }
                    ],
                    "current-context": "emulated",
                }
            )
        )
        operator = OperatorProcess(kubeconfig, operator_args(), workdir / "operator-emulated.log")
        await asyncio.to_thread(operator.start)
        marks: list[tuple[float, int]] = []

        def journal_between(after: str, before: str) -> list[tuple[str, str]]:
            # Journal positions stand in for times: `marks` maps each time asked for to one.
            del after, before
            start, end = marks[-2][1], marks[-1][1]
            return [
                (
                    r.verb or "?",
                    f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}",
                )
                for r in server.journal[start:end]
                if r.user_agent != BENCH_AGENT
            ]

        try:
            async with httpx.AsyncClient(
                base_url=url, headers={"User-Agent": BENCH_AGENT}, timeout=60
            ) as client:
                await measure(
                    figures,
                    operator,
                    apply=lambda: post_all(client, (voiceservice(i) for i in range(count))),
                    wait_ready=lambda started: poll_ready(
                        lambda: server.alive("voicefleet.io/v1alpha1/voiceservices").values(),
                        ReadyTimes(count, voiceservice_ready),
                        started=started,
                        limit=EMULATOR_LIMIT,
                    ),
                    requests=journal_between,
                    idle=idle,
                    mark=lambda: marks.append((time.monotonic(), len(server.journal))),
                )
        finally:
            operator.stop()
            (workdir / "operator-emulated.tail").write_text(operator.log_tail(200))
    return figures


# ----- both --------------------------------------------------------------------------------------


async def measure(
    figures: Figures,
    operator: OperatorProcess,
    *,
    apply: Callable[[], Awaitable[None]],
    wait_ready: Callable[[float], Coroutine[Any, Any, tuple[float | None, list[float]]]],
    requests: Callable[[str, str], list[tuple[str, str]]],
    idle: float,
    mark: Callable[[], None] = lambda: None,
    control_plane_cpu: Callable[[], dict[str, float]] = dict,
) -> None:
    """Apply, wait for Ready, then stay idle; fill `figures`."""
    cpu_before = operator.cpu_seconds()
    plane_before, load_before = control_plane_cpu(), os.getloadavg()[0]
    began_at = now_rfc3339()
    mark()
    started = time.monotonic()
    waiting = asyncio.create_task(wait_ready(started))
    await apply()
    applied = time.monotonic() - started
    print(f"  {figures.name}: applied {figures.count} in {applied:.1f} s", flush=True)
    figures.ready_s, figures.per_vs_ready_s = await waiting
    ready_at = now_rfc3339()
    mark()
    figures.cpu_to_ready_s = operator.cpu_seconds() - cpu_before
    figures.control_plane_cpu_s = cpu_spent(plane_before, control_plane_cpu())
    figures.load = (load_before, os.getloadavg()[0])
    figures.requests_to_ready = counted_requests(requests(began_at, ready_at))
    print(f"  all Ready after {figures.ready_s} s; now {idle:.0f} s idle", flush=True)
    # What follows Ready (the last status writes and events) lands before the idle window.
    await asyncio.sleep(5)
    quiet_from = now_rfc3339()
    mark()
    cpu_quiet = operator.cpu_seconds()
    idle_started = time.monotonic()
    await asyncio.sleep(idle)
    figures.idle_s = time.monotonic() - idle_started
    await asyncio.sleep(1)  # the audit log is written at each request's end
    mark()
    quiet = requests(quiet_from, now_rfc3339())
    figures.idle_writes = [what for verb, what in quiet if verb in WRITE_VERBS]
    figures.idle_reads = len(quiet) - len(figures.idle_writes)
    figures.cpu_idle_s = operator.cpu_seconds() - cpu_quiet
    figures.rss_mb, figures.peak_rss_mb = operator.memory_mb()


def ratio(real: float | None, emulated: float | None) -> str:
    if real is None or emulated is None or emulated == 0:
        return "-"
    return f"{real / emulated:.2f}x"


def per_vs(figures: Figures, value: float | None) -> float | None:
    return None if value is None else value / figures.count


def report(real: Figures, floor: Floor, emulated: Figures | None, args: argparse.Namespace) -> str:
    lines = [
        f"bench/operator_scale.py --count {args.count} --idle {args.idle:.0f} "
        + (
            "--skip-emulator"
            if args.skip_emulator
            else f"--emulator-count {args.emulator_count} --emulator-idle {args.emulator_idle:.0f}"
        ),
        f"run at {now_rfc3339()}; 2 shared cores; goal: all Ready <= 60 s, RSS <= 300 MB, "
        "0 idle writes",
        "",
        *real.lines(),
        f"  the control plane alone: the same {args.count} Deployments, Services and PDBs "
        "applied directly, every pod ready after "
        f"{'never' if floor.ready_s is None else f'{floor.ready_s:.1f} s'}"
        f" (operator's time / this: {ratio(real.ready_s, floor.ready_s)})",
        f"    its control plane CPU {cpu_line(floor.control_plane_cpu_s)}; "
        f"load average {floor.load[0]:.1f} at the start, {floor.load[1]:.1f} at the end",
        "  control plane peak memory (MB): "
        + ", ".join(f"{name} {mb:.0f}" for name, mb in floor.peak_memory_mb.items()),
        "",
    ]
    if emulated is not None:
        lines.extend(emulated.lines())
        lines.append("")
        real_requests = sum(real.requests_to_ready.values())
        emulated_requests = sum(emulated.requests_to_ready.values())
        lines.append("real / emulator, per VoiceService:")
        lines.append(
            "  time to all Ready      "
            + ratio(per_vs(real, real.ready_s), per_vs(emulated, emulated.ready_s))
        )
        lines.append(
            "  operator CPU to Ready  "
            + ratio(per_vs(real, real.cpu_to_ready_s), per_vs(emulated, emulated.cpu_to_ready_s))
        )
        lines.append(
            "  requests to Ready      "
            + ratio(per_vs(real, real_requests), per_vs(emulated, emulated_requests))
        )
    return "\n".join(lines)


# ----- the control plane alone, with where its time goes (--floor-only) ----------------------


GO = shutil.which("go") or "/usr/local/go/bin/go"
LATENCIES = (
    ("apiserver_request_duration_seconds", ("verb", "resource")),
    ("etcd_request_duration_seconds", ("operation", "type")),
    ("apiserver_flowcontrol_request_wait_duration_seconds", ("priority_level", "execute")),
)
ETCD_DISK = re.compile(
    r"^etcd_disk_(wal_fsync|wal_write|backend_commit)_duration_seconds_(sum|count) "
)


def sums_and_counts(
    text: str, name: str, keys: tuple[str, ...]
) -> dict[tuple[str, ...], list[float]]:
    """{label values: [sum, count]} of one Prometheus histogram."""
    found: dict[tuple[str, ...], list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for line in text.splitlines():
        match = re.match(rf"{name}_(sum|count)\{{(.*)\}} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            key = tuple(labels.get(k, "") for k in keys)
            found[key][0 if match.group(1) == "sum" else 1] += float(match.group(3))
    return found


def latency_lines(before: str, after: str, top: int = 12) -> Iterator[str]:
    for name, keys in LATENCIES:
        start, end = sums_and_counts(before, name, keys), sums_and_counts(after, name, keys)
        rows = []
        for key, (total, count) in end.items():
            spent = total - start.get(key, [0.0, 0.0])[0]
            calls = count - start.get(key, [0.0, 0.0])[1]
            if calls > 0:
                rows.append((spent, calls, "/".join(key)))
        yield f"  {name} (by total time; mean per request)"
        for spent, calls, what in sorted(rows, reverse=True)[:top]:
            yield f"    {what:48s} n={calls:6.0f} mean {1000 * spent / calls:7.1f} ms"


def moment(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def allocation_lines(events: Iterable[dict[str, Any]], after: str) -> Iterator[str]:
    """The IPAddress objects the API server creates for ClusterIPs, and the Services' applies."""
    spans: list[tuple[float, float]] = []
    applies: list[float] = []
    for event in events:
        ref = event.get("objectRef") or {}
        if event.get("requestReceivedTimestamp", "") <= after:
            continue
        start, end = moment(event["requestReceivedTimestamp"]), moment(event["stageTimestamp"])
        if ref.get("resource") == "ipaddresses" and event.get("verb") == "create":
            spans.append((start, end))
        if ref.get("resource") == "services" and event.get("verb") == "patch":
            applies.append(end - start)
    if not spans:
        return
    spans.sort()
    busy = sum(end - start for start, end in spans)
    overlapping = sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)
    window = spans[-1][1] - spans[0][0]
    applies.sort()
    mean_ms, share = 1000 * busy / len(spans), 100 * busy / window
    yield (
        f"  ClusterIP allocations: {len(spans)} IPAddress creations, {mean_ms:.1f} ms each on "
        f"average, {overlapping} of them overlapping the one before; together {busy:.1f} s of "
        f"the {window:.1f} s from the first to the last ({share:.0f}%)"
    )
    yield (
        f"  a Service's apply: median {1000 * applies[len(applies) // 2]:.0f} ms, "
        f"p90 {1000 * applies[len(applies) * 9 // 10]:.0f} ms ({len(applies)} applies)"
    )


def pprof_top(path: Path, *, cumulative: bool, focus: str | None = None, lines: int = 25) -> str:
    command = [GO, "tool", "pprof", "-top", f"-nodecount={lines}"]
    if cumulative:
        command.append("-cum")
    if focus:
        command.append(f"-focus={focus}")
    return pprof(command, path)


def pprof(command: list[str], path: Path) -> str:
    done = subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    return done.stdout if done.returncode == 0 else done.stderr


class Profiles:
    """CPU profiles of the API server and the controller manager, taken during the applies."""

    def __init__(self, plane: ControlPlane, manager_port: int, seconds: int) -> None:
        self.plane, self.manager_port, self.seconds = plane, manager_port, seconds
        self.paths = {
            "kube-apiserver": plane.workdir / "apiserver-cpu.pprof",
            "kube-controller-manager": plane.workdir / "controller-manager-cpu.pprof",
        }
        self.threads = [
            threading.Thread(target=self._apiserver),
            threading.Thread(target=self._controller_manager),
        ]

    def _apiserver(self) -> None:
        with self.plane.client() as client:
            answer = client.get(
                "/debug/pprof/profile",
                params={"seconds": str(self.seconds)},
                timeout=self.seconds + 60,
            )
        self.paths["kube-apiserver"].write_bytes(answer.content)

    def _controller_manager(self) -> None:
        # Its serving certificate is self-signed, and it is only this bench's own process.
        answer = httpx.get(
            f"https://127.0.0.1:{self.manager_port}/debug/pprof/profile",
            params={"seconds": str(self.seconds)},
            timeout=self.seconds + 60,
            verify=False,  # noqa: S501
        )
        self.paths["kube-controller-manager"].write_bytes(answer.content)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def floor_evidence(args: argparse.Namespace) -> str:
    """--floor-only: the control plane alone, with where its time goes (see the docstring)."""
    workdir = Path(tempfile.mkdtemp(prefix="voicefleet-control-plane-floor-"))
    gogc = controlplane.GO_GC_PERCENT if args.gogc is None else str(args.gogc)
    manager_port = free_port()
    manager_args = [*RATE_LIMITS]
    apiserver_args: list[str] = []
    if args.profile:
        manager_args += [
            f"--secure-port={manager_port}",
            "--authorization-always-allow-paths=/healthz,/debug/pprof/profile",
        ]
        apiserver_args.append("--contention-profiling=true")
    plane = ControlPlane(
        workdir / "cluster",
        nodes=NODES,
        extra_args={
            "kube-controller-manager": manager_args,
            "kube-scheduler": RATE_LIMITS,
            "kube-apiserver": apiserver_args,
        },
        go_gc_percent=gogc,
    )
    lines = [
        f"bench/operator_scale.py --floor-only --count {args.count} --profile {args.profile}"
        + (f" --gogc {args.gogc}" if args.gogc is not None else ""),
        f"GOGC {gogc}; work folder {workdir}",
    ]
    try:
        plane.start()
        with plane.client() as client:
            metrics_before = client.get("/metrics").text
        started_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        profiles = Profiles(plane, manager_port, args.profile) if args.profile else None
        if profiles:
            profiles.start()
        started = time.monotonic()
        floor = asyncio.run(control_plane_floor(plane, args.count))
        wall = time.monotonic() - started
        if profiles:
            profiles.join()
        with plane.client() as client:
            metrics_after = client.get("/metrics").text
            if args.profile:
                blocking = plane.workdir / "apiserver-block.pprof"
                blocking.write_bytes(client.get("/debug/pprof/block").content)
        etcd_metrics = httpx.get(f"{plane.etcd_url}/metrics", timeout=30).text
        ready = "never" if floor.ready_s is None else f"{floor.ready_s:.1f} s"
        cpu = floor.control_plane_cpu_s
        lines += [
            f"every pod ready after {ready} (the whole run {wall:.1f} s); load average "
            f"{floor.load[0]:.1f} at the start, {floor.load[1]:.1f} at the end",
            f"  control plane CPU {sum(cpu.values()):.1f} s: "
            + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()),
            "  peak memory (MB): "
            + ", ".join(f"{name} {mb:.0f}" for name, mb in floor.peak_memory_mb.items()),
            *latency_lines(metrics_before, metrics_after),
            "  etcd's disk: "
            + ", ".join(line for line in etcd_metrics.splitlines() if ETCD_DISK.match(line)),
            *allocation_lines(plane.audit_events(), started_at),
        ]
        if args.profile:
            apiserver = plane.workdir / "apiserver-cpu.pprof"
            manager = plane.workdir / "controller-manager-cpu.pprof"
            lines += [
                "--- API server CPU, cumulative",
                pprof_top(apiserver, cumulative=True, lines=40),
                "--- API server CPU spent in garbage collection",
                pprof_top(apiserver, cumulative=True, focus="gcBgMarkWorker", lines=3),
                "--- controller manager CPU, cumulative",
                pprof_top(manager, cumulative=True, lines=40),
                "--- the ClusterIP allocator: its callers, and where it waited (blocking profile)",
                pprof(
                    [GO, "tool", "pprof", "-peek", "MetaAllocator..AllocateNextService$"],
                    plane.workdir / "apiserver-block.pprof",
                ),
            ]
    finally:
        plane.stop()
        shutil.rmtree(plane.workdir / "etcd", ignore_errors=True)
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="voicefleet-operator-scale-"))
    print(f"work folder (logs): {workdir}", flush=True)
    real, floor = await run_real(args.count, args.idle, workdir)
    emulated = None
    if not args.skip_emulator:
        emulated = await run_emulated(args.emulator_count, args.emulator_idle, workdir)
    return report(real, floor, emulated, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="VoiceServices to apply")
    parser.add_argument("--idle", type=float, default=300.0, help="idle seconds to count writes")
    parser.add_argument(
        "--emulator-count",
        type=int,
        default=100,
        help="VoiceServices on the emulator (it slows down with every request it records)",
    )
    parser.add_argument(
        "--emulator-idle", type=float, default=60.0, help="idle seconds on the emulator"
    )
    parser.add_argument("--skip-emulator", action="store_true", help="only the real cluster")
    parser.add_argument(
        "--floor-only",
        action="store_true",
        help="only the control plane alone, with its metrics, disk figures and allocations",
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="--floor-only: seconds of CPU profiles"
    )
    parser.add_argument("--gogc", type=int, help="--floor-only: the control plane's GOGC")
    parser.add_argument("--output", type=Path, help="also write the report here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the cluster and operator
    text = floor_evidence(args) if args.floor_only else asyncio.run(main_async(args))
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
