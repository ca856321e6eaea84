"""A real `voicefleet serve` for the GPU batching bench's HTTP rows, and its GPU memory."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType

import httpx
from closed_loop import LoopResult, closed_loop
from gpu_runtime_http import ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families
from speech_corpus import Clip

from voicefleet_runtime import metric_names
from voicefleet_runtime.readiness import wait_until_ready

GIB = 2**30
READY_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 600
MEMORY_SAMPLE_S = 0.1
CLIENT_KEEPALIVE_S = 1.0
"""Under uvicorn's 5 s keep-alive timeout, so the client, not the server, ends idle connections."""
CLIENT_PROCESSES = 8
"""The HTTP rows' clients are spread over this many processes, so the load generator never
queues on its own GIL. It was not the limit: on the device, tiny.en at 64 clients served
1954 audio s/s with clients in 8 processes and 2291 with 64 threads in one (two machines of
the same kind, bench/results/gpu_batching-h200.txt); the ceiling is the server's."""


def new_client(connections: int) -> httpx.Client:
    # Idle connections are dropped here before the server's keep-alive timeout can close
    # them under a request (a row with fewer clients leaves the rest of the pool idle).
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=CLIENT_KEEPALIVE_S,
    )
    return httpx.Client(limits=limits, timeout=REQUEST_TIMEOUT_S)


def post_transcription(client: httpx.Client, url: str, clip: Clip) -> str:
    response = client.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": (clip.filename, clip.data)},
        data={"model": "whisper-1"},
    )
    response.raise_for_status()
    return str(response.json()["text"])


# One client process's state, set by _start_client when its pool starts it.
_process_client: httpx.Client | None = None
_process_url = ""
_process_clip_sets: list[list[Clip]] = []


def _start_client(url: str, clip_sets: list[list[Clip]], connections: int) -> None:
    global _process_client, _process_url, _process_clip_sets
    _process_client, _process_url, _process_clip_sets = new_client(connections), url, clip_sets


def _post_from_process(clip: Clip) -> str:
    assert _process_client is not None
    return post_transcription(_process_client, _process_url, clip)


ShareResult = tuple[list[float], list[tuple[int, str]], float, float]


def _client_share(
    clients: int, requests: int, budget_s: float, clip_set: int, first_clip: int
) -> ShareResult:
    """One process's share of a row: (latencies, (clip index, text), started, ended); the
    clock is CLOCK_MONOTONIC, shared by the processes of one machine."""
    clips = _process_clip_sets[clip_set]
    order = clips[first_clip:] + clips[:first_clip]
    started = time.perf_counter()
    result = closed_loop(_post_from_process, order, clients, requests, budget_s)
    index = {id(clip): i for i, clip in enumerate(clips)}
    texts = [(index[id(clip)], text) for clip, text in result.texts]
    return result.latencies, texts, started, started + result.wall_s


def _client_process(
    url: str,
    clip_sets: list[list[Clip]],
    connections: int,
    tasks: multiprocessing.Queue[tuple[int, int, float, int, int] | None],
    results: multiprocessing.Queue[ShareResult | str],
) -> None:
    _start_client(url, clip_sets, connections)
    for task in iter(tasks.get, None):
        try:
            results.put(_client_share(*task))
        except Exception as error:  # reported to the bench, which stops the row
            results.put(repr(error))


