"""The operator as its own process (`voicefleet operator`, as the chart's pod runs it), for what
a thread cannot show: its memory and CPU time (read from /proc), a hard kill (SIGKILL), and two
replicas side by side with kopf peering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import procstat
from tests.loopback import free_port


class OperatorProcess:
    """`voicefleet operator ARGS` with `VOICEFLEET_OPERATOR_*` settings from `env`, logging to
    `log`. Its /metrics listens on a port of its own on 127.0.0.1."""

    def __init__(
        self,
        kubeconfig: Path,
        args: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        pod_id: str | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.log = log
        self.args = list(args)
        self.env = {
            **os.environ,
            "VOICEFLEET_OPERATOR_KUBECONFIG": str(kubeconfig),
            "VOICEFLEET_OPERATOR_METRICS_HOST": "127.0.0.1",
            "VOICEFLEET_OPERATOR_METRICS_PORT": str(self.metrics_port),
            **(env or {}),
        }
        if pod_id is not None:  # kopf's peer identity, as the chart sets it
            self.env["POD_ID"] = pod_id
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout: float = 60) -> None:
        """Start, and return once /metrics answers (kopf is up by then)."""
        command = [sys.executable, "-m", "voicefleet_operator.cli", "operator", *self.args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"the operator stopped while starting:\n{self.log_tail()}")
            try:
                if httpx.get(self.metrics_url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the operator's /metrics did not answer in {timeout} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM (kopf stops cleanly, leaving the peering) or SIGKILL (gone at once)."""
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metric(self, name: str) -> float:
        """The sum of one metric's samples (all labels) from the operator's /metrics."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far."""
        return procstat.cpu_seconds(self.pid)

    def memory_mb(self) -> tuple[float, float]:
        """Resident memory now and at its peak, in MB."""
        return procstat.memory_mb(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return f"({self.log} does not exist)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
