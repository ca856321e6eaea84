"""Kokoro-82M on onnxruntime (CPU), with explicit thread settings and a bound on parallel runs.

On a shared, loaded machine onnxruntime's default spin-waiting threads made two threads slower
than one: the thread counts are set, and spinning is off, so an idle slot costs no CPU.

Each request runs in its own engine thread, but no more runs execute at once than the CPUs can
carry (available CPUs // threads per run). Past that, extra runs only time-slice the same
cores: the same throughput, every request finishing as late as the last one, and onnxruntime's
arena growing to hold every run's activations at once (a server at concurrency 8 on 2 CPUs
grew to over 1.2 GiB). Queued chunks wait their turn in arrival order instead.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from voicefleet_runtime.tts.model import MODEL_SPEED_RANGE, BackendInfo


def parallel_runs(threads: int) -> int:
    """Runs that fit the CPUs this process may use (its affinity and cgroup quota) at once."""
    # Imported here: audio_workers brings the upload decoder (PyAV), which a caller that sets
    # the bound itself (bench/tts_gpu.py on the device image) does not have.
    from voicefleet_runtime.audio_workers import available_cpus

    return max(1, available_cpus() // threads)


class KokoroOnnx:
    def __init__(self, model: bytes, threads: int, max_parallel_runs: int | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.threads = threads
        self.max_parallel_runs = max_parallel_runs or parallel_runs(threads)
        # A Condition-based semaphore: waiters are woken in the order they arrived.
        self._runs = threading.BoundedSemaphore(self.max_parallel_runs)

    @property
    def placement(self) -> str:
        return (
            f"onnxruntime CPU, {self.threads} thread(s) per run, "
            f"at most {self.max_parallel_runs} run(s) at once"
        )

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("onnxruntime", "cpu", "int8")

    def input_shapes(self) -> dict[str, list[object]]:
        """The graph's inputs and their shapes (the batch axis is fixed at 1)."""
        return {item.name: list(item.shape) for item in self._session.get_inputs()}

    def synthesize(
        self, token_ids: list[int], style: NDArray[np.float32], speed: float
    ) -> NDArray[np.float32]:
        """One chunk (pads included) to 24 kHz mono float32; safe from several threads."""
        low, high = MODEL_SPEED_RANGE
        inputs = {
            "tokens": np.asarray([token_ids], dtype=np.int64),
            "style": np.asarray(style, dtype=np.float32).reshape(1, -1),
            "speed": np.asarray([min(max(speed, low), high)], dtype=np.float32),
        }
        with self._runs:
            outputs = self._session.run(None, inputs)
        audio: NDArray[np.float32] = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        return audio

    def warm_up(self, requests: list[tuple[list[int], NDArray[np.float32]]]) -> None:
        """One chunk: onnxruntime has one shape kind (batch 1) to prepare."""
        self.synthesize(*requests[0], 1.0)

    def close(self) -> None:
        """Nothing runs in the background: each run is its caller's."""
