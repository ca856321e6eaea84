"""The torch engine with the packaged English-only tiny model, on real recordings."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from numpy.typing import NDArray

from tests.conftest import JFK_REFERENCE
from tests.runtime_torch.conftest import TEST_THREADS, normalise
from voicefleet_runtime.engine.base import DecodeOptions, EngineError, SpeechEngine
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine

pytestmark = pytest.mark.slow


def _text(segments: Iterator[object]) -> str:
    return " ".join(getattr(segment, "text", "") for segment in segments)


def test_it_is_a_speech_engine(tiny_en_engine: TorchWhisperEngine) -> None:
    engine: SpeechEngine = tiny_en_engine
    assert (engine.backend, engine.model_id, engine.device) == ("torch", "tiny.en", "cpu")
    assert engine.compute_type == "float32"
    assert engine.multilingual is False


def test_greedy_transcript_of_jfk(
    tiny_en_engine: TorchWhisperEngine, jfk_audio: NDArray[np.float32]
) -> None:
    info, segments = tiny_en_engine.transcribe(jfk_audio, DecodeOptions(beam_size=1))
    assert isinstance(segments, Iterator)  # lazy: nothing is decoded before iteration
    collected = list(segments)
    assert info.language == "en"
    assert info.duration == pytest.approx(11.0, abs=0.05)
    text = " ".join(segment.text for segment in collected)
    assert jiwer.wer(normalise(JFK_REFERENCE), normalise(text)) <= 0.15

    starts = [segment.start for segment in collected]
    assert starts == sorted(starts)
    for previous, current in itertools.pairwise(collected):
        assert current.start >= previous.end - 1e-6
    for segment in collected:
        assert 0.0 <= segment.start < segment.end <= info.duration
        assert segment.tokens
        assert segment.avg_logprob < 0.0
        assert 0.0 <= segment.no_speech_prob <= 1.0
    assert [segment.id for segment in collected] == list(range(len(collected)))


def test_beam_search_transcript_of_jfk(
    tiny_en_engine: TorchWhisperEngine, jfk_audio: NDArray[np.float32]
) -> None:
    _, segments = tiny_en_engine.transcribe(jfk_audio, DecodeOptions(beam_size=3))
    text = _text(segments)
    assert jiwer.wer(normalise(JFK_REFERENCE), normalise(text)) <= 0.15


def test_agrees_with_the_faster_whisper_engine(
    tiny_en_engine: TorchWhisperEngine,
    tiny_en_model: ResolvedModel,
    jfk_audio: NDArray[np.float32],
) -> None:
    from voicefleet_runtime.engine.faster_whisper_engine import FasterWhisperEngine

    reference_engine = FasterWhisperEngine.load(
        tiny_en_model, device="cpu", precision="float32", cpu_threads=TEST_THREADS
    )
    options = DecodeOptions(beam_size=1)
    _, theirs = reference_engine.transcribe(jfk_audio, options)
    _, ours = tiny_en_engine.transcribe(jfk_audio, options)
    assert jiwer.wer(normalise(_text(theirs)), normalise(_text(ours))) <= 0.1


def test_a_prompt_steers_the_spelling_of_a_product_name(
    tiny_en_engine: TorchWhisperEngine, shared_audio: Path
) -> None:
    audio = decode_audio(str(shared_audio / "hotwords.mp3"))
    _, plain = tiny_en_engine.transcribe(audio, DecodeOptions(beam_size=1))
    _, prompted = tiny_en_engine.transcribe(audio, DecodeOptions(beam_size=1, prompt="ComfyUI"))
    assert "ComfyUI" not in _text(plain)
    assert "ComfyUI" in _text(prompted)


def test_silence_gives_no_segments(tiny_en_engine: TorchWhisperEngine) -> None:
    silence = np.zeros(16_000 * 3, dtype=np.float32)
    info, segments = tiny_en_engine.transcribe(silence, DecodeOptions(beam_size=1))
    assert info.duration == pytest.approx(3.0)
    assert _text(segments).strip() == ""


def test_translate_on_an_english_only_model_is_refused(
    tiny_en_engine: TorchWhisperEngine, jfk_audio: NDArray[np.float32]
) -> None:
    with pytest.raises(EngineError, match="English-only"):
        tiny_en_engine.transcribe(jfk_audio, DecodeOptions(task="translate"))
    with pytest.raises(EngineError, match="not supported"):
        tiny_en_engine.transcribe(jfk_audio, DecodeOptions(language="de"))
