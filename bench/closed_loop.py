"""The GPU batching bench's load: N callers in a closed loop, and a row of its table."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from speech_corpus import Clip, word_error_rate

UNCAPPED_REQUESTS = 1_000_000
"""More than any row sends: closed loops (in-process and HTTP) end on their time budget, not
on a count. Two rounds of a closed loop start every request together, so uploads, engine and
replies run in lockstep instead of overlapping as under steady load (on one host, 4 API
processes, WAV at 64 clients: 3370.6 audio s/s over 128 requests, run 29; 4586 over 6 s, run
30)."""


@dataclass
class Row:
    model: str
    path: str
    """in-process, HTTP, HF, sequential, ..."""
    batch: int
    """Concurrent requests (in-process threads, HTTP clients) or the HF batch size."""
    audio_s_per_s: float
    p50_s: float
    p95_s: float
    wer: float | None = None
    step_ms: float | None = None
    encoder_peak_fraction: float | None = None
    gpu_gib: float | None = None
    requests: int = 0
    note: str = ""


@dataclass
class LoopResult:
    latencies: list[float]
    texts: list[tuple[Clip, str]]
    wall_s: float

    @property
    def audio_seconds(self) -> float:
        return sum(clip.seconds for clip, _ in self.texts)

    def row(self, model: str, path: str, batch: int, **extra: object) -> Row:
        ordered = sorted(self.latencies)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        wer = word_error_rate([c.reference for c, _ in self.texts], [t for _, t in self.texts])
        return Row(
            model,
            path,
            batch,
            self.audio_seconds / self.wall_s,
            statistics.median(ordered),
            p95,
            wer=wer,
            requests=len(self.latencies),
            **extra,  # type: ignore[arg-type]
        )


def closed_loop(
    call: Callable[[Clip], str],
    clips: Sequence[Clip],
    concurrency: int,
    requests: int,
    budget_s: float,
) -> LoopResult:
    """`concurrency` callers each send the next clip as soon as their last one returns, until
    `requests` were sent or `budget_s` has passed (then the ones in flight finish)."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    texts: list[tuple[Clip, str]] = []
    errors: list[BaseException] = []
    started = time.perf_counter()
    deadline = started + budget_s

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= requests or (issued and time.perf_counter() > deadline) or errors:
                    return
                clip = clips[issued % len(clips)]
                issued += 1
            begun = time.perf_counter()
            try:
                text = call(clip)
            except BaseException as error:  # surfaced below, after the others stop
                with lock:
                    errors.append(error)
                return
            with lock:
                latencies.append(time.perf_counter() - begun)
                texts.append((clip, text))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return LoopResult(latencies, texts, time.perf_counter() - started)
