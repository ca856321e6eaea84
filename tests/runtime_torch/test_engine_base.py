"""The torch engine with the multilingual base model: language detection and translation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.runtime_torch.conftest import normalise
from voicefleet_runtime.engine.base import DecodeOptions
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine

pytestmark = pytest.mark.slow

GERMAN_PART_STARTS_AT = 35 * 16_000


@pytest.fixture(scope="module")
def german_audio(multilingual_audio: NDArray[np.float32]) -> NDArray[np.float32]:
    return multilingual_audio[GERMAN_PART_STARTS_AT:]


def test_base_is_multilingual(base_engine: TorchWhisperEngine) -> None:
    assert base_engine.multilingual
    assert {"en", "de", "fr"} <= set(base_engine.languages)


def test_english_is_detected_on_jfk(
    base_engine: TorchWhisperEngine, jfk_audio: NDArray[np.float32]
) -> None:
    info, segments = base_engine.transcribe(jfk_audio, DecodeOptions(beam_size=1))
    assert info.language == "en"
    assert info.language_probability > 0.5
    words = set(normalise(" ".join(s.text for s in segments)).split())
    assert {"fellow", "americans", "country"} <= words


def test_german_is_detected_and_transcribed(
    base_engine: TorchWhisperEngine, german_audio: NDArray[np.float32]
) -> None:
    info, segments = base_engine.transcribe(german_audio[: 16_000 * 12], DecodeOptions(beam_size=1))
    assert info.language == "de"
    assert info.language_probability > 0.5
    words = set(normalise(" ".join(s.text for s in segments)).split())
    assert {"software", "und"} <= words


def test_translate_gives_english(
    base_engine: TorchWhisperEngine, german_audio: NDArray[np.float32]
) -> None:
    info, segments = base_engine.transcribe(
        german_audio[: 16_000 * 12], DecodeOptions(task="translate", beam_size=1)
    )
    assert info.language == "de"
    words = normalise(" ".join(s.text for s in segments)).split()
    assert len(words) >= 5
    assert "the" in words
    assert not {"und", "die", "der", "zu", "das"} & set(words)


def test_a_given_language_skips_detection(
    base_engine: TorchWhisperEngine, german_audio: NDArray[np.float32]
) -> None:
    info, segments = base_engine.transcribe(
        german_audio[: 16_000 * 6], DecodeOptions(language="de", beam_size=1)
    )
    assert (info.language, info.language_probability) == ("de", 1.0)
    assert next(iter(segments)).text.strip()