class ClientPool:
    """Closed-loop HTTP clients in CLIENT_PROCESSES processes, started once per server and
    each given one share of every row (a ProcessPoolExecutor ran some shares seconds late)."""

    def __init__(self, url: str, clip_sets: list[list[Clip]], most_clients: int) -> None:
        self._clip_sets = clip_sets
        context = multiprocessing.get_context("spawn")  # the bench's CUDA stays here
        count = min(CLIENT_PROCESSES, most_clients)
        connections = math.ceil(most_clients / count)
        self._tasks: list[multiprocessing.Queue[tuple[int, int, float, int, int] | None]] = [
            context.Queue() for _ in range(count)
        ]
        self._results: multiprocessing.Queue[ShareResult | str] = context.Queue()
        self._processes = [
            context.Process(
                target=_client_process,
                args=(url, clip_sets, connections, tasks, self._results),
                daemon=True,
            )
            for tasks in self._tasks
        ]
        for process in self._processes:
            process.start()

    def closed_loop(
        self, clients: int, requests: int, budget_s: float, clip_set: int = 0
    ) -> LoopResult:
        """Like closed_loop.closed_loop over clip_sets[clip_set], the callers spread evenly."""
        clips = self._clip_sets[clip_set]
        count = len(self._tasks)
        shares = [clients // count + (i < clients % count) for i in range(count)]
        sent = 0
        for i, (tasks, share) in enumerate(zip(self._tasks, shares, strict=True)):
            if share:
                share_requests = math.ceil(requests * share / clients)
                tasks.put((share, share_requests, budget_s, clip_set, (i * len(clips)) // count))
                sent += 1
        parts = [self._results.get(timeout=REQUEST_TIMEOUT_S + budget_s) for _ in range(sent)]
        failures = [part for part in parts if isinstance(part, str)]
        if failures:
            raise RuntimeError(f"a client process failed: {failures[0]}")
        shares_done = [part for part in parts if not isinstance(part, str)]
        latencies = [latency for part in shares_done for latency in part[0]]
        texts = [(clips[i], text) for part in shares_done for i, text in part[1]]
        wall = max(part[3] for part in shares_done) - min(part[2] for part in shares_done)
        return LoopResult(latencies, texts, wall)

    def close(self) -> None:
        for tasks in self._tasks:
            tasks.put(None)
        for process in self._processes:
            process.join(timeout=10)


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


TRANSCRIPTIONS = "/v1/audio/transcriptions"

# (field, the sample's name in /metrics, its endpoint label or None). The decode series are
# the batched engine's: absent from the sequential engine's /metrics, so they read 0.
COUNTED_SAMPLES = (
    ("requests", f"{metric_names.REQUEST_DURATION}_count", TRANSCRIPTIONS),
    ("request_seconds", f"{metric_names.REQUEST_DURATION}_sum", TRANSCRIPTIONS),
    ("queue_wait_seconds", f"{metric_names.QUEUE_WAIT}_sum", None),
    ("engine_seconds", metric_names.ENGINE_BUSY_SECONDS, None),
    ("decode_steps", metric_names.DECODE_STEPS, None),
    ("decode_step_seconds", metric_names.DECODE_STEP_SECONDS, None),
    ("decoded_windows", f"{metric_names.DECODE_BATCH_SIZE}_sum", None),
)


@dataclass(frozen=True)
class ServerCounters:
    """The server's own account of where a request's time went, summed over requests (a
    snapshot of /metrics; a row reads the difference of two)."""

    requests: float = 0.0
    request_seconds: float = 0.0
    """From the request's headers to its response's end: upload, queue, engine, reply."""
    queue_wait_seconds: float = 0.0
    engine_seconds: float = 0.0
    """From handing the audio to the engine to its last segment (decoding excluded)."""
    decode_steps: float = 0.0
    decode_step_seconds: float = 0.0
    decoded_windows: float = 0.0
    """Rows of every decode step: over decode_steps, the mean batch."""

    @classmethod
    def parse(cls, metrics_text: str) -> ServerCounters:
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                for field_name, name, endpoint in COUNTED_SAMPLES:
                    if sample.name == name and sample.labels.get("endpoint") == endpoint:
                        values[field_name] = values.get(field_name, 0.0) + sample.value
        return cls(**values)

    def since(self, before: ServerCounters) -> ServerCounters:
        return ServerCounters(
            *(getattr(self, f.name) - getattr(before, f.name) for f in fields(self))
        )

    def step_ms(self) -> float | None:
        return 1000 * self.decode_step_seconds / self.decode_steps if self.decode_steps else None

    def breakdown(self, wall_s: float, client_mean_s: float) -> str:
        """Where a request's time went, mean per request, and how busy the loop kept the GPU."""
        if not self.requests:
            return ""
        per_request = {
            "client": client_mean_s,
            "server": self.request_seconds / self.requests,
            "queue": self.queue_wait_seconds / self.requests,
            "engine": self.engine_seconds / self.requests,
        }
        parts = [" ".join(f"{k} {1000 * v:.0f}" for k, v in per_request.items()) + " ms/request"]
        if self.decode_steps:
            parts.append(f"stepping {self.decode_step_seconds / wall_s:.0%} of wall")
            parts.append(f"{self.decoded_windows / self.decode_steps:.1f} windows/step")
        return "; ".join(parts)


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
        self._started = time.perf_counter()
        self.ready_s = 0.0
        """Seconds from the process's start to ready: load, compile, capture, warm-up."""
        self._process = subprocess.Popen(command, env=env)
        self._memory = ProcessGpuMemory(self._process.pid)
        self._client = new_client(clients)

    def __enter__(self) -> ServedModel:
        wait_until_ready(
            self.url, lambda: self._process.poll() is None, "voicefleet serve", READY_TIMEOUT_S
        )
        self.ready_s = time.perf_counter() - self._started
        return self

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

    @property
    def pid(self) -> int:
        return self._process.pid

    def transcribe(self, clip: Clip) -> str:
        return post_transcription(self._client, self.url, clip)

    def counters(self) -> ServerCounters:
        return ServerCounters.parse(self._client.get(f"{self.url}/metrics").text)

    def reset_peak_memory(self) -> None:
        self._memory.reset()

    def peak_gib(self) -> float | None:
        return self._memory.peak_gib()
