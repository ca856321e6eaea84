"""Uploads are resampled in blocks of frames, not frame by frame: the same samples, and a
stream that changes its sample rate mid-stream still reaches the models at 16 kHz."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from tests.runtime.hostile import flac_changing_rate
from voicefleet_runtime.audio import MAX_FORMAT_CHANGES, decode_audio, decode_pcm16
from voicefleet_runtime.engine.base import pcm16_to_float
from voicefleet_runtime.errors import ApiError

BENCH_AUDIO = Path(__file__).resolve().parents[2] / "bench" / "audio"
NO_LIMIT_SECONDS = 3600.0


def resampled_frame_by_frame(data: bytes) -> np.ndarray:
    """What FFmpeg's resampler gives when each decoded frame is its own call."""
    with av.open(io.BytesIO(data), mode="r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
        chunks = [
            resampled.to_ndarray().reshape(-1)
            for frame in [*container.decode(audio=0), None]
            for resampled in resampler.resample(frame)
        ]
    return np.concatenate(chunks)


@pytest.mark.parametrize(
    "name", ["jfk.flac", "hotwords.mp3", "multilingual.mp3", "stereo_diarization.wav", "opus"]
)
def test_blocks_give_the_samples_frame_by_frame_resampling_gives(
    shared_audio: Path, name: str
) -> None:
    path = BENCH_AUDIO / "gettysburg.ogg" if name == "opus" else shared_audio / name
    data = path.read_bytes()

    pcm = decode_pcm16(data, NO_LIMIT_SECONDS)

    assert pcm.dtype == np.int16
    np.testing.assert_array_equal(pcm, resampled_frame_by_frame(data))
    np.testing.assert_array_equal(
        decode_audio(data, NO_LIMIT_SECONDS), pcm.astype(np.float32) / 32768
    )


def test_pcm16_to_float_is_exact_and_stays_within_one() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    scaled = pcm16_to_float(pcm)
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled.astype(np.float64) * 32768, pcm.astype(np.float64))
    assert scaled.min() == -1.0
    assert scaled.max() < 1.0


def test_a_stream_that_changes_rate_midway_is_resampled_part_by_part() -> None:
    block = 4096
    rates = [16_000] * 4 + [48_000] * 4 + [16_000] * 4
    data = flac_changing_rate(rates, block)
    with av.open(io.BytesIO(data), mode="r") as container:
        decoded_rates = [frame.sample_rate for frame in container.decode(audio=0)]
    assert set(decoded_rates) == {16_000, 48_000}, "FFmpeg no longer reads per-frame rates"

    pcm = decode_pcm16(data, NO_LIMIT_SECONDS)

    expected_seconds = sum(block / rate for rate in decoded_rates)
    assert pcm.shape[0] == pytest.approx(expected_seconds * 16_000, abs=64)


def test_a_stream_that_keeps_changing_rate_is_refused() -> None:
    """Each change costs a new resampler: a file flipping every frame must not multiply that."""
    flapping = flac_changing_rate([16_000, 48_000] * MAX_FORMAT_CHANGES, block=16)
    with pytest.raises(ApiError) as refused:
        decode_pcm16(flapping, NO_LIMIT_SECONDS)
    assert (refused.value.status, refused.value.code) == (400, "unsupported_audio_format")
    assert "changes its sample rate" in refused.value.message
