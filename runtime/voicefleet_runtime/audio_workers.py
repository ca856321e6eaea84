"""Where uploads are decoded: in the request's engine thread, or in worker processes.

PyAV's decode loop (one Python iteration per 20 ms frame, the per-frame limit checks of
audio.py, the resampler) holds the GIL for most of a clip's 60-90 ms of CPU. Alone that is
harmless, but with the batched torch engine every request of the batch decodes its upload in
the same process as the GPU loop thread, which needs the GIL back after each wait on the GPU:
on an H200's host, 64 threads decoding stretched a loop step that waits six times from 0.95 ms
to 17.7 ms, and the decoding itself never used more than one core (bench/gil_convoy.py;
bench/results/batching-notes.md, run 6). In processes the decoding runs on every core and the
loop keeps the interpreter. `decode_audio` runs there unchanged, with every limit it checks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.audio import AudioSource, decode_audio
from voicefleet_runtime.cpu_budget import decode_processes_for
from voicefleet_runtime.errors import ApiError

logger = logging.getLogger("voicefleet.runtime")

DecodeProcesses = int | Literal["auto"]

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (a pod's limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def decode_process_count(setting: DecodeProcesses, engine_batches: bool) -> int:
    """0 decodes in the request thread. `auto`: processes only for an engine that batches
    requests in this process (one per available CPU but one, kept for the server itself, at most
    AUTO_MAX_DECODE_PROCESSES, see cpu_budget);
    elsewhere the engine thread decodes, as it always did (no extra memory, no hop)."""
    if setting != "auto":
        return setting
    if not engine_batches:
        return 0
    return decode_processes_for(available_cpus())


def _warm() -> int:
    """Runs once in each new worker so its imports happen at start-up, not on a request."""
    return os.getpid()


class AudioDecoder:
    """`decode(source, ...)` with audio.decode_audio's meaning, wherever the settings say.

    A worker that dies (FFmpeg crashing on a hostile file) breaks the whole pool: the pool is
    replaced and each request it held is decoded once more; a file that kills the decoder
    twice is refused as invalid audio, and the server itself never goes down with it.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._places = threading.BoundedSemaphore(2 * max(processes, 1))
        """Uploads read into memory for the workers: two per process (one decoding, one queued
        behind it, so no process waits for the next), while the other requests keep theirs
        spooled on disk: 64 waiting requests do not hold 64 copies in memory."""
        if processes:
            self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the server holds threads and possibly a CUDA context, which fork must not copy.
        pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
        for future in [pool.submit(_warm) for _ in range(self.processes)]:
            future.result()
        return pool

    def decode(
        self, source: AudioSource, max_seconds: float, *, min_bytes_per_second: float = 0.0
    ) -> NDArray[np.float32]:
        if self._pool is None:
            return decode_audio(source, max_seconds, min_bytes_per_second=min_bytes_per_second)
        with self._places:
            data = source if isinstance(source, bytes) else _read_all(source)
            for _ in range(2):
                pool = self._pool
                if pool is None:
                    raise ApiError(503, "the server is shutting down", code="draining")
                try:
                    job = pool.submit(
                        decode_audio, data, max_seconds, min_bytes_per_second=min_bytes_per_second
                    )
                    return job.result()
                except BrokenProcessPool:
                    logger.warning("an audio decoding process died; starting a new pool")
                    self._replace(pool)
        raise ApiError(400, "the audio crashed the decoder", code="invalid_audio", param="file")

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            # Every request in the broken pool lands here: only the first replaces it.
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._start()

    def worker_pids(self) -> list[int]:
        """The live worker processes (tests kill one to check the pool survives it)."""
        if self._pool is None:
            return []
        return [pid for pid, process in self._pool._processes.items() if process.is_alive()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _read_all(source: AudioSource) -> bytes:
    assert not isinstance(source, bytes)
    source.seek(0)
    return source.read()
