"""The batching loop of one device: admit windows, encode them together, step every sequence.

One thread per device owns the model replica, the slot cache and the decode step. Each turn
it drops the sequences of cancelled requests, admits waiting windows into free slots (fair
order, see scheduler.py) and encodes them in one batched encoder pass, then runs one decoder
step for every active sequence. A sequence whose window ends leaves at once (its slot is
refilled at the next turn); one that fails Whisper's quality checks goes back to the queue
at the next temperature, alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from voicefleet_runtime.engine.torch_whisper.batched.alignment import alignment_weights
from voicefleet_runtime.engine.torch_whisper.batched.cache import SlotCache
from voicefleet_runtime.engine.torch_whisper.batched.encoder import Encoder, compiled_encoder
from voicefleet_runtime.engine.torch_whisper.batched.requests import (
    RequestHandle,
    WindowJob,
    WindowOutcome,
)
from voicefleet_runtime.engine.torch_whisper.batched.scheduler import FairQueue, admission_due
from voicefleet_runtime.engine.torch_whisper.batched.step import (
    INPUT_COLUMNS,
    DecodeStep,
    RuleTables,
    StepResult,
)
from voicefleet_runtime.engine.torch_whisper.decoding import WindowDecoding
from voicefleet_runtime.engine.torch_whisper.engine import FallbackPolicy
from voicefleet_runtime.engine.torch_whisper.model import DecoderLayer, Whisper
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer

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


@dataclass
class ActiveRow:
    job: WindowJob
    forced: list[int]
    """Tokens fed before decoding starts: prompt, <|startoftranscript|>, language, task."""
    sot_index: int
    awaiting_language: bool
    timestamps: bool
    """Whether this window decodes timestamp tokens (0/1 in the step's input table)."""
    temperature: float
    fed: int = 0
    sampled: list[int] = field(default_factory=list)
    last_time: int = -1
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
        if self.device.type == "cuda":
            self._encoder_started = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            self._encoder_ended = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        self.rows: list[ActiveRow] = []
        self.queue = FairQueue(
            config.windows_per_request, reserve=min(config.windows_per_request, cache.slots // 4)
        )
        self.stats = LoopStats()
        self._condition = threading.Condition()
        self._cancelled: list[RequestHandle] = []
        self._admitted_at = time.monotonic()
        self._pending_encoder_timing = False
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
                        self._closed or self.rows or self._cancelled or self.queue.waiting_windows
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
                    if self.rows:
                        self._step()
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
            for request in failed.values():
                self.queue.forget(request)
                request.fail(error)

    def _drop_cancelled(self) -> None:
        for request in self._cancelled:
            self.queue.forget(request)
            slots = [i for i, row in enumerate(self.rows) if row.request.id == request.id]
            for slot in sorted(slots, reverse=True):
                self._emit("cancelled", self.rows[slot].job)
                self._remove(slot)
        self._cancelled.clear()

    def _remove(self, slot: int) -> None:
        last = len(self.rows) - 1
        if slot != last:
            self.cache.move(last, slot)
            self.rows[slot] = self.rows[last]
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
                self._collect_encoder_time()
                self._encoder_started.record()
            audio = self.encode(mel)
            if timing:
                self._encoder_ended.record()
                self._pending_encoder_timing = True
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

    def _collect_encoder_time(self) -> None:
        """Wait for the last encoder pass and add its GPU time, at the next step or pass (whose
        first copy to the GPU would wait for it anyway): a synchronize right after each pass
        kept the GPU idle while the host prepared the next admission."""
        if self._pending_encoder_timing:
            self._encoder_ended.synchronize()
            self.stats.encoder_gpu_seconds += (
                self._encoder_started.elapsed_time(self._encoder_ended) / 1000
            )
            self._pending_encoder_timing = False

    def _temperature(self, job: WindowJob) -> float:
        return job.request.options.temperature[job.temperature_index]

    def _step(self) -> None:
        # Wait for a pending encoder pass here, on the encoder's clock: the step's first copy
        # to the GPU would wait for it anyway, and its time is not the decoder's.
        waited = time.perf_counter()
        self._collect_encoder_time()
        started = time.perf_counter()
        self.stats.encoder_seconds += started - waited
        rows = self.rows
        forced_length = self.config.forced_length
        inputs: list[tuple[int, ...]] = []
        for row in rows:
            sampled, forced, count = row.sampled, row.forced, len(row.sampled)
            if row.fed < len(forced):
                token, position = forced[row.fed], row.fed
            else:
                token, position = sampled[-1], len(forced) + count - 1
            inputs.append(
                (
                    token,
                    position,
                    count,
                    sampled[-1] if count else -1,
                    sampled[-2] if count > 1 else -1,
                    row.last_time,
                    row.timestamps,
                    forced_length,
                )
            )
        table = np.array(inputs, dtype=np.int64).reshape(len(rows), INPUT_COLUMNS)
        temperatures = np.array([row.temperature for row in rows], dtype=np.float32)
        result = self.step_runner.run(table, temperatures)
        finished = [slot for slot, row in enumerate(rows) if self._advance(slot, row, result)]
        outcomes = [(slot, self._outcome(slot)) for slot in finished]
        for slot, outcome in sorted(outcomes, key=lambda item: item[0], reverse=True):
            job = rows[slot].job
            self._remove(slot)
            self._settle(job, outcome)
        stats = self.stats
        stats.steps += 1
        stats.batch_sizes[len(table)] = stats.batch_sizes.get(len(table), 0) + 1
        stats.step_seconds += time.perf_counter() - started

    def _advance(self, slot: int, row: ActiveRow, result: StepResult) -> bool:
        """Take one step's output for `row`; True when its window is decoded."""
        vocabulary = self.tokenizer.vocabulary
        if row.fed < len(row.forced):
            fed_index = row.fed
            row.fed += 1
            if fed_index == row.sot_index:
                row.no_speech_prob = result.no_speech_prob(slot)
                if row.awaiting_language:
                    self._language_detected(row, *result.language(slot))
            if row.fed < len(row.forced):
                return False
        token = result.token(slot)
        row.sum_logprob += result.logprob(slot)
        self.stats.tokens += 1
        if token == vocabulary.eot:
            return True
        row.sampled.append(token)
        if token >= vocabulary.timestamp_begin:
            row.last_time = token
        room = min(self.model.dims.n_text_ctx // 2, self.model.dims.n_text_ctx - len(row.forced))
        return len(row.sampled) >= room

    def _language_detected(self, row: ActiveRow, index: int, probability: float) -> None:
        codes = list(self.tokenizer.vocabulary.language_ids)
        request = row.request
        request.resolve_language(codes[index], probability)
        row.forced.extend(self._after_language(request)[1:])
        row.awaiting_language = False

    def _outcome(self, slot: int) -> WindowOutcome:
        row = self.rows[slot]
        decoding = WindowDecoding(
            tuple(row.sampled), row.sum_logprob, row.no_speech_prob, row.temperature
        )
        if not row.request.options.word_timestamps or self._needs_retry(row.job, decoding):
            return WindowOutcome(decoding)
        alignment = alignment_weights(
            self.model,
            self.cache,
            slot,
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
