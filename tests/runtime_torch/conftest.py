"""Real models loaded once for the torch engine's tests; two threads, the machine is shared."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.audio import decode_audio
from numpy.typing import NDArray

from voicefleet_runtime.engine.models import ResolvedModel, resolve_model
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine

TEST_THREADS = 2


def normalise(text: str) -> str:
    """Lowercase words without punctuation, so WER measures words, not formatting."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


@pytest.fixture(scope="session")
def tiny_en_model() -> ResolvedModel:
    return resolve_model("tiny.en", None)


@pytest.fixture(scope="session")
def base_model() -> ResolvedModel:
    return resolve_model("base", None)


@pytest.fixture(scope="session")
def tiny_en_engine(tiny_en_model: ResolvedModel) -> TorchWhisperEngine:
    return TorchWhisperEngine.load(tiny_en_model, "cpu", "auto", TEST_THREADS)


@pytest.fixture(scope="session")
def base_engine(base_model: ResolvedModel) -> TorchWhisperEngine:
    return TorchWhisperEngine.load(base_model, "cpu", "float32", TEST_THREADS)


@pytest.fixture(scope="session")
def jfk_audio(shared_audio: Path) -> NDArray[np.float32]:
    audio: NDArray[np.float32] = decode_audio(str(shared_audio / "jfk.flac"))
    return audio


@pytest.fixture(scope="session")
def multilingual_audio(shared_audio: Path) -> NDArray[np.float32]:
    audio: NDArray[np.float32] = decode_audio(str(shared_audio / "multilingual.mp3"))
    return audio
