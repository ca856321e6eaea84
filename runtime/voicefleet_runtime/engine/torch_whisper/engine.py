"""The PyTorch Whisper engine: the same CTranslate2 weights, run by torch modules."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import (
    SAMPLE_RATE,
    DecodeOptions,
    EngineError,
    Segment,
    TranscriptionInfo,
    refuse_what_the_model_lacks,
)
from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.support import ENGINE_CAPABILITIES
from voicefleet_runtime.engine.torch_whisper.ct2_weights import load_ct2_model
from voicefleet_runtime.engine.torch_whisper.decoding import (
    TokenRules,
    WindowDecoder,
    WindowDecoding,
    compression_ratio,
)
from voicefleet_runtime.engine.torch_whisper.features import (
    N_FRAMES_PER_CHUNK,
    SECONDS_PER_FRAME,
    LogMelExtractor,
    pad_or_trim_frames,
)
from voicefleet_runtime.engine.torch_whisper.identity import TorchEngineIdentity
from voicefleet_runtime.engine.torch_whisper.model import Whisper, build_whisper
from voicefleet_runtime.engine.torch_whisper.precision import (
    TorchPlacement,
    resolve_torch_placement,
)
from voicefleet_runtime.engine.torch_whisper.segments import split_window
from voicefleet_runtime.engine.torch_whisper.tokens import WhisperTokenizer


@dataclass(frozen=True)
class FallbackPolicy:
    """When a decode looks degenerate enough to retry at the next temperature (Whisper's)."""

    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    prompt_reset_temperature: float = 0.5
    """Above this temperature the output stops conditioning the next window."""

    def is_silence(self, result: WindowDecoding) -> bool:
        return (
            result.no_speech_prob > self.no_speech_threshold
            and result.avg_logprob < self.log_prob_threshold
        )

    def needs_fallback(self, result: WindowDecoding, text: str) -> bool:
        if self.is_silence(result):
            return False
        return (
            compression_ratio(text) > self.compression_ratio_threshold
            or result.avg_logprob < self.log_prob_threshold
        )


class TorchWhisperEngine(TorchEngineIdentity):
    """A Whisper model in torch; read-only after load, so concurrent requests are safe."""

    CAPABILITIES: ClassVar[EngineCapabilities] = ENGINE_CAPABILITIES["torch"]

    def __init__(
        self,
        model: Whisper,
        tokenizer: WhisperTokenizer,
        resolved: ResolvedModel,
        placement: TorchPlacement,
        policy: FallbackPolicy | None = None,
    ) -> None:
        super().__init__(resolved.name, placement, tokenizer)
        self._model = model
        self._policy = policy or FallbackPolicy()
        device = placement.torch_device
        self._features = LogMelExtractor(model.dims.n_mels, device)
        self._decoder = WindowDecoder(
            model, TokenRules(tokenizer.vocabulary, model.dims.n_vocab, device)
        )

    @classmethod
    def load(
        cls,
        model: ResolvedModel,
        device: str = "auto",
        precision: str = "auto",
        cpu_threads: int = 0,
    ) -> TorchWhisperEngine:
        """Read `model.bin` from the resolved folder; ValueError for an unsupported precision."""
        placement = resolve_torch_placement(device, precision)
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        weights = load_ct2_model(model.path / "model.bin")
        whisper = build_whisper(weights, placement.torch_device, placement.dtype)
        # The weights, not the folder name, say whether the model knows other languages.
        tokenizer = WhisperTokenizer.from_model_folder(model.path, whisper.dims.is_multilingual)
        return cls(whisper, tokenizer, model, placement)

    def check(self, options: DecodeOptions) -> None:
        refuse_what_the_model_lacks(options, self)
        if options.word_timestamps:
            raise EngineError("word timestamps need the faster-whisper engine")
        if options.vad_filter:
            raise EngineError("VAD filtering needs the faster-whisper engine")
        if not options.temperature:
            raise EngineError("at least one temperature is needed")

    def _encode(self, features: torch.Tensor, seek: int, frames: int) -> torch.Tensor:
        window = pad_or_trim_frames(features[:, seek : seek + frames])
        return self._model.encoder(window[None].to(self._placement.dtype))  # type: ignore[no-any-return]

    def detect_language(self, audio_features: torch.Tensor) -> tuple[str, float]:
        """The likeliest language of an encoded window, and its probability."""
        vocabulary = self.tokenizer.vocabulary
        state = self._model.decoder.start(audio_features)
        sot = torch.tensor([[vocabulary.sot]], device=audio_features.device)
        logits, _, _ = self._model.decoder(sot, state)
        codes = list(vocabulary.language_ids)
        ids = torch.tensor(list(vocabulary.language_ids.values()), device=logits.device)
        probabilities = logits[0, -1, ids].softmax(dim=-1)
        best = int(probabilities.argmax())
        return codes[best], float(probabilities[best])

    @torch.inference_mode()
    def transcribe(
        self, audio: NDArray[np.float32], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        self.check(options)
        duration = audio.shape[0] / SAMPLE_RATE
        features = self._features(np.ascontiguousarray(audio, dtype=np.float32))
        # The extractor adds one frame for the trailing partial hop; it holds no speech.
        content_frames = features.shape[-1] - 1
        first_window = self._encode(features, 0, min(N_FRAMES_PER_CHUNK, content_frames))
        if not self.multilingual:
            language, probability = "en", 1.0
        elif options.language is not None:
            language, probability = options.language, 1.0
        else:
            language, probability = self.detect_language(first_window)
        info = TranscriptionInfo(language, probability, duration)
        segments = self._segments(features, content_frames, first_window, language, options)
        return info, segments

    def _prompt_tokens(self, options: DecodeOptions) -> tuple[list[int], list[int]]:
        """(hotword tokens kept in every prompt, initial previous-text tokens)."""
        hotwords = self.tokenizer.encode(" " + options.hotwords.strip()) if options.hotwords else []
        initial = self.tokenizer.encode(" " + options.prompt.strip()) if options.prompt else []
        return hotwords, initial

    @torch.inference_mode()
    def _segments(
        self,
        features: torch.Tensor,
        content_frames: int,
        first_window: torch.Tensor,
        language: str,
        options: DecodeOptions,
    ) -> Iterator[Segment]:
        vocabulary = self.tokenizer.vocabulary
        sot_sequence = self.tokenizer.sot_sequence(language, options.task)
        prompt_room = self._model.dims.n_text_ctx // 2 - 1
        hotwords, history = self._prompt_tokens(options)
        # As faster-whisper does: hotwords take at most the prompt's room, history the rest.
        hotwords = hotwords[:prompt_room]
        generator = torch.Generator(device=self._placement.torch_device).manual_seed(0)
        audio_features: torch.Tensor | None = first_window
        seek = 0
        segment_id = 0
        duration = content_frames * SECONDS_PER_FRAME
        while seek < content_frames:
            frames = min(N_FRAMES_PER_CHUNK, content_frames - seek)
            if audio_features is None:
                audio_features = self._encode(features, seek, frames)
            previous = (
                hotwords + history[len(history) - (prompt_room - len(hotwords)) :]
                if history and len(hotwords) < prompt_room
                else hotwords
            )
            prefix = [vocabulary.sot_prev, *previous] if previous else []
            result = self._decode_with_fallback(
                audio_features, prefix + sot_sequence, len(prefix), options, generator
            )
            audio_features = None
            time_offset = seek * SECONDS_PER_FRAME
            if self._policy.is_silence(result):
                seek += frames
                continue
            split = split_window(result.tokens, vocabulary.timestamp_begin, time_offset, frames)
            seek += split.advance_frames
            text_of_window = self.tokenizer.decode(result.tokens)
            for piece in split.pieces:
                text = self.tokenizer.decode(piece.tokens)
                if not text.strip():
                    continue
                yield Segment(
                    id=segment_id,
                    start=round(min(piece.start, duration), 3),
                    end=round(min(max(piece.end, piece.start), duration), 3),
                    text=text,
                    tokens=piece.tokens,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=compression_ratio(text_of_window),
                    no_speech_prob=result.no_speech_prob,
                    temperature=result.temperature,
                )
                segment_id += 1
            history.extend(result.tokens)
            if result.temperature > self._policy.prompt_reset_temperature:
                history = []

    def _decode_with_fallback(
        self,
        audio_features: torch.Tensor,
        initial_tokens: list[int],
        sot_index: int,
        options: DecodeOptions,
        generator: torch.Generator,
    ) -> WindowDecoding:
        result: WindowDecoding | None = None
        for temperature in options.temperature:
            result = self._decoder.decode(
                audio_features,
                initial_tokens,
                sot_index,
                temperature,
                max(options.beam_size, 1),
                generator,
            )
            if not self._policy.needs_fallback(result, self.tokenizer.decode(result.tokens)):
                break
        assert result is not None  # check() guarantees at least one temperature
        return result
