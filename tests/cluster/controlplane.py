"""A real Kubernetes control plane on 127.0.0.1, from the binaries scripts/build_kube.sh builds.

etcd; kube-apiserver with token authentication, RBAC authorisation and an audit log of every
request; kube-controller-manager (garbage collector, Deployments, ReplicaSets, EndpointSlices,
service accounts); kube-scheduler; kwok, which plays the kubelet of fake CPU and GPU nodes.
Each process logs to its own file in the work folder. Used by the cluster tests' fixture and by
`scripts/cluster.sh` for a person.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.cluster import procstat
from tests.loopback import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILT = REPO_ROOT / ".tools" / "kube" / "current"
KUBECTL = REPO_ROOT / ".tools" / "bin" / "kubectl"
CRD_PATH = REPO_ROOT / "crds" / "voicefleet.io_voiceservices.yaml"
SERVICE_CIDR = "10.96.0.0/16"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
GO_GC_PERCENT = "400"
"""GOGC of every control-plane process: the Go default (100) spent about a sixth of the API
server's CPU in garbage collection (a CPU profile with 1,000 VoiceServices); on 2 shared cores,
memory is the cheaper of the two (bench/results/operator_scale.txt)."""

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
"""One audit event per request at its end (ResponseComplete), without bodies: enough to count."""


@dataclass(frozen=True)
class User:
    """A static token user (kube-apiserver's --token-auth-file)."""

    name: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(24))

    def __repr__(self) -> str:  # the token stays out of test output
        return f"User({self.name!r}, groups={self.groups!r})"


