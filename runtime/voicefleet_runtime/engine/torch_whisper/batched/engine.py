"""`BatchedWhisperEngine`: the torch engine behind a continuous batching loop per device.

Any number of threads call `transcribe` at once; their requests are cut into windows that
share each device's loop (loop.py), so concurrent requests decode as one GPU batch. It is a
`SpeechEngine` like the others: the server does not know it batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import (
    SAMPLE_RATE,
    BatchStats,
    DecodeOptions,
    EngineError,
    Segment,
    TranscriptionInfo,
    refuse_what_the_model_lacks,
)
from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper.batched.cache import SlotCache, slots_for_budget
from voicefleet_runtime.engine.torch_whisper.batched.float8_choice import float8_cross_for
from voicefleet_runtime.engine.torch_whisper.batched.loop import (
    DeviceLoop,
    EventSink,
    LoopConfig,
)
from voicefleet_runtime.engine.torch_whisper.batched.requests import (
    RequestCancelled,
    RequestHandle,
    WindowJob,
)
from voicefleet_runtime.engine.torch_whisper.batched.transcript import window_segments
from voicefleet_runtime.engine.torch_whisper.batched.windows import window_spans
from voicefleet_runtime.engine.torch_whisper.ct2_weights import load_ct2_model
from voicefleet_runtime.engine.torch_whisper.engine import FallbackPolicy
from voicefleet_runtime.engine.torch_whisper.features import (
    SECONDS_PER_FRAME,
    LogMelExtractor,
    pad_or_trim_frames,
)
from voicefleet_runtime.engine.torch_whisper.identity import TorchEngineIdentity
from voicefleet_runtime.engine.torch_whisper.model import (
    Whisper,
    WhisperDimensions,
    build_whisper,
    random_whisper,
)
from voicefleet_runtime.engine.torch_whisper.precision import (
    TorchPlacement,
    resolve_torch_placement,
)
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer
from voicefleet_runtime.settings import Switch

POLICY_OPTIONS = ("compression_ratio_threshold", "log_prob_threshold", "no_speech_threshold")
"""Per-request quality thresholds a caller may set in `DecodeOptions.extra` (faster-whisper's
names for the same checks)."""


@dataclass(frozen=True)
class BatchingConfig:
    max_sequences: int = 64
    """Decoder rows (slots) per device: the largest decode batch."""
    memory_gib: float = 4.0
    """Key/value cache budget per device; the slots are what fits, at most max_sequences."""
    windows_per_request: int = 8
    """Windows one request may hold in the active set while others wait (fairness)."""
    encoder_batch: int = 16
    """Windows per batched encoder pass."""
    admission_batch: int = 8
    admission_wait_s: float = 0.02
    """While sequences decode, waiting windows are admitted once `admission_batch` wait or
    `admission_wait_s` passed (scheduler.admission_due): admitting each arrival at once spent
    42% of a served GPU loop's time in encoder passes (bench/server_profile.py)."""
    cuda_graphs: bool = True
    """Capture the decode step as CUDA graphs (CUDA only)."""
    compile_encoder: bool = False
    """torch.compile the encoder at load (batched/encoder.py)."""
    float8_cross_attention: Switch = "off"
    """Store cross-attention keys and values as float8 (float8_choice.float8_cross_for says
    where)."""
    overlap_steps: Switch = "auto"
    """Launch each decode step before reading the last one's tokens (loop.py; auto: GPUs)."""
    forced_length: int = 0
    """Benchmarks: decode exactly this many tokens per window, untimed (0: off)."""


def visible_devices(device: str) -> list[torch.device]:
    """`cuda` means every visible GPU (one loop each); `cuda:N` one; `cpu` the CPU."""
    if device.startswith("cuda:"):
        return [torch.device(device)]
    if device == "cuda":
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [torch.device(device)]


class BatchedSegments(Iterator[Segment]):
    """A request's segments in order, each window's as soon as it is decoded.

    `close()` (or dropping the iterator) cancels the rest: the request's sequences leave the
    batch at the loop's next step and their slots are free for others.
    """

    def __init__(
        self,
        engine: BatchedWhisperEngine,
        loop: DeviceLoop,
        request: RequestHandle,
        duration: float,
    ) -> None:
        self._engine = engine
        self._loop = loop
        self._request = request
        self._duration = duration
        self._next_window = 0
        self._next_id = 0
        self._ready: deque[Segment] = deque()
        self._closed = False

    def __next__(self) -> Segment:
        while not self._ready:
            if self._closed or self._next_window >= len(self._request.windows):
                self._closed = True
                raise StopIteration
            try:
                outcome = self._request.wait_result(self._next_window)
            except RequestCancelled:
                self._closed = True
                raise StopIteration from None
            job = self._request.windows[self._next_window]
            segments = window_segments(
                self._engine.tokenizer,
                self._engine.policy_for(self._request),
                job,
                outcome,
                self._request.language or "en",
                self._next_id,
                self._duration,
            )
            self._next_id += len(segments)
            self._ready.extend(segments)
            self._next_window += 1
        return self._ready.popleft()

    def close(self) -> None:
        self._ready.clear()
        if not self._closed:
            self._closed = True
            self._loop.cancel(self._request)

    def __del__(self) -> None:
        self.close()


