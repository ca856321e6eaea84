"""Log-mel features in torch against faster-whisper's numpy implementation."""

from __future__ import annotations

import numpy as np
import torch
from faster_whisper.feature_extractor import FeatureExtractor
from numpy.typing import NDArray

from voicefleet_runtime.engine.torch_whisper.features import (
    N_FRAMES_PER_CHUNK,
    LogMelExtractor,
    pad_or_trim_frames,
)


def test_log_mel_matches_faster_whisper_on_jfk(jfk_audio: NDArray[np.float32]) -> None:
    expected = FeatureExtractor(feature_size=80)(jfk_audio)
    ours = LogMelExtractor(80, torch.device("cpu"))(jfk_audio).numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-3


def test_128_bins_for_large_v3_style_models(jfk_audio: NDArray[np.float32]) -> None:
    expected = FeatureExtractor(feature_size=128)(jfk_audio[:32_000])
    ours = LogMelExtractor(128, torch.device("cpu"))(jfk_audio[:32_000]).numpy()
    assert np.abs(ours - expected).max() < 1e-3


def test_windows_are_padded_or_cut_to_thirty_seconds() -> None:
    short = torch.ones(80, 100)
    padded = pad_or_trim_frames(short)
    assert padded.shape == (80, N_FRAMES_PER_CHUNK)
    assert float(padded[:, 100:].abs().sum()) == 0.0
    assert pad_or_trim_frames(torch.ones(80, 4000)).shape == (80, N_FRAMES_PER_CHUNK)
