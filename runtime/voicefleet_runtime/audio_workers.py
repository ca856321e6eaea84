"""Where uploads are decoded: in the request's engine thread, or in worker processes.

PyAV's decode loop (one Python iteration per 20 ms frame, the per-frame limit checks of
audio.py, the resampler) holds the GIL for most of a clip's 60-90 ms of CPU. Alone that is
harmless, but with the batched torch engine every request of the batch decodes its upload in
the same process as the GPU loop thread, which needs the GIL back after each wait on the GPU:
on an H200's host, 64 threads decoding stretched a loop step that waits six times from 0.95 ms
to 17.7 ms, and the decoding itself never used more than one core (bench/gil_convoy.py;
bench/results/batching-notes.md, run 6). In processes the decoding runs on every core and the
loop keeps the interpreter. `decode_pcm16` runs there unchanged, with every limit it checks,
and sends back 16-bit samples, half the bytes of float32 through the pipe and the pickle; the
server scales them to float32 exactly (numpy does that without the GIL).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.audio import (
    AudioSource,
    DecodeLimits,
    decode_engine_wav,
    decode_pcm16,
    decode_pcm16_with_ffmpeg,
)
from voicefleet_runtime.cpu_budget import decode_processes_for
from voicefleet_runtime.errors import ApiError

logger = logging.getLogger("voicefleet.runtime")

DecodeProcesses = int | Literal["auto"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_V1_CPU_FOLDERS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")
"""Where cgroup v1 mounts the cpu controller (`cpu,cpuacct` on most nodes)."""


def available_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """CPUs this process may use: the CPUs its affinity allows, capped by the CPU quota of its
    cgroups (a pod's CPU limit), rounded up; at least 1. `os.cpu_count()` counts the node."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_cpu_quota(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
) -> float | None:
    """The tightest CPU quota, in CPUs (quota over period), of this process's cgroup and its
    ancestors; None when none sets one.

    cgroup v2: `cpu.max` ("max 100000" or "150000 100000"); v1: `cpu.cfs_quota_us` (-1: none)
    over `cpu.cfs_period_us` in the cpu controller's hierarchy. The process's cgroup comes from
    /proc/self/cgroup; in a container with its own cgroup namespace, or with its cgroup mounted
    at the root (v1), that path is not under the mount and the mount's root is its cgroup, so
    every folder from the path up to the root that exists is read. Files that are missing or
    unreadable, or hold values no kernel writes, mean no quota, never a failure."""
    quotas: list[float] = []
    for folder in _cgroup_folders(cgroup_root, proc_cgroup):
        quota = _folder_quota(folder)
        if quota is not None:
            quotas.append(quota)
    return min(quotas, default=None)


def _cgroup_folders(cgroup_root: Path, proc_cgroup: Path) -> list[Path]:
    """The folders of this process's cgroup, from its own up to the root, in the v2 hierarchy
    and in v1's cpu controller (whichever this node mounts)."""
    v2_path, v1_cpu_path = "/", "/"
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        # "hierarchy-ID:controller-list:path"; v2's has an empty controller list.
        fields = line.split(":", 2)
        # A path outside this cgroup namespace ("/../x") says nothing about the mount.
        if len(fields) != 3 or not fields[2].startswith("/") or ".." in Path(fields[2]).parts:
            continue
        if fields[1] == "":
            v2_path = fields[2]
        elif "cpu" in fields[1].split(","):
            v1_cpu_path = fields[2]
    hierarchies = [(cgroup_root, v2_path)]
    hierarchies += [(cgroup_root / name, v1_cpu_path) for name in CGROUP_V1_CPU_FOLDERS]
    folders: list[Path] = []
    seen: set[Path] = set()
    for mount, path in hierarchies:
        relative = Path(path).relative_to("/")
        for level in [relative, *relative.parents]:
            folder = mount / level
            if folder.is_dir() and folder.resolve() not in seen:
                seen.add(folder.resolve())
                folders.append(folder)
    return folders


def _folder_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()
        return None if quota == "max" else _cpus(quota, period)
    except (OSError, ValueError):
        pass
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
        return _cpus(quota, period)
    except (OSError, ValueError):
        return None


def _cpus(quota: str, period: str) -> float | None:
    """`quota` / `period`; None for no quota (v1's -1) or values no kernel writes."""
    if int(period) <= 0 or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def decode_process_count(setting: DecodeProcesses, engine_batches: bool) -> int:
    """0 decodes in the request thread. `auto`: processes only for an engine that batches
    requests in this process, `decode_processes_for(available_cpus())` (cpu_budget: one per
    usable CPU but the server's, 1 to 8); elsewhere the engine thread decodes, as it always did
    (no extra memory, no hop)."""
    if setting != "auto":
        return setting
    if not engine_batches:
        return 0
    return decode_processes_for(available_cpus())


def _warm() -> int:
    """Runs once in each new worker so its imports happen at start-up, not on a request."""
    return os.getpid()


class AudioDecoder:
    """`decode_pcm16(source, ...)` with audio.decode_pcm16's meaning, wherever the settings say.

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

    def decode_pcm16(
        self, source: AudioSource, max_seconds: float, *, min_bytes_per_second: float = 0.0
    ) -> NDArray[np.int16]:
        """audio.decode_pcm16's samples, decoded where the settings say (engine.base's
        transcribe_pcm16 hands them to the engine)."""
        if self._pool is None:
            return decode_pcm16(source, max_seconds, min_bytes_per_second=min_bytes_per_second)
        # A WAV of the engines' own samples is a copy (engine_wav.py): cheaper here than its
        # round trip to a process.
        pcm = decode_engine_wav(source, max_seconds, min_bytes_per_second=min_bytes_per_second)
        if pcm is None:
            with self._places:
                data = source if isinstance(source, bytes) else _read_all(source)
                pcm = self._decode_in_pool(data, max_seconds, min_bytes_per_second)
        return pcm

    def _decode_in_pool(
        self, data: bytes, max_seconds: float, min_bytes_per_second: float
    ) -> NDArray[np.int16]:
        for _ in range(2):
            pool = self._pool
            if pool is None:
                raise ApiError(503, "the server is shutting down", code="draining")
            try:
                # Not decode_pcm16: the caller found the upload is no engine WAV already.
                limits = DecodeLimits(max_seconds, min_bytes_per_second)
                job = pool.submit(decode_pcm16_with_ffmpeg, data, limits)
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
        """Waits for the workers to exit (requests are drained by then). Not waiting deadlocks
        an API process (api_processes.py): a multiprocessing child runs its exit finalizers,
        which stop the pool's queue feeder, before the pool has sent its workers their stop,
        then waits for those workers forever."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _read_all(source: AudioSource) -> bytes:
    assert not isinstance(source, bytes)
    source.seek(0)
    return source.read()