class BatchedWhisperEngine(TorchEngineIdentity):
    """Whisper in torch with continuous batching across requests, one loop per device."""

    CAPABILITIES: ClassVar[EngineCapabilities] = EngineCapabilities(vad=True, word_timestamps=True)

    def __init__(
        self,
        replicas: list[Whisper],
        tokenizer: WhisperTokenizer,
        name: str,
        placement: TorchPlacement,
        config: BatchingConfig,
        policy: FallbackPolicy | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        super().__init__(name, placement, tokenizer)
        self.policy = policy or FallbackPolicy()
        self.config = config
        dims = replicas[0].dims
        self.dims = dims
        loop_config = LoopConfig(
            config.windows_per_request,
            config.encoder_batch,
            config.forced_length,
            config.admission_batch,
            config.admission_wait_s,
            config.compile_encoder,
            config.overlap_steps,
        )
        self._loops: list[DeviceLoop] = []
        self._features: dict[torch.device, LogMelExtractor] = {}
        for model in replicas:
            device = model.decoder.embeddings.weight.device
            float8 = float8_cross_for(config.float8_cross_attention, device, placement.dtype)
            slots = slots_for_budget(
                dims, placement.dtype, config.memory_gib, config.max_sequences, float8
            )
            cache = SlotCache.allocate(dims, slots, device, placement.dtype, float8)
            self._loops.append(
                DeviceLoop(
                    model, tokenizer, cache, loop_config, config.cuda_graphs, self.policy, on_event
                )
            )
            self._features[device] = LogMelExtractor(dims.n_mels, device)

    @classmethod
    def load(
        cls,
        model: ResolvedModel,
        device: str = "auto",
        precision: str = "auto",
        config: BatchingConfig | None = None,
        cpu_threads: int = 0,
        on_event: EventSink | None = None,
    ) -> BatchedWhisperEngine:
        kind = "cuda" if device.startswith("cuda") else device
        placement = resolve_torch_placement(kind, precision)
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        weights = load_ct2_model(model.path / "model.bin")
        replicas = [
            build_whisper(weights, target, placement.dtype)
            for target in visible_devices(placement.device if device == "auto" else device)
        ]
        tokenizer = WhisperTokenizer.from_model_folder(model.path, replicas[0].dims.is_multilingual)
        return cls(
            replicas, tokenizer, model.name, placement, config or BatchingConfig(), None, on_event
        )

    @classmethod
    def random(
        cls,
        dims: WhisperDimensions,
        tokenizer_model: ResolvedModel,
        device: str = "cuda",
        precision: str = "auto",
        config: BatchingConfig | None = None,
        seed: int = 0,
        on_event: EventSink | None = None,
    ) -> BatchedWhisperEngine:
        """A model of shape `dims` with random weights (benchmarks of sizes not at hand);
        `tokenizer_model` lends its special tokens. Pair it with `forced_length`."""
        placement = resolve_torch_placement(
            "cuda" if device.startswith("cuda") else device, precision
        )
        replicas = [
            random_whisper(dims, target, placement.dtype, seed)
            for target in visible_devices(device)
        ]
        tokenizer = WhisperTokenizer.from_model_folder(tokenizer_model.path, dims.is_multilingual)
        name = f"random-{dims.n_text_layer}x{dims.n_text_state}"
        return cls(replicas, tokenizer, name, placement, config or BatchingConfig(), None, on_event)

    @property
    def loops(self) -> tuple[DeviceLoop, ...]:
        return tuple(self._loops)

    @property
    def slots(self) -> int:
        return sum(loop.cache.slots for loop in self._loops)

    def check(self, options: DecodeOptions) -> None:
        refuse_what_the_model_lacks(options, self)
        if not options.temperature:
            raise EngineError("at least one temperature is needed", param="temperature")

    def policy_for(self, request: RequestHandle) -> FallbackPolicy:
        return request.policy if request.policy is not None else self.policy

    def _request_policy(self, options: DecodeOptions) -> FallbackPolicy | None:
        chosen = {key: float(options.extra[key]) for key in POLICY_OPTIONS if key in options.extra}  # type: ignore[arg-type]
        return replace(self.policy, **chosen) if chosen else None

    def _prefix(self, options: DecodeOptions) -> list[int]:
        """<|startofprev|> with hotwords and prompt, as the sequential engine conditions."""
        encode = self.tokenizer.encode
        hotwords = encode(" " + options.hotwords.strip()) if options.hotwords else []
        prompt = encode(" " + options.prompt.strip()) if options.prompt else []
        room = self.dims.n_text_ctx // 2 - 1
        previous = hotwords + prompt[-max(room - len(hotwords), 0) :] if prompt else hotwords
        return [self.tokenizer.vocabulary.sot_prev, *previous] if previous else []

    def transcribe(
        self, audio: NDArray[np.float32], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        self.check(options)
        duration = audio.shape[0] / SAMPLE_RATE
        loop = min(self._loops, key=lambda candidate: candidate.load())
        samples = np.ascontiguousarray(audio, dtype=np.float32)
        with torch.inference_mode():
            features = self._features[loop.device](samples)
        content_frames = features.shape[-1] - 1
        spans = window_spans(samples, content_frames, options.vad_filter)
        if not self.multilingual:
            language: str | None = "en"
        else:
            language = options.language
        request = RequestHandle(
            options, self._prefix(options), language, policy=self._request_policy(options)
        )
        # A long request's windows wait on the host, so the GPU holds only what the batch
        # works on; a short one's (admitted at once anyway) stay where they were computed.
        long_request = len(spans) > self.config.windows_per_request
        storage = torch.device("cpu") if long_request else loop.device
        request.windows = [
            WindowJob(
                request,
                index,
                start,
                frames,
                pad_or_trim_frames(features[:, start : start + frames]).to(storage, loop.dtype),
            )
            for index, (start, frames) in enumerate(spans)
        ]
        segments = BatchedSegments(self, loop, request, content_frames * SECONDS_PER_FRAME)
        if not spans:
            return TranscriptionInfo(language or "en", 1.0, duration, 0), iter(())
        loop.submit(request)
        try:
            detected, probability = request.wait_language()
        except BaseException:
            segments.close()
            raise
        return TranscriptionInfo(detected, probability, duration, len(spans)), segments

    def batch_stats(self) -> BatchStats:
        """Summed over the device loops, for the runtime's metrics."""
        waiting_requests = waiting_windows = active = 0
        steps = tokens = 0
        step_seconds = 0.0
        sizes: dict[int, int] = {}
        for loop in self._loops:
            requests, windows = loop.waiting()
            waiting_requests += requests
            waiting_windows += windows
            active += loop.active_sequences()
            stats = loop.stats
            steps += stats.steps
            tokens += stats.tokens
            step_seconds += stats.step_seconds
            for size, count in stats.batch_sizes.items():
                sizes[size] = sizes.get(size, 0) + count
        return BatchStats(
            active_sequences=active,
            waiting_requests=waiting_requests,
            waiting_windows=waiting_windows,
            slots=self.slots,
            steps=steps,
            tokens=tokens,
            step_seconds=step_seconds,
            step_batch_sizes=sizes,
        )

    def stats(self) -> dict[str, Any]:
        """Everything the loops counted, summed over devices (benchmarks read this)."""
        totals: dict[str, Any] = {}
        batch = self.batch_stats()
        encoder_seconds = sum(loop.stats.encoder_seconds for loop in self._loops)
        totals.update(
            devices=len(self._loops),
            slots=batch.slots,
            cuda_graphs=sum(loop.graphs for loop in self._loops),
            steps=batch.steps,
            tokens=batch.tokens,
            decode_seconds=batch.step_seconds,
            step_ms=1000 * batch.step_seconds / batch.steps if batch.steps else 0.0,
            step_gpu_ms=1000
            * sum(loop.step_runner.gpu_seconds for loop in self._loops)
            / max(batch.steps, 1),
            encoder_windows=sum(loop.stats.encoder_windows for loop in self._loops),
            encoder_passes=sum(loop.stats.encoder_passes for loop in self._loops),
            encoder_seconds=encoder_seconds,
            encoder_gpu_seconds=sum(loop.stats.encoder_gpu_seconds for loop in self._loops),
            windows_finished=sum(loop.stats.windows_finished for loop in self._loops),
            windows_requeued=sum(loop.stats.windows_requeued for loop in self._loops),
            batch_histogram=dict(sorted(batch.step_batch_sizes.items())),
        )
        return totals

    def reset_stats(self) -> None:
        for loop in self._loops:
            loop.reset_stats()
            loop.step_runner.gpu_seconds = 0.0

    def close(self) -> None:
        for loop in self._loops:
            loop.close()
