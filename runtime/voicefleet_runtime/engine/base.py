"""The contract between the HTTP layer and a speech engine.

The server only ever sees these types, so a backend can be swapped (faster-whisper,
PyTorch) without touching request handling, formats or metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.errors import quote_input

SAMPLE_RATE = 16_000
"""Every engine takes mono float32 PCM at this rate; decoding resamples to it."""
PCM16_SCALE = 1.0 / 32768.0
"""Signed 16-bit samples (what decoding yields) to [-1, 1), as faster-whisper's decode_audio
scales."""

Task = Literal["transcribe", "translate"]


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class TranscriptionInfo:
    language: str
    language_probability: float
    duration: float
    """Seconds of audio given to the engine (before any VAD trimming)."""
    batch_size: int = 1
    """Chunks decoded per engine call: 1 for sequential decoding, more when batched."""


@dataclass(frozen=True)
class DecodeOptions:
    task: Task = "transcribe"
    language: str | None = None
    """ISO 639-1 code; None lets the model detect it."""
    prompt: str | None = None
    temperature: tuple[float, ...] = (0.0,)
    """Fallback ladder: the next temperature is tried when a decode looks degenerate."""
    word_timestamps: bool = False
    segment_timestamps: bool = True
    """Whether segment start/end times matter to the caller. When they don't (plain text or
    json), the batched pipeline may decode each speech chunk as one untimed segment, which is
    faster; when they do (srt, vtt, verbose_json, streaming), segments keep Whisper's timing."""
    beam_size: int = 5
    vad_filter: bool = False
    hotwords: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchStats:
    """What an engine that batches across requests reports for the runtime's metrics."""

    active_sequences: int
    """Windows being decoded now (rows of the decode batch)."""
    waiting_requests: int
    """Requests inside the engine with no window decoding yet: queued, as the autoscaler means."""
    waiting_windows: int
    slots: int
    """The most sequences the engine decodes at once (all devices)."""
    steps: int
    """Decoder steps so far (counter)."""
    tokens: int
    """Tokens decoded so far (counter)."""
    step_seconds: float
    """Seconds spent in decoder steps so far (counter)."""
    step_batch_sizes: dict[int, int]
    """Steps so far at each batch size (cumulative)."""


@runtime_checkable
class BatchingEngine(Protocol):
    """An engine that batches across requests and can say how full its batch is."""

    def batch_stats(self) -> BatchStats: ...


@runtime_checkable
class Pcm16Engine(Protocol):
    """An engine that takes decoded 16-bit samples as they are. A remote engine does: half the
    bytes of float32 to carry to its process, where receiving them holds the interpreter lock
    its batching loop needs (bench/engine_hop.py)."""

    def transcribe_pcm16(
        self, pcm: NDArray[np.int16], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]: ...


def pcm16_to_float(pcm: NDArray[np.int16]) -> NDArray[np.float32]:
    """What the engines take: samples scaled to [-1, 1) (exact: 16-bit values fit float32)."""
    return np.multiply(pcm, np.float32(PCM16_SCALE), dtype=np.float32)


def transcribe_pcm16(
    engine: SpeechEngine, pcm: NDArray[np.int16], options: DecodeOptions
) -> tuple[TranscriptionInfo, Iterator[Segment]]:
    """`engine.transcribe` of decoded samples: handed over as they are where the engine takes
    them (Pcm16Engine), else scaled to float32 here."""
    if isinstance(engine, Pcm16Engine):
        return engine.transcribe_pcm16(pcm, options)
    return engine.transcribe(pcm16_to_float(pcm), options)


class EngineError(Exception):
    """A request the engine cannot serve (for example translate on an English-only model)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        """The request parameter at fault (model, language, ...), when there is one."""


def loaded(engine: SpeechEngine) -> str:
    """How the logs name a loaded engine: "tiny.en (torch on cuda:0, float16)"."""
    return f"{engine.model_id} ({engine.backend} on {engine.device}, {engine.compute_type})"


def close_segments(segments: Iterator[Segment]) -> None:
    """Tell the engine nobody wants more: a generator stops where it is (faster-whisper stops
    decoding windows; the batched torch loop drops the request's sequences; a remote engine's
    connection closes, which its process takes as the same)."""
    close = getattr(segments, "close", None)
    if close is not None:
        close()


WARMUP_SECONDS = 1.0


def warm_up(engine: SpeechEngine, beam_size: int) -> None:
    """One transcription of silence: enough to initialise every kernel and allocator on the
    path before the server says it is ready."""
    silence = np.zeros(int(WARMUP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    _, segments = engine.transcribe(silence, DecodeOptions(beam_size=beam_size, language="en"))
    for _ in segments:
        pass


def plain_text_encoding(tokenizer: Any) -> None:
    """Make a Hugging Face `tokenizers.Tokenizer` encode user text (prompts, hotwords) as text:
    by default it turns "<|endoftext|>" or "<|startoftranscript|>" written in the input into
    the control tokens themselves, which lets a prompt end or restart decoding. Special tokens
    are still found by id (token_to_id), which this does not touch."""
    tokenizer.encode_special_tokens = True


def refuse_what_the_model_lacks(options: DecodeOptions, engine: SpeechEngine) -> None:
    """The checks every engine owes its model: no translation on an English-only model, and
    only languages the model knows. One place, so every engine answers with the same 400;
    from the engine's description alone, so an API process runs them without a round trip
    to the engine process (engine/remote.py)."""
    model_id, multilingual = engine.model_id, engine.multilingual
    if options.task == "translate" and not multilingual:
        raise EngineError(
            f"model {model_id} is English-only and cannot translate; "
            "load a multilingual model (for example base) for translations",
            param="model",
        )
    if options.language is not None and options.language not in engine.languages:
        supported = "ISO 639-1 codes Whisper knows" if multilingual else "en only"
        raise EngineError(
            f"language {quote_input(options.language)} is not supported by model {model_id} "
            f"({supported})",
            param="language",
        )


class SpeechEngine(Protocol):
    """A loaded model that turns 16 kHz mono audio into segments.

    `transcribe` is blocking and may be slow: callers run it in a worker thread. The
    segment iterator is lazy for engines that decode incrementally, which is what lets
    the server stream deltas as they are produced.
    """

    @property
    def backend(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def compute_type(self) -> str: ...

    @property
    def multilingual(self) -> bool: ...

    @property
    def languages(self) -> frozenset[str]:
        """The language codes the model accepts."""
        ...

    @property
    def capabilities(self) -> EngineCapabilities: ...

    def check(self, options: DecodeOptions) -> None:
        """Raise EngineError for options this model cannot serve; cheap, before any audio is
        decoded (transcribe checks again)."""

    def transcribe(
        self, audio: NDArray[np.float32], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]: ...