ADMIN = User("kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = User("system:kube-controller-manager")
SCHEDULER = User("system:kube-scheduler")
KWOK = User("kwok", ("system:masters",))


@dataclass(frozen=True)
class FakeNode:
    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0
    gpu_product: str | None = None
    extended: dict[str, str] = field(default_factory=dict)
    """Other extended resources, e.g. a MIG profile {"nvidia.com/mig-1g.10gb": "7"}."""

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", **self.extended}
        labels = {"kubernetes.io/hostname": self.name, "type": "kwok"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        if self.gpu_product:
            labels["nvidia.com/gpu.product"] = self.gpu_product
        gpu_node = bool(self.gpus or self.gpu_product)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            # As GPU node pools are set up: only pods that tolerate the taint land there.
            "spec": {"taints": [GPU_TAINT] if gpu_node else []},
            "status": {"capacity": capacity, "allocatable": capacity},
        }


DEFAULT_NODES: tuple[FakeNode, ...] = (
    FakeNode("cpu-0"),
    FakeNode("cpu-1"),
    FakeNode("gpu-l4-0", gpus=1, gpu_product="NVIDIA-L4"),
    FakeNode("gpu-a10g-0", gpus=1, gpu_product="NVIDIA-A10G"),
    FakeNode("gpu-a100-0", gpus=2, gpu_product="NVIDIA-A100-SXM4-80GB"),
    FakeNode(
        "gpu-a100-mig-0",
        gpu_product="NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
        extended={"nvidia.com/mig-1g.10gb": "7"},
    ),
)
"""Fake nodes of every placement the VoiceService API names: CPU, L4, A10G, A100 and a MIG slice."""


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    """Start with `start()`, stop with `stop()`; everything lives under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *,
        apiserver: str = "kube-apiserver",
        controllers: bool = True,
        nodes: Sequence[FakeNode] = DEFAULT_NODES,
        users: Sequence[User] = (),
        extra_args: Mapping[str, Sequence[str]] | None = None,
        go_gc_percent: str = GO_GC_PERCENT,
    ) -> None:
        """`apiserver` names the binary (kube-apiserver-1.30 for the oldest version);
        `controllers=False` starts etcd and the API server only. `users` are extra token users.
        `extra_args` adds flags by component name (e.g. a benchmark's client rate limits);
        `go_gc_percent` is every part's GOGC."""
        self.workdir = workdir
        self.apiserver_binary = apiserver
        self.controllers = controllers
        self.nodes = tuple(nodes)
        self.users = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK, *users)
        self.extra_args = dict(extra_args or {})
        self.go_gc_percent = go_gc_percent
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.logs = workdir / "logs"
        self.audit_log = self.logs / "audit.log"
        self.etcd_url = ""
        """etcd's client URL (its /metrics too), once started."""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    # ----- files ------------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        """kube-apiserver's self-signed serving certificate, which is its own CA."""
        return self.workdir / "certs" / "apiserver.crt"

    def kubeconfig(self, user: User = ADMIN, *, namespace: str = "default") -> Path:
        path = self.workdir / f"kubeconfig-{user.name.replace(':', '-')}"
        if not path.exists():
            path.write_text(yaml.safe_dump(self.kubeconfig_dict(user.token, namespace=namespace)))
            path.chmod(0o600)
        return path

    def kubeconfig_dict(self, token: str, *, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "voicefleet-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "voicefleet-test",
                    "context": {
                        "cluster": "voicefleet-test",
                        "user": "user",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "voicefleet-test",
        }

    def _write_files(self) -> None:
        (self.workdir / "certs").mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            "".join(f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users)
        )
        tokens.chmod(0o600)
        (self.workdir / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
        key = self.workdir / "service-account.key"
        if not key.exists():
            subprocess.run(
                ["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True
            )
            subprocess.run(
                ["openssl", "rsa", "-in", str(key), "-pubout", "-out", f"{key}.pub"],
                check=True,
                capture_output=True,
            )
        (self.workdir / "nodes.yaml").write_text(
            yaml.safe_dump_all(node.manifest() for node in self.nodes)
        )

    # ----- processes --------------------------------------------------------------------------

    def _spawn(self, name: str, binary: str, args: Sequence[str]) -> None:
        path = BUILT / binary
        if not path.exists():
            raise ControlPlaneError(f"{path} is missing: run scripts/build_kube.sh")
        log = (self.logs / f"{name}.log").open("ab")
        command = [str(path), *args, *self.extra_args.get(name, ())]
        self._processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, "GOGC": self.go_gc_percent},
        )
        log.close()

    def _running(self, name: str) -> bool:
        process = self._processes.get(name)
        return process is not None and process.poll() is None

    def _wait(self, name: str, ready: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._running(name):
                raise ControlPlaneError(f"{name} stopped while starting:\n{self.log_tail(name)}")
            try:
                if ready():
                    return
            except (httpx.TransportError, OSError):
                pass
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} was not ready after {timeout} s:\n{self.log_tail(name)}")

    def start(self) -> None:
        self._write_files()
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--listen-metrics-urls=",
                # A test cluster survives nothing anyway: no fsync keeps shared disks quiet.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: httpx.get(f"{etcd_url}/health", timeout=2).is_success)
        key = self.workdir / "service-account.key"
        self._spawn(
            "kube-apiserver",
            self.apiserver_binary,
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={key}.pub",
                f"--service-account-signing-key-file={key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        self._wait(
            "kube-apiserver",
            lambda: self.ca_path.exists() and self.client().get("/readyz").status_code == 200,
            timeout=180,
        )
        # RBAC's bootstrap roles are written by a post-start hook; /readyz waits for it.
        if not self.controllers:
            return
        self._spawn(
            "kube-controller-manager",
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig(CONTROLLER_MANAGER)}",
                # No kubelets to watch over; the serving certificate is not a CA to publish.
                "--controllers=*,-node-lifecycle-controller,-node-ipam-controller,"
                "-kube-apiserver-serving-clustertrustbundle-publisher-controller",
                f"--service-account-private-key-file={key}",
                f"--root-ca-file={self.ca_path}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._spawn(
            "kube-scheduler",
            "kube-scheduler",
            [
                f"--kubeconfig={self.kubeconfig(SCHEDULER)}",
                f"--authentication-kubeconfig={self.kubeconfig(SCHEDULER)}",
                f"--authorization-kubeconfig={self.kubeconfig(SCHEDULER)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        self._spawn(
            "kwok",
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig(KWOK)}",
                f"--config={BUILT / 'kwok-stages.yaml'}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
            ],
        )
        self.kubectl("apply", "--server-side", "-f", str(self.workdir / "nodes.yaml"))
        self._wait("kwok", self._nodes_ready)
        # Admission taints every new node not-ready; the node lifecycle controller, which would
        # lift it, is off (kwok keeps no leases for it to watch), so lift it once here.
        self.kubectl("taint", "nodes", "--all", "node.kubernetes.io/not-ready:NoSchedule-")
        self.wait_for_service_account("default")

    def wait_for_service_account(self, namespace: str, name: str = "default") -> None:
        """Pods need it (ServiceAccount admission); the controller manager creates it."""
        self._wait(
            "kube-controller-manager",
            lambda: (
                self.client()
                .get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
                .is_success
            ),
        )

    def _nodes_ready(self) -> bool:
        listing = self.client().get("/api/v1/nodes").json()
        ready = [
            node
            for node in listing.get("items", [])
            if any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in node.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) == len(self.nodes)

    def cpu_seconds(self) -> dict[str, float]:
        """Each running part's CPU time so far, by name (etcd, kube-apiserver, ...)."""
        return {
            name: procstat.cpu_seconds(process.pid)
            for name, process in self._processes.items()
            if process.poll() is None
        }

    def peak_memory_mb(self) -> dict[str, float]:
        """Each running part's peak resident memory so far (VmHWM), by name, in MB."""
        return {
            name: procstat.memory_mb(process.pid)[1]
            for name, process in self._processes.items()
            if process.poll() is None
        }

    def stop(self) -> None:
        for name in reversed(list(self._processes)):
            process = self._processes[name]
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()

    # ----- use --------------------------------------------------------------------------------

    def client(self, user: User = ADMIN, *, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token or user.token}"},
            verify=ssl.create_default_context(cafile=str(self.ca_path)),
            timeout=30,
        )

    def kubectl(
        self, *args: str, user: User = ADMIN, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), f"--kubeconfig={self.kubeconfig(user)}", *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def install_crd(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(CRD_PATH))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/voiceservices.voicefleet.io",
            "--timeout=60s",
        )
        # Discovery follows a moment later; kubectl resolves `vsvc` through it.
        self._wait(
            "kube-apiserver",
            lambda: self.kubectl("get", "vsvc", "-A", check=False).returncode == 0,
        )

    def audit_events(self) -> Iterator[dict[str, Any]]:
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as lines:
            for line in lines:
                # The API server may be writing the last line as we read: an event is whole
                # only once its newline is there, and it is read on the next call.
                if line.endswith("\n") and line.strip():
                    yield json.loads(line)

    def writes_by(self, username: str, *, after: str | None = None) -> list[dict[str, Any]]:
        """The audited write requests of one user, received after the RFC 3339 time `after`."""
        return [
            event
            for event in self.audit_events()
            if event.get("verb") in WRITE_VERBS
            and event.get("user", {}).get("username") == username
            and (after is None or event.get("requestReceivedTimestamp", "") > after)
        ]

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return f"({path} does not exist)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def all_log_tails(self, lines: int = 25) -> str:
        return "\n".join(
            f"----- {name} ({self.logs / name}.log) -----\n{self.log_tail(name, lines)}"
            for name in self._processes
        )


def main() -> None:
    """Start the test cluster for a person, print its kubeconfig, run until Ctrl-C."""
    import argparse
    import signal
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--workdir", type=Path, help="folder for etcd, certificates and logs")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="voicefleet-cluster-"))
    plane = ControlPlane(workdir.resolve())
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        plane.start()
        plane.install_crd()
        kubeconfig = plane.kubeconfig()
        print(kubeconfig.read_text())
        print(f"export KUBECONFIG={kubeconfig}")
        print(f"logs: {plane.logs}; Ctrl-C stops the cluster", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        plane.stop()


if __name__ == "__main__":
    main()
