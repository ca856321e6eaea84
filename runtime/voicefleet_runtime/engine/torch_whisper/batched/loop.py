"""The batching loop of one device: admit windows, encode them together, step every sequence.

One thread per device owns the model replica, the slot cache and the decode step. Each turn
it drops the sequences of cancelled requests, admits waiting windows into free slots (fair
order, see scheduler.py) and encodes them in one batched encoder pass, then runs one decoder
step for every active sequence. A sequence whose window ends leaves at once (its slot is
refilled at the next turn); one that fails Whisper's quality checks goes back to the queue
at the next temperature, alone.

Where the step runs on a GPU, the loop launches step N+1 before it reads step N's tokens
(the step feeds each sampled token to the next on the device, see step.py), so the host's
bookkeeping for N overlaps the GPU's work on N+1. The price is one wasted row-step: a
sequence that ended at N is stepped once more at N+1 and that output is dropped; and a
window that detects its language waits one step for it ("held").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from voicefleet_runtime.engine.torch_whisper.batched.alignment import alignment_weights
from voicefleet_runtime.engine.torch_whisper.batched.cache import SlotCache
from voicefleet_runtime.engine.torch_whisper.batched.encoder import (
    CapturedEncoder,
    Encoder,
    captured_encoder,
    compiled_encoder,
)
from voicefleet_runtime.engine.torch_whisper.batched.requests import (
    RequestHandle,
    WindowJob,
    WindowOutcome,
)
from voicefleet_runtime.engine.torch_whisper.batched.scheduler import FairQueue, admission_due
from voicefleet_runtime.engine.torch_whisper.batched.step import (
    DecodeStep,
    StepResult,
    timing_events,
)
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import INPUT_COLUMNS, RuleTables
from voicefleet_runtime.engine.torch_whisper.decoding import WindowDecoding
from voicefleet_runtime.engine.torch_whisper.engine import FallbackPolicy
from voicefleet_runtime.engine.torch_whisper.model import DecoderLayer, Whisper
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer
from voicefleet_runtime.settings import Switch, on_gpu_unless_off

logger = logging.getLogger("voicefleet.runtime.batching")


@dataclass(frozen=True)
class LoopEvent:
    """What the loop did, for tests and tracing: admitted, finished, requeued, cancelled."""

    kind: str
    request: int
    window: int
    step: int
    temperature: float = 0.0


EventSink = Callable[[LoopEvent], None]


@dataclass
class LoopStats:
    steps: int = 0
    step_seconds: float = 0.0
    tokens: int = 0
    encoder_windows: int = 0
    encoder_passes: int = 0
    encoder_seconds: float = 0.0
    """Wall time of admission: features to the GPU, encoder, cross-attention keys and values."""
    encoder_gpu_seconds: float = 0.0
    """GPU time of the encoder passes alone (CUDA events; 0 on CPU)."""
    windows_finished: int = 0
    windows_requeued: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    """How many steps ran at each batch size (active sequences, not the padded bucket)."""


@dataclass(eq=False)
class ActiveRow:
    job: WindowJob
    slot: int
    forced: list[int]
    """Tokens fed before decoding starts: prompt, <|startoftranscript|>, language, task."""
    sot_index: int
    awaiting_language: bool
    timestamps: bool
    """Whether this window decodes timestamp tokens (0/1 in the step's input table)."""
    temperature: float
    launched: int = 0
    """Steps launched that fed this row a new position (so, its next position)."""
    fed: int = 0
    """Of those, the steps whose outputs were read while it was fed forced tokens."""
    done: bool = False
    """Its window ended or was cancelled: outputs of steps still in flight are dropped."""
    sampled: list[int] = field(default_factory=list)
    sum_logprob: float = 0.0
    no_speech_prob: float = 0.0

    @property
    def request(self) -> RequestHandle:
        return self.job.request


@dataclass(frozen=True)
class LoopConfig:
    windows_per_request: int
    encoder_batch: int
    forced_length: int
    admission_batch: int
    admission_wait_s: float
    compile_encoder: bool = False
    overlap_steps: Switch = "auto"
    """Launch step N+1 before reading step N: on, off, or auto = on where the step runs on a
    GPU (on a CPU the host computes the step itself, so nothing overlaps)."""


@dataclass(frozen=True)
class Launched:
    """A step in flight: its ticket, and the rows it stepped in slot order (None: held)."""

    ticket: int
    rows: list[ActiveRow | None]


class DeviceLoop:
    def __init__(
        self,
        model: Whisper,
        tokenizer: WhisperTokenizer,
        cache: SlotCache,
        config: LoopConfig,
        use_graphs: bool,
        policy: FallbackPolicy | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache
        self.config = config
        self.policy = policy or FallbackPolicy()
        self.on_event = on_event
        self.device = cache.self_keys.device
        self.dtype = cache.self_keys.dtype
        vocabulary = tokenizer.vocabulary
        self.step_runner = DecodeStep(
            model, RuleTables(vocabulary, model.dims.n_vocab, self.device), cache, use_graphs
        )
        self.graphs = self.step_runner.capture()
        self.encode: Encoder = (
            compiled_encoder(model.encoder, model.dims.n_mels, self.dtype)
            if config.compile_encoder
            else model.encoder
        )
        if self.step_runner.use_graphs:
            self.encode = captured_encoder(
                self.encode, model.dims, self.dtype, self.device, config.encoder_batch
            )
            if isinstance(self.encode, CapturedEncoder):
                self.graphs += self.encode.graphs
        self._encoder_timings: deque[tuple[torch.cuda.Event, torch.cuda.Event]] = deque()
        """(started, ended) of encoder passes whose GPU time is not yet counted."""
        self.rows: list[ActiveRow] = []
        self._in_flight: Launched | None = None
        self.queue = FairQueue(
            config.windows_per_request, reserve=min(config.windows_per_request, cache.slots // 4)
        )
        self.overlap_steps = on_gpu_unless_off(config.overlap_steps, str(self.device))
        self.stats = LoopStats()
        self._condition = threading.Condition()
        self._cancelled: list[RequestHandle] = []
        self._admitted_at = time.monotonic()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name=f"voicefleet-batching-{self.device}", daemon=True
        )
        self._thread.start()

    # ---- called from request threads -------------------------------------------------
    def submit(self, request: RequestHandle) -> None:
        with self._condition:
            self.queue.add(request)
            self._condition.notify()

    def cancel(self, request: RequestHandle) -> None:
        with request.condition:
            if request.finished:
                return
            request.cancelled = True
            request.condition.notify_all()
        with self._condition:
            self._cancelled.append(request)
            self._condition.notify()

    def load(self) -> int:
        """Active plus waiting windows: what least-loaded placement compares."""
        with self._condition:
            return len(self.rows) + self.queue.waiting_windows

    def active_sequences(self) -> int:
        return len(self.rows)

    def waiting(self) -> tuple[int, int]:
        """(requests with no window active yet, windows waiting)."""
        with self._condition:
            return self.queue.waiting_requests(self._active_count), self.queue.waiting_windows

    def reset_stats(self) -> None:
        self.stats = LoopStats()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=30)

    # ---- the loop thread ----------------------------------------------------------------
    def _active_count(self, request_id: int) -> int:
        return sum(1 for row in self.rows if row.request.id == request_id)

    def _emit(self, kind: str, job: WindowJob, temperature: float = 0.0) -> None:
        if self.on_event is not None:
            self.on_event(LoopEvent(kind, job.request.id, job.index, self.stats.steps, temperature))

    def _run(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        with torch.inference_mode():
            while True:
                with self._condition:
                    while not (
                        self._closed
                        or self.rows
                        or self._in_flight
                        or self._cancelled
                        or self.queue.waiting_windows
                    ):
                        self._condition.wait()
                    if self._closed:
                        break
                    self._drop_cancelled()
                    free = self.cache.slots - len(self.rows)
                    due = admission_due(
                        self.queue.waiting_windows,
                        free,
                        len(self.rows),
                        time.monotonic() - self._admitted_at,
                        self.config.admission_batch,
                        self.config.admission_wait_s,
                    )
                    admitted = self.queue.take(free, self._active_count) if due else []
                try:
                    if admitted:
                        self._admit(admitted)
                    self._turn()
                except Exception as exc:
                    logger.exception("the batching loop failed a step")
                    self._fail_everything(exc)
        self._fail_everything(RuntimeError("the engine was closed"))

    def _fail_everything(self, error: BaseException) -> None:
        with self._condition:
            failed = {row.request.id: row.request for row in self.rows}
            for request in self.queue.requests():
                failed[request.id] = request
            self.rows.clear()
            self._in_flight = None
            for request in failed.values():
                self.queue.forget(request)
                request.fail(error)

    def _drop_cancelled(self) -> None:
        for request in self._cancelled:
            self.queue.forget(request)
            for row in [row for row in self.rows if row.request.id == request.id]:
                self._emit("cancelled", row.job)
                self._remove(row)
        self._cancelled.clear()

    def _remove(self, row: ActiveRow) -> None:
        """Free `row`'s slot: the last row moves into it, so the active rows stay 0..n-1."""
        row.done = True
        slot, last = row.slot, len(self.rows) - 1
        if slot != last:
            self.cache.move(last, slot)
            self.step_runner.move(last, slot)
            self.rows[slot] = self.rows[last]
            self.rows[slot].slot = slot
        self.rows.pop()

    def _initial_tokens(self, job: WindowJob) -> tuple[list[int], int, bool]:
        """(tokens to feed, index of <|startoftranscript|> in them, language still unknown)."""
        request = job.request
        before = request.initial_tokens_before_sot
        if request.language is None:
            return [*before, self.tokenizer.vocabulary.sot], len(before), True
        return [*before, *self._after_language(request)], len(before), False

    def _after_language(self, request: RequestHandle) -> list[int]:
        tokens = self.tokenizer.sot_sequence(request.language, request.options.task)
        if not self._timestamps(request):
            tokens.append(self.tokenizer.vocabulary.no_timestamps)
        return tokens

    def _timestamps(self, request: RequestHandle) -> bool:
        options = request.options
        return self.config.forced_length == 0 and (
            options.segment_timestamps or options.word_timestamps
        )

    def _admit(self, jobs: list[WindowJob]) -> None:
        started = time.perf_counter()
        self._admitted_at = time.monotonic()
        batch = self.config.encoder_batch
        timing = self.device.type == "cuda"
        for first in range(0, len(jobs), batch):
            chunk = jobs[first : first + batch]
            mel = torch.stack([job.features.to(self.device) for job in chunk]).to(dtype=self.dtype)
            if timing:
                started_pass, ended_pass = timing_events()
                started_pass.record()
            audio = self.encode(mel)
            if timing:
                ended_pass.record()
                self._encoder_timings.append((started_pass, ended_pass))
            base = len(self.rows)
            layers: list[DecoderLayer] = list(self.model.decoder.layers)  # type: ignore[arg-type]
            for index, layer in enumerate(layers):
                self.cache.write_cross(index, base, *layer.attention.project_audio(audio))
            for job in chunk:
                forced, sot_index, awaiting = self._initial_tokens(job)
                job.attempts += 1
                self.rows.append(
                    ActiveRow(
                        job,
                        len(self.rows),
                        forced,
                        sot_index,
                        awaiting,
                        timestamps=self._timestamps(job.request),
                        temperature=self._temperature(job),
                    )
                )
                self._emit("admitted", job)
            self.stats.encoder_passes += 1
        self.stats.encoder_windows += len(jobs)
        self.stats.encoder_seconds += time.perf_counter() - started

    def _wait_for_encoder(self) -> None:
        """Wait for the encoder passes just queued and count their GPU time. Here, before the
        next step's clock starts, so that the decoder's wall time does not carry them (the
        step would wait for them anyway); not after each pass, which idled the GPU while the
        host prepared the next."""
        timings = self._encoder_timings
        if timings:
            timings[-1][1].synchronize()
        while timings:
            started, ended = timings.popleft()
            self.stats.encoder_gpu_seconds += started.elapsed_time(ended) / 1000

    def _temperature(self, job: WindowJob) -> float:
        return job.request.options.temperature[job.temperature_index]

    def _turn(self) -> None:
        """Launch a step for the active rows and read the one before it (overlapped), or
        this one (not)."""
        waited = time.perf_counter()
        self._wait_for_encoder()
        started = time.perf_counter()
        self.stats.encoder_seconds += started - waited
        launched = self._launch() if self.rows else None
        if self.overlap_steps:
            ready, self._in_flight = self._in_flight, launched
        else:
            ready = launched
        if ready is not None:
            self._process(ready)
        self.stats.step_seconds += time.perf_counter() - started

    def _launch(self) -> Launched:
        """Start a step: patch the rows the device cannot advance on its own (those fed
        forced tokens, and those held while their language is being read)."""
        forced_length = self.config.forced_length
        patches: list[tuple[int, ...]] = []
        stepped: list[ActiveRow | None] = []
        context_needed = 1
        for slot, row in enumerate(self.rows):
            forced, at = row.forced, row.launched
            held = row.awaiting_language and at == len(forced)
            if held:
                # Its <|startoftranscript|> step is in flight: feed it again, in place.
                at -= 1
            if at < len(forced):
                # The slot, then step_tables' input columns: token, position, count of sampled
                # tokens, the last two and the last timestamp (none yet), the row's switches.
                patches.append((slot, forced[at], at, 0, -1, -1, -1, row.timestamps, forced_length))
            stepped.append(None if held else row)
            if not held:
                row.launched += 1
            context_needed = max(context_needed, at + 1)
        table = np.array(patches, dtype=np.int64).reshape(len(patches), 1 + INPUT_COLUMNS)
        temperatures = np.array([row.temperature for row in self.rows], dtype=np.float32)
        ticket = self.step_runner.launch(len(self.rows), context_needed, table, temperatures)
        stats = self.stats
        stats.steps += 1
        stats.batch_sizes[len(stepped)] = stats.batch_sizes.get(len(stepped), 0) + 1
        return Launched(ticket, stepped)

    def _process(self, launched: Launched) -> None:
        """Read a step's outputs into its rows; settle the windows that ended."""
        result = self.step_runner.collect(launched.ticket)
        finished = [
            row
            for index, row in enumerate(launched.rows)
            if row is not None and not row.done and self._advance(index, row, result)
        ]
        # From the last slot down: a finished row is never moved into a slot only to leave
        # it (when a whole batch ends together, nothing moves at all).
        for row in sorted(finished, key=lambda row: row.slot, reverse=True):
            outcome = self._outcome(row)
            self._remove(row)
            self._settle(row.job, outcome)

    def _advance(self, index: int, row: ActiveRow, result: StepResult) -> bool:
        """Take row `index` of a step's output for `row`; True when its window is decoded."""
        vocabulary = self.tokenizer.vocabulary
        if row.fed < len(row.forced):
            fed_index = row.fed
            row.fed += 1
            if fed_index == row.sot_index:
                row.no_speech_prob = result.no_speech_prob(index)
                if row.awaiting_language:
                    self._language_detected(row, *result.language(index))
            if row.fed < len(row.forced):
                return False
        token = result.token(index)
        row.sum_logprob += result.logprob(index)
        self.stats.tokens += 1
        if token == vocabulary.eot:
            return True
        row.sampled.append(token)
        room = min(self.model.dims.n_text_ctx // 2, self.model.dims.n_text_ctx - len(row.forced))
        return len(row.sampled) >= room

    def _language_detected(self, row: ActiveRow, index: int, probability: float) -> None:
        codes = list(self.tokenizer.vocabulary.language_ids)
        request = row.request
        request.resolve_language(codes[index], probability)
        row.forced.extend(self._after_language(request)[1:])
        row.awaiting_language = False

    def _outcome(self, row: ActiveRow) -> WindowOutcome:
        decoding = WindowDecoding(
            tuple(row.sampled), row.sum_logprob, row.no_speech_prob, row.temperature
        )
        if not row.request.options.word_timestamps or self._needs_retry(row.job, decoding):
            return WindowOutcome(decoding)
        alignment = alignment_weights(
            self.model,
            self.cache,
            row.slot,
            self.tokenizer,
            row.request.language or "en",
            row.request.options.task,
            decoding.tokens,
            row.job.frames,
        )
        return WindowOutcome(decoding, alignment)

    def _needs_retry(self, job: WindowJob, decoding: WindowDecoding) -> bool:
        if job.temperature_index + 1 >= len(job.request.options.temperature):
            return False
        text = self.tokenizer.decode(decoding.tokens)
        return self._policy_for(job).needs_fallback(decoding, text)

    def _policy_for(self, job: WindowJob) -> FallbackPolicy:
        return job.request.policy if job.request.policy is not None else self.policy

    def _settle(self, job: WindowJob, outcome: WindowOutcome) -> None:
        if self._needs_retry(job, outcome.decoding):
            self._emit("requeued", job, outcome.decoding.temperature)
            self.stats.windows_requeued += 1
            job.temperature_index += 1
            with self._condition:
                self.queue.requeue(job)
            return
        self._emit("finished", job, outcome.decoding.temperature)
        self.stats.windows_finished += 1
        job.request.deliver(job.index, outcome)
        if job.request.settled == len(job.request.windows):
            with self._condition:
                self.queue.forget(job.request)
