"""The faster-whisper (CTranslate2) engine: sequential decoding, batched for long audio."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import (
    SAMPLE_RATE,
    DecodeOptions,
    Segment,
    TranscriptionInfo,
    Word,
    plain_text_encoding,
    refuse_what_the_model_lacks,
)
from voicefleet_runtime.engine.batching import BatchedMode, BatchingPolicy, batching_policy
from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.precision import resolve_placement
from voicefleet_runtime.engine.support import ENGINE_CAPABILITIES


def _convert_words(words: Iterable[Any] | None) -> tuple[Word, ...]:
    if not words:
        return ()
    return tuple(
        Word(start=w.start, end=w.end, word=w.word, probability=w.probability) for w in words
    )


def _convert_segments(segments: Iterator[Any]) -> Iterator[Segment]:
    """Renumber from 0: the batched pipeline numbers per chunk, clients expect a sequence.
    Closing this generator closes faster-whisper's, which stops decoding windows."""
    try:
        for index, segment in enumerate(segments):
            yield Segment(
                id=index,
                start=float(segment.start),
                end=float(segment.end),
                text=segment.text,
                tokens=tuple(segment.tokens or ()),
                avg_logprob=float(segment.avg_logprob),
                compression_ratio=float(segment.compression_ratio),
                no_speech_prob=float(segment.no_speech_prob),
                temperature=float(segment.temperature or 0.0),
                words=_convert_words(segment.words),
            )
    finally:
        close = getattr(segments, "close", None)
        if close is not None:
            close()


class FasterWhisperEngine:
    """A loaded WhisperModel; thread-safe, so several requests may decode at once."""

    CAPABILITIES: ClassVar[EngineCapabilities] = ENGINE_CAPABILITIES["faster-whisper"]

    def __init__(
        self,
        model: Any,
        resolved: ResolvedModel,
        device: str,
        compute_type: str,
        batching: BatchingPolicy,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline

        # faster-whisper encodes prompt and hotwords itself with this tokenizer: make it read
        # "<|endoftext|>" in user text as text, never as the control token.
        plain_text_encoding(model.hf_tokenizer)
        self._model = model
        self._batched = BatchedInferencePipeline(model=model)
        self._resolved = resolved
        self._device = device
        self._compute_type = compute_type
        self._batching = batching
        self._languages = frozenset(model.supported_languages)

    @classmethod
    def load(
        cls,
        model: ResolvedModel,
        *,
        device: str = "auto",
        precision: str = "auto",
        cpu_threads: int = 0,
        num_workers: int = 1,
        batched: BatchedMode = "auto",
        batch_size: int = 8,
        batched_min_audio_seconds: float = 60.0,
    ) -> FasterWhisperEngine:
        from faster_whisper import WhisperModel

        placement = resolve_placement(device, precision)
        whisper = WhisperModel(
            str(model.path),
            device=placement.device,
            compute_type=placement.compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        return cls(
            whisper,
            model,
            placement.device,
            placement.compute_type,
            batching_policy(batched, placement.device, batch_size, batched_min_audio_seconds),
        )

    @property
    def backend(self) -> str:
        return "faster-whisper"

    @property
    def model_id(self) -> str:
        return self._resolved.name

    @property
    def device(self) -> str:
        return self._device

    @property
    def compute_type(self) -> str:
        return self._compute_type

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    @property
    def languages(self) -> frozenset[str]:
        return self._languages

    @property
    def capabilities(self) -> EngineCapabilities:
        return self.CAPABILITIES

    def check(self, options: DecodeOptions) -> None:
        refuse_what_the_model_lacks(options, self)

    def transcribe(
        self, audio: NDArray[np.float32], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        self.check(options)
        duration = audio.shape[0] / SAMPLE_RATE
        common: dict[str, Any] = {
            "language": options.language,
            "task": options.task,
            "beam_size": options.beam_size,
            "initial_prompt": options.prompt or None,
            "temperature": list(options.temperature),
            "word_timestamps": options.word_timestamps,
            "hotwords": options.hotwords,
        }
        common.update(options.extra)
        if self._batching.applies_to(duration):
            # The batched pipeline cuts the audio into chunks at speech pauses, so VAD is
            # how it segments: it is always on here whatever vad_filter says.
            segments, info = self._batched.transcribe(
                audio,
                vad_filter=True,
                batch_size=self._batching.batch_size,
                without_timestamps=not options.segment_timestamps,
                **common,
            )
            batch_size = self._batching.batch_size
        else:
            segments, info = self._model.transcribe(audio, vad_filter=options.vad_filter, **common)
            batch_size = 1
        return (
            TranscriptionInfo(
                language=info.language,
                language_probability=float(info.language_probability),
                duration=duration,
                batch_size=batch_size,
            ),
            _convert_segments(segments),
        )
