"""A real `voicefleet serve` for the GPU batching bench's HTTP rows, and its GPU memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx
from gpu_runtime_http import ROOT, free_port
from speech_corpus import Clip

# The batched engine's series; absent from the sequential engine's /metrics.
from voicefleet_runtime.metric_names import DECODE_STEP_SECONDS, DECODE_STEPS

GIB = 2**30
READY_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 600
MEMORY_SAMPLE_S = 0.1
CLIENT_KEEPALIVE_S = 1.0
"""Under uvicorn's 5 s keep-alive timeout, so the client, not the server, ends idle connections."""


class ProcessGpuMemory:
    """Peak GPU memory NVML attributes to one process, summed over GPUs, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception:  # no driver (CPU runs): no memory column
            self._handles = []
            return
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            used = 0
            for handle in self._handles:
                for process in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == self._pid and process.usedGpuMemory:
                        used += int(process.usedGpuMemory)
            if used:
                self._peak = max(self._peak or 0, used)

    def reset(self) -> None:
        self._peak = None

    def peak_gib(self) -> float | None:
        return None if self._peak is None else self._peak / GIB

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class ServedModel:
    """`voicefleet serve --model FOLDER` in a subprocess, ready when entered, drained on exit."""

    def __init__(
        self,
        model_dir: Path,
        device: str,
        precision: str,
        clients: int,
        gpus: int,
        settings: dict[str, str],
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "VOICEFLEET_ENGINE": "torch",
            "VOICEFLEET_DEVICE": "cuda" if device.startswith("cuda") else "cpu",
            "VOICEFLEET_PRECISION": precision,
            "VOICEFLEET_CONCURRENCY": str(clients),
            "VOICEFLEET_QUEUE_SIZE": str(2 * clients),
            "VOICEFLEET_LOG_LEVEL": "warning",
            # The bench's own path first: a runtime it was pointed at wins over the checkout's.
            "PYTHONPATH": os.pathsep.join(
                [os.environ.get("PYTHONPATH", ""), str(ROOT / "runtime"), str(ROOT / "operator")]
            ),
            **settings,
        }
        if device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
        command = [sys.executable, "-m", "voicefleet_operator.cli", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--model", str(model_dir)]
        self._process = subprocess.Popen(command, env=env)
        self._memory = ProcessGpuMemory(self._process.pid)
        # Idle connections are dropped here before the server's keep-alive timeout can close
        # them under a request (a row with fewer clients leaves the rest of the pool idle).
        limits = httpx.Limits(
            max_connections=clients,
            max_keepalive_connections=clients,
            keepalive_expiry=CLIENT_KEEPALIVE_S,
        )
        self._client = httpx.Client(limits=limits, timeout=REQUEST_TIMEOUT_S)

    def __enter__(self) -> ServedModel:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited with {self._process.returncode}")
            try:
                if self._client.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready in {READY_TIMEOUT_S} s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._client.close()
        self._memory.close()
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def transcribe(self, clip: Clip) -> str:
        response = self._client.post(
            f"{self.url}/v1/audio/transcriptions",
            files={"file": (clip.filename, clip.data)},
            data={"model": "whisper-1"},
        )
        response.raise_for_status()
        return str(response.json()["text"])

    def decode_counters(self) -> tuple[float, float]:
        """(decode steps, decode step seconds) so far, from /metrics (0, 0 when the engine
        does not count them)."""
        wanted = {DECODE_STEPS: 0.0, DECODE_STEP_SECONDS: 0.0}
        for line in self._client.get(f"{self.url}/metrics").text.splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                wanted[name] = float(value)
        return wanted[DECODE_STEPS], wanted[DECODE_STEP_SECONDS]

    def reset_peak_memory(self) -> None:
        self._memory.reset()

    def peak_gib(self) -> float | None:
        return self._memory.peak_gib()
