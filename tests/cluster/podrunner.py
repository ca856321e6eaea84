"""A test-only kubelet for one node of the test cluster: its pods run as local processes.

The runner registers its own node (kwok manages only nodes annotated `kwok.x-k8s.io/node`,
so it leaves this one and its pods alone) with a taint only the test's pods tolerate. For each
pod the scheduler binds there, it starts the container's command as a process, runs the
readiness probe against it and writes the pod's status (Running, podIP, Ready) the way a
kubelet does; on delete it runs the preStop sleep, sends SIGTERM, waits at most the pod's grace
period (then SIGKILL) and finalises the deletion.

Networking: every pod gets an address of its own from a /24 of local addresses (`ip route add
local`, through a TUN device the test process holds, see `pod_network`; root here, as on CI),
so each process binds its pod's IP and its containerPort like in a pod's network namespace. A
loopback address (127/8) would not do: the EndpointSlice controller publishes pod IPs, and the
API server refuses loopback endpoints.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import random
import secrets
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RUNNER_TAINT = {"key": "voicefleet.io/pod-runner", "value": "true", "effect": "NoSchedule"}
"""Keeps every other test's pods off the runner's node: only tolerating pods land there."""
SYNC_SECONDS = 0.25
PROBE_SECONDS = 0.5
"""Probes run every half second rather than at the probe's periodSeconds: the test's budget."""
RESTART_DELAY_SECONDS = 1.0


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
POD_NETWORK_PREFIX = "10.245"
POD_DEVICE_PREFIX = "vfpods"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@contextmanager
def pod_network(subnets: Sequence[int] | None = None) -> Iterator[Callable[[], str]]:
    """A /24 of 10.245.0.0/16 whose addresses are all local, each a pod's; yields a function
    that hands them out.

    The route goes through a TUN device that only this process holds open, so the kernel
    deletes the device, and the route with it, when the process ends, however it ends: a test
    session that is killed leaves nothing behind, and nothing needs cleaning at the next start.
    Each session picks its own /24 (from `subnets`, else at random), and the next one where a
    /24 is taken (by a concurrent run, or a route an older runner left on lo)."""
    try:
        tun = os.open("/dev/net/tun", os.O_RDWR)
    except OSError as error:
        raise RuntimeError(
            f"the pod runner needs a TUN device for its pod addresses (root, /dev/net/tun): {error}"
        ) from error
    try:
        device = POD_DEVICE_PREFIX + secrets.token_hex(4)  # 14 characters: IFNAMSIZ is 16
        request = struct.pack("16sH", device.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(tun, TUNSETIFF, request)
        up = _ip("link", "set", device, "up")
        if up.returncode != 0:
            raise RuntimeError(f"cannot bring {device} up: {up.stderr.strip()}")
        candidates = list(subnets) if subnets is not None else random.sample(range(1, 255), 16)
        for third in candidates:
            cidr = f"{POD_NETWORK_PREFIX}.{third}.0/24"
            added = _ip("route", "add", "local", cidr, "dev", device)
            if added.returncode == 0:
                break
        else:
            raise RuntimeError(
                f"no free /24 among {candidates} in {POD_NETWORK_PREFIX}.0.0/16: "
                f"{added.stderr.strip()}"
            )
        hosts = iter(range(2, 255))
        yield lambda: f"{POD_NETWORK_PREFIX}.{third}.{next(hosts)}"
    finally:
        os.close(tun)  # the device goes, and its route with it


@dataclass
class Deletion:
    """A pod the runner saw deleted, with the annotations (its deletion cost) it had then."""

    name: str
    annotations: dict[str, str]


@dataclass
class LocalPod:
    name: str
    namespace: str
    uid: str
    ip: str
    spec: dict[str, Any]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    ready: bool = False
    probe_failures: int = 0
    next_probe: float = 0.0
    next_start: float = 0.0
    deleting_since: float | None = None
    grace_seconds: float = 30.0
    signalled: bool = False
    written: dict[str, Any] = field(default_factory=dict)

    @property
    def container(self) -> dict[str, Any]:
        first: dict[str, Any] = self.spec["containers"][0]
        return first

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container.get("ports") or []:
            if port.get("name") == name_or_number:
                return int(port["containerPort"])
        return int(name_or_number)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class PodRunner:
    """Start with `start()`, stop with `stop()` (which kills what still runs)."""

    def __init__(
        self,
        client: Callable[[], httpx.Client],
        *,
        node: str,
        workdir: Path,
        next_ip: Callable[[], str],
        executables: Path,
    ) -> None:
        """`client` makes an API client with the rights of a kubelet; `executables` is the
        folder where a container's command is looked up (the image's PATH)."""
        self.node = node
        self.workdir = workdir
        self.next_ip = next_ip
        self.executables = executables
        self._client_factory = client
        self._pods: dict[str, LocalPod] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.deletions: list[Deletion] = []

    # ----- the node ---------------------------------------------------------------------------

    def node_manifest(self) -> dict[str, Any]:
        capacity = {"cpu": "8", "memory": "32Gi", "pods": "20"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}},
            "spec": {"taints": [RUNNER_TAINT]},
            "status": {"capacity": capacity, "allocatable": capacity},
        }

    def _register_node(self, api: httpx.Client) -> None:
        api.post("/api/v1/nodes", json=self.node_manifest()).raise_for_status()
        # Admission adds the not-ready taint to a new node; there is no node lifecycle
        # controller to lift it, so the runner does, as it reports the node Ready.
        api.patch(
            f"/api/v1/nodes/{self.node}",
            json={"spec": {"taints": [RUNNER_TAINT]}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()
        now = now_rfc3339()
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        api.patch(
            f"/api/v1/nodes/{self.node}/status",
            json={"status": {"conditions": [ready]}},
            headers={"Content-Type": "application/merge-patch+json"},
        ).raise_for_status()

    def start(self) -> None:
        with self._client_factory() as api:
            self._register_node(api)
        self._thread = threading.Thread(target=self._run, name="pod-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for pod in self._pods.values():
            if pod.alive():
                assert pod.process is not None
                pod.process.terminate()
        for pod in self._pods.values():
            if pod.process is not None:
                try:
                    pod.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pod.process.kill()
                    pod.process.wait()
        with self._client_factory() as api:
            api.delete(f"/api/v1/nodes/{self.node}")

    def check(self) -> None:
        """Raise what stopped the runner's loop, if anything did."""
        if self._error is not None:
            raise AssertionError("the pod runner failed") from self._error

    def log_tails(self, lines: int = 5) -> str:
        """The end of every container's output, for a failing test's message."""
        tails = []
        for pod in self._pods.values():
            log = pod.folder / "container.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            tails.append(f"--- {pod.name} ({pod.ip}) ---\n" + "\n".join(text))
        return "\n".join(tails)

    def running(self) -> dict[str, LocalPod]:
        return {name: pod for name, pod in self._pods.items() if pod.alive()}

    # ----- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._client_factory() as api:
                while not self._stop.is_set():
                    self._sync(api)
                    self._stop.wait(SYNC_SECONDS)
        except BaseException as error:  # reported by check() in the test
            self._error = error

    def _sync(self, api: httpx.Client) -> None:
        listing = api.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={self.node}"})
        listing.raise_for_status()
        seen = set()
        for item in listing.json()["items"]:
            uid = item["metadata"]["uid"]
            seen.add(uid)
            pod = self._pods.get(uid)
            if pod is None:
                pod = self._admit(item)
            if item["metadata"].get("deletionTimestamp") and pod.deleting_since is None:
                pod.deleting_since = time.monotonic()
                pod.grace_seconds = float(item["metadata"].get("deletionGracePeriodSeconds", 30))
                annotations = dict(item["metadata"].get("annotations") or {})
                self.deletions.append(Deletion(pod.name, annotations))
            self._step(api, pod)
        for uid, pod in list(self._pods.items()):
            if uid not in seen and pod.alive():
                assert pod.process is not None
                pod.process.kill()  # deleted with no grace at all (force delete)

    def _admit(self, item: dict[str, Any]) -> LocalPod:
        metadata = item["metadata"]
        folder = self.workdir / f"{metadata['namespace']}-{metadata['name']}"
        folder.mkdir(parents=True, exist_ok=True)
        pod = LocalPod(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata["uid"],
            ip=self.next_ip(),
            spec=item["spec"],
            folder=folder,
        )
        self._pods[pod.uid] = pod
        return pod

    def _step(self, api: httpx.Client, pod: LocalPod) -> None:
        if pod.deleting_since is not None:
            self._terminate(api, pod)
            return
        if not pod.alive() and time.monotonic() >= pod.next_start:
            if pod.process is not None:
                pod.restarts += 1  # restartPolicy Always: the kubelet starts it again
            self._spawn(pod)
        if pod.alive() and time.monotonic() >= pod.next_probe:
            pod.next_probe = time.monotonic() + PROBE_SECONDS
            self._probe(pod)
        if not pod.alive():
            pod.ready = False
            pod.next_start = max(pod.next_start, time.monotonic() + RESTART_DELAY_SECONDS)
        self._write_status(api, pod)

    # ----- the container ----------------------------------------------------------------------

    def _environment(self, pod: LocalPod) -> dict[str, str]:
        """The container's env, with its volume mounts moved into the pod's folder; the
        process binds its pod's address, as in the pod's own network namespace."""
        mounts = [m["mountPath"] for m in pod.container.get("volumeMounts") or []]
        env = {"PATH": f"{self.executables}{os.pathsep}{os.environ.get('PATH', '')}"}
        for entry in pod.container.get("env") or []:
            if "value" not in entry:
                raise ValueError(f"pod {pod.name}: env {entry['name']} is not a plain value")
            value = str(entry["value"])
            for mount in mounts:
                if value == mount or value.startswith(mount.rstrip("/") + "/"):
                    value = str(pod.folder / value.lstrip("/"))
            env[entry["name"]] = value
        env["VOICEFLEET_HOST"] = pod.ip
        return env

    def _spawn(self, pod: LocalPod) -> None:
        command = list(pod.container.get("command") or [])
        args = list(pod.container.get("args") or [])
        executable = self.executables / command[0]
        for mount in pod.container.get("volumeMounts") or []:  # each volume an empty folder
            (pod.folder / mount["mountPath"].lstrip("/")).mkdir(parents=True, exist_ok=True)
        log = (pod.folder / "container.log").open("ab")
        pod.process = subprocess.Popen(
            [str(executable), *command[1:], *args],
            env=self._environment(pod),
            cwd=pod.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        pod.started_at = now_rfc3339()
        pod.ready = False
        pod.probe_failures = 0

    def _probe(self, pod: LocalPod) -> None:
        probe = pod.container.get("readinessProbe") or {}
        http_get = probe.get("httpGet")
        if http_get is None:
            pod.ready = True
            return
        url = f"http://{pod.ip}:{pod.port(http_get['port'])}{http_get.get('path', '/')}"
        try:
            ok = httpx.get(url, timeout=float(probe.get("timeoutSeconds", 1))).is_success
        except httpx.TransportError:
            ok = False
        if ok:
            pod.ready, pod.probe_failures = True, 0
            return
        pod.probe_failures += 1
        if pod.probe_failures >= int(probe.get("failureThreshold", 3)):
            pod.ready = False

    def _terminate(self, api: httpx.Client, pod: LocalPod) -> None:
        """preStop sleep, SIGTERM, at most the grace period, then the final delete."""
        assert pod.deleting_since is not None
        elapsed = time.monotonic() - pod.deleting_since
        pre_stop = pod.container.get("lifecycle", {}).get("preStop", {})
        pre_stop_seconds = float(pre_stop.get("sleep", {}).get("seconds", 0))
        if pod.alive() and elapsed < pre_stop_seconds and elapsed < pod.grace_seconds:
            return
        if pod.alive() and not pod.signalled:
            assert pod.process is not None
            pod.process.send_signal(signal.SIGTERM)
            pod.signalled = True
        if pod.alive() and elapsed < pod.grace_seconds:
            return
        if pod.alive():
            assert pod.process is not None
            pod.process.kill()
            pod.process.wait()
        response = api.request(
            "DELETE",
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
            json={"gracePeriodSeconds": 0, "preconditions": {"uid": pod.uid}},
        )
        if response.status_code not in (200, 404, 409):
            response.raise_for_status()

    # ----- the status -------------------------------------------------------------------------

    def _write_status(self, api: httpx.Client, pod: LocalPod) -> None:
        status = self.status_of(pod)
        if status == pod.written:
            return
        response = api.patch(
            f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 404:
            return  # gone meanwhile
        response.raise_for_status()
        pod.written = status

    def status_of(self, pod: LocalPod) -> dict[str, Any]:
        """A kubelet's status of the pod: Running with its IP, Ready as the probe says."""
        running = pod.alive()
        ready = "True" if running and pod.ready else "False"
        container = pod.container
        state: dict[str, Any] = (
            {"running": {"startedAt": pod.started_at}}
            if running
            else {"waiting": {"reason": "CrashLoopBackOff" if pod.restarts else "Starting"}}
        )
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ]
        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
            "startTime": pod.written.get("startTime") or now_rfc3339(),
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": ready == "True",
                    "started": running,
                    "restartCount": pod.restarts,
                    "state": state,
                }
            ],
        }
