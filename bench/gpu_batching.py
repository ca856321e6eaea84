"""Issue 8's benchmark: continuous batching on a GPU against Hugging Face, in one run.

Every row comes from the same process on the same machine, so the goals print as ratios:
- ours in-process (the engine called from N threads at once) at batch 1, 8, 32, 64, 128;
- ours over HTTP (a real `voicefleet serve`) at 1, 8, 32, 64, 128 concurrent clients;
- the anchor, Hugging Face `WhisperForConditionalGeneration` (sdpa, greedy, no timestamps)
  batched at 8, 32, 64 on the same weights (bench/hf_whisper.py converts them);
- the baseline for the single-request goal: today's sequential engine, jfk p50.
Models: tiny.en and base with real weights on real and synthesised speech with references
(bench/speech_corpus.py), and a large-v3-shaped model with random weights and a forced decode
length. The bf16 peak is measured first (an 8192^3 matmul) and the encoder's rate is quoted
as a fraction of it.

On the device (bench/device/run_gpu_batching.sh wraps this):

    python bench/gpu_batching.py --tiny-dir DIR --base-dir DIR --jfk jfk.flac

Locally, to check the logic on CPU in a minute or two:

    python bench/gpu_batching.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from closed_loop import UNCAPPED_REQUESTS, LoopResult, Row, closed_loop
from gpu_batching_engines import (
    EngineFactory,
    OurEngine,
    free_cuda_memory,
    large_shape,
    tiny_shape,
)
from gpu_batching_http import ClientPool, ServedModel
from gpu_batching_measure import (
    GpuMemory,
    bf16_peak_tflops,
    encoder_flops,
    time_encoder,
)
from hf_whisper import HfAnchor
from speech_corpus import Clip, as_wav, load_corpus

from voicefleet_runtime.engine.base import SAMPLE_RATE, DecodeOptions
from voicefleet_runtime.engine.models import ResolvedModel, resolve_model

GREEDY = DecodeOptions(beam_size=1)
WINDOW_SECONDS = 30
QUICK_CLIPS = 3
"""--quick decodes JFK and two passages: enough to exercise every row on a loaded CPU."""
QUICK_DEADLINE_S = 3600.0
"""A shared 2-core CPU takes minutes per model; --quick is for checking, not for timing."""
NOT_OVERLAPPED = "steps not overlapped"
"""The label of the row run with VOICEFLEET_BATCH_OVERLAP_STEPS=off (the overlap's baseline)."""
API_PROCESSES = "VOICEFLEET_API_PROCESSES"
HF_PATH = "HF transformers"
"""The label of the anchor's rows."""
WAV_PATH = "HTTP, WAV uploads"


def transcribe_text(engine: OurEngine, clip: Clip) -> str:
    _, segments = engine.transcribe(clip.audio, GREEDY)
    return "".join(segment.text for segment in segments)


@dataclass
class Settings:
    device: str
    precision: str
    batches: list[int]
    clients: list[int]
    hf_batches: list[int]
    row_budget_s: float
    jfk_repeats: int
    forced_length: int
    gpus: int
    quick: bool
    deadline_s: float
    large_precision: str
    base_clients: list[int]
    server_env: dict[str, str] = field(default_factory=dict)
    skip: tuple[str, ...] = ()

    @property
    def api_processes(self) -> int:
        return int(self.server_env.get(API_PROCESSES, "1"))

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def clients_for(self, model: str) -> list[int]:
        """base's HTTP rows are fewer: the goals are on tiny.en, and a lease is short."""
        return self.base_clients if model == "base" else self.clients

    def least_requests(self, batch: int, clips: int) -> int:
        """What an HF row times at the least, past its time budget: two batches, every clip.
        (HF's figure from a few batches moved 20% between two scripts' timings on one host,
        runs 36-37: it now runs for the budget too.)"""
        return max(2 * batch, clips)


class Bench:
    def __init__(self, settings: Settings, factory: EngineFactory, peak_tflops: float) -> None:
        self.settings = settings
        self.factory = factory
        self.peak_tflops = peak_tflops
        self.rows: list[Row] = []
        self.facts: dict[str, float] = {}
        self.memory = GpuMemory(settings.device)
        self.deadline = time.perf_counter() + settings.deadline_s

    def out_of_time(self, what: str) -> bool:
        """Past the run's deadline the remaining rows are skipped, and say so, so a lease's
        command limit never eats the table."""
        late = time.perf_counter() > self.deadline
        if late:
            print(f"   skipped (past --deadline): {what}", flush=True)
        return late

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(format_row(row), flush=True)
        return row

    def encoder_fraction(self, seconds_per_window: float, flops_per_window: float) -> float:
        return flops_per_window / seconds_per_window / 1e12 / self.peak_tflops

    # -- real weights ---------------------------------------------------------------------
    def real_model(self, name: str, model: ResolvedModel, clips: list[Clip]) -> None:
        s = self.settings
        jfk = clips[0]
        sequential = self.factory.sequential(model)
        sequential_loop = closed_loop(
            partial(transcribe_text, sequential), clips, 1, len(clips), 1e9
        )
        self.add(sequential_loop.row(name, "sequential (today)", 1, note="each clip once"))
        self.facts[f"{name}.sequential_wer"] = self.rows[-1].wer or 0.0

        ours = self.factory.batched(model, max(s.batches))
        warm_up(ours, clips, max(s.batches))
        # Interleave the single-request figure so drift on a shared host hits both alike.
        sequential_times: list[float] = []
        ours_times: list[float] = []
        for index in range(s.jfk_repeats):
            for engine, times in ((sequential, sequential_times), (ours, ours_times))[
                :: 1 if index % 2 else -1
            ]:
                begun = time.perf_counter()
                transcribe_text(engine, jfk)
                times.append(time.perf_counter() - begun)
        self.facts[f"{name}.jfk_p50_sequential"] = statistics.median(sequential_times)
        self.facts[f"{name}.jfk_p50_ours"] = statistics.median(ours_times)
        sequential.close()
        del sequential  # its weights out of the memory column of the rows below
        free_cuda_memory()

        for batch in s.batches:
            if self.out_of_time(f"{name} in-process {batch}"):
                break
            self.add(self.in_process_row(name, ours, clips, batch, ours.label, with_encoder=True))
        float8 = ours.float8_cross
        ours.close()
        del ours
        free_cuda_memory()
        if (
            float8
            and "unquantised" not in s.skip
            and not self.out_of_time(f"{name} in-process, cross K/V unquantised")
        ):
            self.unquantised_row(name, model, clips)

        # The anchor before the served rows: a short lease must not lose the goals' baseline.
        self.hf_rows(name, model, clips)
        self.http_rows(name, model, clips, gpus=1, clients=s.clients_for(name))
        if (
            name == "tiny.en"
            and "unpaced" not in s.skip
            and not self.out_of_time(f"{name} HTTP admitted at once")
        ):
            self.unpaced_row(name, model, clips)
        if name == "tiny.en" and s.api_processes > 1 and not self.out_of_time("one API process"):
            self.one_api_process_row(name, model, clips)
        if s.gpus > 1 and name == "tiny.en":
            self.http_rows(name, model, clips, gpus=s.gpus, clients=[max(s.clients)])

    def in_process_row(
        self,
        name: str,
        ours: OurEngine,
        clips: list[Clip],
        batch: int,
        path: str,
        with_encoder: bool,
    ) -> Row:
        """One closed loop of `batch` threads on our engine in this process, for the row's
        time budget; the encoder's share of the peak timed after it when `with_encoder`."""
        s = self.settings
        self.memory.reset()
        ours.reset_stats()
        result = closed_loop(
            partial(transcribe_text, ours),
            clips,
            batch,
            UNCAPPED_REQUESTS,
            s.row_budget_s,
        )
        fraction = None
        if with_encoder:
            dims = ours.dimensions
            encoder_s = time_encoder(ours.encoder, dims, min(batch, ours.encoder_batch), s.device)
            fraction = self.encoder_fraction(encoder_s, encoder_flops(dims))
        return result.row(
            name,
            path,
            batch,
            step_ms=ours.step_ms(),
            encoder_peak_fraction=fraction,
            gpu_gib=self.memory.peak_gib(),
            note=gpu_step_note(ours).removeprefix(", "),
        )

    def unquantised_row(self, name: str, model: ResolvedModel, clips: list[Clip]) -> None:
        """The goal's batch with cross-attention keys and values in the model's dtype, as
        before float8 (VOICEFLEET_BATCH_FLOAT8_CROSS_ATTENTION=off): its speed and WER
        are float8's baseline."""
        s = self.settings
        batch = goal_clients(s)
        ours = self.factory.batched(model, max(s.batches), float8="off")
        warm_up(ours, clips, batch)
        path = f"{ours.label}, {s.precision} cross K/V"
        self.add(self.in_process_row(name, ours, clips, batch, path, with_encoder=False))
        ours.close()
        del ours
        free_cuda_memory()

    def http_rows(
        self, name: str, model: ResolvedModel, clips: list[Clip], gpus: int, clients: list[int]
    ) -> None:
        s = self.settings
        clip_sets = [clips, [as_wav(clip) for clip in clips]]
        env = self.factory.server_env()
        with self.warm_server(model, clip_sets, max(clients), gpus, env) as (server, pool):
            label = "HTTP" if gpus == 1 else f"HTTP, {gpus} GPUs"
            for count in clients:
                if self.out_of_time(f"{name} HTTP {count}"):
                    break
                self.add(self.served_row(server, pool, count, name, label))
            count = goal_clients(s)
            if gpus == 1 and count in clients and not self.out_of_time(f"{name} HTTP WAV"):
                # The same load with PCM uploads: what serving costs beside decoding Opus.
                self.add(self.served_row(server, pool, count, name, WAV_PATH, 1))

    def unpaced_row(self, name: str, model: ResolvedModel, clips: list[Clip]) -> None:
        """The goal's load on a server that admits each arriving window at once, as before
        admissions were grouped (VOICEFLEET_BATCH_ADMISSION_WAIT_MS=0): the grouping's baseline."""
        s = self.settings
        count = goal_clients(s)
        env = self.factory.server_env() | {"VOICEFLEET_BATCH_ADMISSION_WAIT_MS": "0"}
        with self.warm_server(model, [clips], count, 1, env) as (server, pool):
            path = "HTTP, admitted at once"
            self.add(self.served_row(server, pool, count, name, path))

    def one_api_process_row(self, name: str, model: ResolvedModel, clips: list[Clip]) -> None:
        """The goal's load on a server whose one process holds both HTTP and the engine
        (VOICEFLEET_API_PROCESSES=1): the API processes' baseline."""
        s = self.settings
        count = goal_clients(s)
        env = self.factory.server_env() | {API_PROCESSES: "1"}
        with self.warm_server(model, [clips], count, 1, env) as (server, pool):
            self.add(self.served_row(server, pool, count, name, "HTTP, one process"))

    @contextmanager
    def warm_server(
        self,
        model: ResolvedModel,
        clip_sets: list[list[Clip]],
        clients: int,
        gpus: int,
        env: dict[str, str],
    ) -> Iterator[tuple[ServedModel, ClientPool]]:
        """`voicefleet serve` and a client pool for `clients`, both past their first requests
        (lazy kernels, graph capture, connections) before any row is timed."""
        s = self.settings
        with ServedModel(model.path, s.device, s.precision, clients, gpus, env) as server:
            # What a scale-up waits before the new pod serves (load, compile, capture).
            print(f"  server ready {server.ready_s:.1f} s after its start", flush=True)
            pool = ClientPool(server.url, clip_sets, clients)
            try:
                server.transcribe(clip_sets[0][0])
                pool.closed_loop(clients, clients, s.row_budget_s)
                yield server, pool
            finally:
                pool.close()

    def served_row(
        self,
        server: ServedModel,
        pool: ClientPool,
        clients: int,
        model: str,
        path: str,
        clip_set: int = 0,
    ) -> Row:
        """One closed loop against the server for the row's whole time budget; its decode
        step, and where a request's time went, from the server's counters."""
        server.reset_peak_memory()
        before = server.counters()
        budget_s = self.settings.row_budget_s
        result = pool.closed_loop(clients, UNCAPPED_REQUESTS, budget_s, clip_set)
        counted = server.counters().since(before)
        return result.row(
            model,
            path,
            clients,
            step_ms=counted.step_ms(),
            gpu_gib=server.peak_gib(),
            note=counted.breakdown(result.wall_s, statistics.fmean(result.latencies)),
        )

    def hf_rows(self, name: str, model: ResolvedModel, clips: list[Clip]) -> None:
        s = self.settings
        anchor = HfAnchor.from_model_folder(model.path, s.device, s.precision)
        anchor.warm_up([clip.audio for clip in clips[: min(s.hf_batches)]])
        for batch in s.hf_batches:
            if self.out_of_time(f"{name} HF {batch}"):
                break
            self.memory.reset()
            latencies: list[float] = []
            texts: list[tuple[Clip, str]] = []
            step_times: list[float] = []
            # One untimed batch of this size first: a new shape's first generate pays for
            # kernel choice and allocation, which our engine's rows pay in their warm-up too.
            anchor.transcribe([clips[i % len(clips)].audio for i in range(batch)])
            started = time.perf_counter()
            offset = 0
            while (
                offset < s.least_requests(batch, len(clips))
                or time.perf_counter() - started < s.row_budget_s
            ):
                chosen = [clips[(offset + i) % len(clips)] for i in range(batch)]
                offset += batch
                outcome = anchor.transcribe([clip.audio for clip in chosen])
                latencies += [outcome.seconds] * batch
                texts += list(zip(chosen, outcome.texts, strict=True))
                step_times.append(outcome.step_ms)
            result = LoopResult(latencies, texts, time.perf_counter() - started)
            encoder_s = time_encoder(anchor.encoder, anchor.dimensions, batch, s.device)
            self.add(
                result.row(
                    name,
                    HF_PATH,
                    batch,
                    step_ms=statistics.median(step_times),
                    encoder_peak_fraction=self.encoder_fraction(
                        encoder_s, encoder_flops(anchor.dimensions)
                    ),
                    gpu_gib=self.memory.peak_gib(),
                )
            )
        del anchor
        free_cuda_memory()

    # -- large-v3 shape, random weights, forced length ------------------------------------
    def large_model(self, tokenizer_model: ResolvedModel, clips: list[Clip]) -> None:
        s = self.settings
        dims = tiny_shape() if s.quick else large_shape()
        name = "large-v3 shape" if not s.quick else "tiny shape"
        window = [clips_as_window(clips)]
        anchor = HfAnchor.random(dims, tokenizer_model.path, s.device, s.large_precision)
        anchor.warm_up(window, forced_length=s.forced_length)
        for batch in s.hf_batches:
            if self.out_of_time(f"{name} HF {batch}"):
                break
            self.memory.reset()
            rounds = 2 if not s.quick else 1
            anchor.transcribe(window * batch, forced_length=s.forced_length)  # untimed, as above
            started = time.perf_counter()
            outcomes = [
                anchor.transcribe(window * batch, forced_length=s.forced_length)
                for _ in range(rounds)
            ]
            wall = time.perf_counter() - started
            encoder_s = time_encoder(anchor.encoder, dims, batch, s.device)
            row = Row(
                name,
                HF_PATH,
                batch,
                rounds * batch * WINDOW_SECONDS / wall,
                statistics.median(o.seconds for o in outcomes),
                max(o.seconds for o in outcomes),
                step_ms=statistics.median(o.step_ms for o in outcomes),
                encoder_peak_fraction=self.encoder_fraction(encoder_s, encoder_flops(dims)),
                gpu_gib=self.memory.peak_gib(),
                requests=rounds * batch,
                note=f"{s.forced_length} forced tokens, {s.large_precision}",
            )
            self.add(row)
        del anchor
        free_cuda_memory()

        # (GPUs, batches, float8, overlapped steps): the served settings, then the goal's
        # batch with each of float8 and overlap turned off (their baselines).
        runs = [(1, s.batches, "auto", "auto")]
        if s.gpus > 1:
            runs.append((s.gpus, [max(s.batches)], "auto", "auto"))
        if s.cuda:
            runs.append((1, [goal_clients(s)], "off", "auto"))
            runs.append((1, [goal_clients(s)], "auto", "off"))
        for gpus, batches, float8, overlap in runs:
            if self.out_of_time(f"{name} ours, {gpus} GPU(s), float8 {float8}, overlap {overlap}"):
                break
            ours = self.factory.random(
                dims,
                tokenizer_model,
                s.forced_length,
                max(s.batches),
                gpus,
                s.large_precision,
                float8,
                overlap,
            )
            if ours is None:
                print("   our large-shape rows need the batched engine (forced decode length)")
                return
            window_clip = Clip("window", b"", window[0], "")
            warm_up(ours, [window_clip], max(batches))
            for batch in batches:
                if batch < min(s.hf_batches) and gpus == 1 and batch != 1:
                    continue
                self.memory.reset()
                ours.reset_stats()
                result = closed_loop(
                    partial(transcribe_text, ours),
                    [window_clip],
                    batch,
                    2 * batch,
                    s.row_budget_s,
                )
                encoder_s = time_encoder(
                    ours.encoder, dims, min(batch, ours.encoder_batch), s.device
                )
                label = ours.label if gpus == 1 else f"{ours.label}, {gpus} GPUs"
                if float8 == "off":
                    label = f"{ours.label}, {s.large_precision} cross K/V"
                if overlap == "off":
                    label = f"{ours.label}, {NOT_OVERLAPPED}"
                self.add(
                    Row(
                        name,
                        label,
                        batch,
                        result.audio_seconds / result.wall_s,
                        statistics.median(result.latencies),
                        sorted(result.latencies)[round(0.95 * (len(result.latencies) - 1))],
                        step_ms=ours.step_ms(),
                        encoder_peak_fraction=self.encoder_fraction(encoder_s, encoder_flops(dims)),
                        gpu_gib=self.memory.peak_gib(),
                        requests=len(result.latencies),
                        note=f"{s.forced_length} forced tokens, {s.large_precision}"
                        + (", float8 cross K/V" if ours.float8_cross else "")
                        + gpu_step_note(ours),
                    )
                )
            ours.close()
            del ours
            free_cuda_memory()


def gpu_step_note(engine: OurEngine) -> str:
    """The step's GPU time beside its wall time (the table's column): the difference is the
    host's share of a step."""
    gpu_ms = engine.step_gpu_ms()
    return "" if gpu_ms is None else f", step {gpu_ms:.2f} ms on the GPU"


def clips_as_window(clips: Sequence[Clip]) -> NDArray[np.float32]:
    """30 s of real speech (clips end to end), the input of every forced-length window."""
    joined = np.concatenate([clip.audio for clip in clips])
    return np.ascontiguousarray(joined[: WINDOW_SECONDS * SAMPLE_RATE])


def warm_up(engine: OurEngine, clips: Sequence[Clip], concurrency: int) -> None:
    """Kernels, allocator and (batched engine) CUDA graphs of every batch size on the way."""
    closed_loop(partial(transcribe_text, engine), clips, 1, 1, 1e9)
    closed_loop(partial(transcribe_text, engine), clips, concurrency, concurrency, 1e9)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


HEADER = (
    f"{'model':<15}{'path':<28}{'batch':>6}{'audio s/s':>11}{'p50 s':>8}{'p95 s':>8}"
    f"{'WER':>7}{'step ms':>9}{'enc/peak':>9}{'GPU GiB':>9}{'reqs':>6}  note"
)


def format_row(row: Row) -> str:
    return (
        f"{row.model:<15}{row.path:<28}{row.batch:>6}{row.audio_s_per_s:>11.1f}"
        f"{row.p50_s:>8.3f}{row.p95_s:>8.3f}{_cell(row.wer, '.3f'):>7}"
        f"{_cell(row.step_ms, '.2f'):>9}{_cell(row.encoder_peak_fraction, '.0%'):>9}"
        f"{_cell(row.gpu_gib, '.2f'):>9}{row.requests:>6}  {row.note}"
    )


def find(rows: list[Row], model: str, path: str, batch: int) -> Row | None:
    for row in rows:
        if row.model == model and row.path == path and row.batch == batch:
            return row
    return None


@dataclass(frozen=True)
class Goal:
    text: str
    value: float | None
    target: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[self.met]
        value = "-" if self.value is None else f"{self.value:.3f}"
        comparison = ">=" if self.higher_is_better else "<="
        return f"{verdict:<13}{self.text}: {value} ({comparison} {self.target:g})"


def ratio(a: Row | None, b: Row | None) -> float | None:
    return None if a is None or b is None else a.audio_s_per_s / b.audio_s_per_s


def goal_clients(settings: Settings) -> int:
    """The HTTP row the throughput goal reads: 64 clients, or the most the run has."""
    return 64 if 64 in settings.clients else max(settings.clients)


def goals(bench: Bench, label: str) -> list[Goal]:
    s, rows, facts = bench.settings, bench.rows, bench.facts
    big = "tiny shape" if s.quick else "large-v3 shape"
    http_clients = goal_clients(s)
    hf_batch = 64 if 64 in s.hf_batches else max(s.hf_batches)
    http_tiny = find(rows, "tiny.en", "HTTP", http_clients)
    hf_tiny = find(rows, "tiny.en", HF_PATH, hf_batch)
    big_ours = find(rows, big, label, hf_batch)
    big_hf = find(rows, big, HF_PATH, hf_batch)
    wer_gap = (
        None
        if http_tiny is None or http_tiny.wer is None
        else http_tiny.wer - facts.get("tiny.en.sequential_wer", 0.0)
    )
    jfk_ratio = (
        facts["tiny.en.jfk_p50_ours"] / facts["tiny.en.jfk_p50_sequential"]
        if "tiny.en.jfk_p50_ours" in facts
        else None
    )
    clients_32 = 32 if 32 in s.clients else max(s.clients)
    return [
        Goal(
            f"tiny.en HTTP at {http_clients} clients / HF at batch {hf_batch}",
            ratio(http_tiny, hf_tiny),
            2.0,
        ),
        # The same goal with the input HF is handed: decoded audio, here 16 kHz PCM uploads,
        # so the server pays for HTTP and features but not for decoding Opus on the host's CPU.
        Goal(
            f"tiny.en HTTP at {http_clients} clients, WAV uploads / HF at batch {hf_batch}",
            ratio(find(rows, "tiny.en", WAV_PATH, http_clients), hf_tiny),
            2.0,
        ),
        Goal(
            f"tiny.en WER at HTTP {http_clients} clients minus sequential WER",
            wer_gap,
            0.01,
            higher_is_better=False,
        ),
        Goal(f"{big} batch {hf_batch}: ours / HF", ratio(big_ours, big_hf), 2.0),
        Goal(
            f"{big} batch {hf_batch}: decode step ms",
            None if big_ours is None else big_ours.step_ms,
            5.0,
            higher_is_better=False,
        ),
        Goal(
            f"{big}: encoder share of the bf16 peak (batch {hf_batch})",
            None if big_ours is None else big_ours.encoder_peak_fraction,
            0.5,
        ),
        Goal(
            "tiny.en jfk p50 single request: ours / sequential engine",
            jfk_ratio,
            1.10,
            higher_is_better=False,
        ),
        Goal(
            f"tiny.en HTTP throughput at {clients_32} clients / 1 client",
            ratio(find(rows, "tiny.en", "HTTP", clients_32), find(rows, "tiny.en", "HTTP", 1)),
            10.0,
        ),
    ]


def scaling(bench: Bench, label: str) -> list[str]:
    """Ratios with no target in issue 8: grouped admissions against admitting each window at
    once, the multi-GPU rows against one GPU at the same load, and float8 cross-attention
    keys and values against the model's dtype."""
    s, rows = bench.settings, bench.rows
    goal = goal_clients(s)
    pairs = [
        (
            f"tiny.en HTTP {goal} clients: admissions grouped / each admitted at once",
            find(rows, "tiny.en", "HTTP", goal),
            find(rows, "tiny.en", "HTTP, admitted at once", goal),
        ),
        (
            f"tiny.en HTTP {goal} clients: {s.api_processes} API processes / one process",
            find(rows, "tiny.en", "HTTP", goal),
            find(rows, "tiny.en", "HTTP, one process", goal),
        ),
    ]
    big = "tiny shape" if s.quick else "large-v3 shape"
    most, clients = max(s.batches), max(s.clients)
    pairs += (
        []
        if s.gpus < 2
        else [
            (
                f"{big} batch {most}: {s.gpus} GPUs / 1 GPU",
                find(rows, big, f"{label}, {s.gpus} GPUs", most),
                find(rows, big, label, most),
            ),
            (
                f"tiny.en HTTP {clients} clients: {s.gpus} GPUs / 1 GPU",
                find(rows, "tiny.en", f"HTTP, {s.gpus} GPUs", clients),
                find(rows, "tiny.en", "HTTP", clients),
            ),
        ]
    )
    pairs.append(
        (
            f"{big} batch {goal}: steps overlapped / {NOT_OVERLAPPED}",
            find(rows, big, label, goal),
            find(rows, big, f"{label}, {NOT_OVERLAPPED}", goal),
        )
    )
    for model, dtype in (("tiny.en", s.precision), (big, s.large_precision)):
        pairs.append(
            (
                f"{model} batch {goal}: float8 cross K/V / {dtype}",
                find(rows, model, label, goal),
                find(rows, model, f"{label}, {dtype} cross K/V", goal),
            )
        )
    lines = []
    for text, multi, single in pairs:
        value = ratio(multi, single)
        lines.append(f"{text}: {'-' if value is None else f'{value:.2f}x'}")
        if ("float8" in text or "overlapped" in text) and multi and single:
            lines.append(
                f"  decode step ms {multi.step_ms or 0:.2f} / {single.step_ms or 0:.2f}; "
                f"WER {multi.wer if multi.wer is not None else '-'} / "
                f"{single.wer if single.wer is not None else '-'}"
            )
    return lines


@contextmanager
def section(title: str) -> Iterator[None]:
    """A part of the run; one that fails is reported and the others still run (a lease is
    too short to lose every row to one broken part)."""
    started = time.perf_counter()
    print(f"\n== {title}", flush=True)
    try:
        yield
    except Exception:
        print(f"   FAILED: {title}", flush=True)
        traceback.print_exc()
    print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda (GPU 0 for one-GPU rows) or cpu")
    parser.add_argument("--precision", default="float16")
    parser.add_argument(
        "--large-precision",
        default="bfloat16",
        help="both sides of the large-shape rows (HF ran faster in bf16 than fp16 in issue 8)",
    )
    parser.add_argument("--tiny-dir", type=Path, help="tiny.en folder (default: the package)")
    parser.add_argument("--base-dir", type=Path, help="base folder (default: the packages)")
    parser.add_argument("--jfk", type=Path, help="jfk.flac (default: ../shared/audio)")
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base", "large-v3"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--hf-batches", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--base-clients", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--row-seconds", type=float, default=5.0, help="time budget per row")
    parser.add_argument(
        "--deadline", type=float, default=480.0, help="seconds after which rows are skipped"
    )
    parser.add_argument("--jfk-repeats", type=int, default=20)
    parser.add_argument("--forced-length", type=int, default=100)
    parser.add_argument("--gpus", type=int, default=2, help="GPUs for the multi-GPU rows")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU check")
    parser.add_argument(
        "--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server settings"
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["unquantised", "unpaced"],
        help="baseline rows to leave out when a lease is short: float16 cross K/V in-process, "
        "HTTP with each window admitted at once",
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="VOICEFLEET_API_PROCESSES of the HTTP rows; above 1, a one-process row at the "
        "goal's clients is the baseline",
    )
    parser.add_argument("--json", type=Path, help="write every row and fact here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.clients, args.hf_batches = [1, 2], [1, 2], [2]
        args.base_clients = [2]
        args.row_seconds, args.jfk_repeats, args.forced_length = 3.0, 2, 8
        args.large_precision = args.precision
        args.deadline = max(args.deadline, QUICK_DEADLINE_S)
        args.models = [m for m in args.models if m != "base"]
        args.gpus = 1
    return args


def run(args: argparse.Namespace) -> Bench:
    gpus = min(args.gpus, torch.cuda.device_count()) if args.device.startswith("cuda") else 1
    settings = Settings(
        args.device,
        args.precision,
        args.batches,
        args.clients,
        args.hf_batches,
        args.row_seconds,
        args.jfk_repeats,
        args.forced_length,
        max(gpus, 1),
        args.quick,
        args.deadline,
        args.large_precision,
        args.base_clients,
        {API_PROCESSES: str(args.api_processes)}
        | dict(item.split("=", 1) for item in args.server_env),
        tuple(args.skip),
    )
    factory = EngineFactory(settings.device, settings.precision, settings.server_env)
    with section("bf16 peak"):
        peak = bf16_peak_tflops(settings.device, 1024 if args.quick else 8192)
        print(f"   {peak:.1f} TFLOP/s (bf16 matmul, measured now)")
    bench = Bench(settings, factory, peak)
    bench.facts["bf16_peak_tflops"] = peak
    clips = load_corpus(args.jfk)
    if args.quick:
        clips = clips[:QUICK_CLIPS]
    print(f"   corpus: {len(clips)} clips, {sum(c.seconds for c in clips):.0f} s of speech")
    print(f"   our engine: {factory.description}")
    print(HEADER)
    models = {
        "tiny.en": lambda: resolve_model(str(args.tiny_dir) if args.tiny_dir else "tiny.en", None),
        "base": lambda: resolve_model(str(args.base_dir) if args.base_dir else "base", None),
    }
    # Ordered by what the goals need, so a run cut short by --deadline loses base first.
    if "tiny.en" in args.models:
        with section("tiny.en"):
            bench.real_model("tiny.en", models["tiny.en"](), clips)
    if "large-v3" in args.models:
        with section("large-v3 shape, random weights" if not args.quick else "tiny shape"):
            tokenizer_model = models["base"]() if not args.quick else models["tiny.en"]()
            bench.large_model(tokenizer_model, clips)
    if "base" in args.models:
        with section("base"):
            bench.real_model("base", models["base"](), clips)
    return bench


def report(bench: Bench, json_path: Path | None) -> None:
    print("\n" + HEADER)
    for row in bench.rows:
        print(format_row(row))
    print()
    for name, value in bench.facts.items():
        print(f"{name} = {value:.4f}")
    print("\nGoals (ratios from this run):")
    for goal in goals(bench, bench.factory.label):
        print("  " + goal.line())
    for line in scaling(bench, bench.factory.label):
        print("  " + line)
    if json_path is not None:
        json_path.write_text(
            json.dumps({"rows": [asdict(r) for r in bench.rows], "facts": bench.facts}, indent=1)
        )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    bench = run(args)
    report(bench, args.json)


if __name__ == "__main__":
    main()
