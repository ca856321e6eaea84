"""The runtime's decoder gives the models the level faster-whisper's decoder gives them.

The models were validated on faster-whisper's `decode_audio`; a stereo downmix that sums the
channels instead of averaging them feeds them 1.41 times louder audio with clipped peaks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faster_whisper import decode_audio as faster_whisper_decode

from voicefleet_runtime.audio import decode_audio

NO_LIMIT_SECONDS = 3600.0


@pytest.mark.parametrize("name", ["jfk.flac", "stereo_diarization.wav", "hotwords.mp3"])
def test_decode_matches_faster_whisper_level(shared_audio: Path, name: str) -> None:
    path = shared_audio / name
    expected = np.asarray(faster_whisper_decode(str(path)), dtype=np.float32)

    decoded = decode_audio(path.read_bytes(), NO_LIMIT_SECONDS)

    assert decoded.dtype == np.float32
    assert decoded.shape == expected.shape
    max_difference = float(np.max(np.abs(decoded - expected)))
    rms_ratio = float(np.sqrt(np.mean(decoded**2)) / np.sqrt(np.mean(expected**2)))
    assert max_difference < 1e-3, f"{name}: max |runtime - faster-whisper| = {max_difference}"
    assert rms_ratio == pytest.approx(1.0, abs=0.01), f"{name}: RMS ratio {rms_ratio}"
    assert float(np.max(np.abs(decoded))) <= 1.0


def test_stereo_downmix_averages_channels(shared_audio: Path) -> None:
    """Each speaker of stereo_diarization.wav sits on one channel: mono is their mean."""
    path = shared_audio / "stereo_diarization.wav"
    left, right = faster_whisper_decode(str(path), split_stereo=True)
    channel_mean = (np.asarray(left, dtype=np.float32) + np.asarray(right, dtype=np.float32)) / 2

    decoded = decode_audio(path.read_bytes(), NO_LIMIT_SECONDS)

    assert decoded.shape == channel_mean.shape
    assert float(np.max(np.abs(decoded - channel_mean))) < 1e-3
