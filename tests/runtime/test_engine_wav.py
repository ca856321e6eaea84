"""16 kHz mono 16-bit WAV uploads are read without FFmpeg (engine_wav.py): the samples FFmpeg
gives, the same limits, and every other WAV still goes to FFmpeg."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import decode_audio as faster_whisper_decode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicefleet_runtime.audio import (
    DecodeLimits,
    decode_audio,
    decode_engine_wav,
    decode_pcm16,
    decode_pcm16_with_ffmpeg,
    probe_audio,
)
from voicefleet_runtime.audio_workers import AudioDecoder
from voicefleet_runtime.errors import ApiError

NO_LIMIT_SECONDS = 3600.0


def wav(samples: np.ndarray, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def jfk_pcm(shared_audio: Path) -> np.ndarray:
    """jfk.flac's samples: lossless 16 kHz mono 16-bit, so its WAV holds exactly these."""
    return decode_pcm16((shared_audio / "jfk.flac").read_bytes(), NO_LIMIT_SECONDS)


def test_a_wav_of_the_engines_samples_reads_as_ffmpeg_decodes_it(
    jfk_pcm: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "jfk.wav"
    path.write_bytes(wav(jfk_pcm))
    assert decode_engine_wav(path.read_bytes(), NO_LIMIT_SECONDS) is not None

    read = decode_audio(path.read_bytes(), NO_LIMIT_SECONDS)

    # FFmpeg gives the same samples: ours, and faster-whisper's own PyAV pipeline.
    limits = DecodeLimits(NO_LIMIT_SECONDS, 0.0)
    assert np.array_equal(decode_pcm16_with_ffmpeg(path.read_bytes(), limits), jfk_pcm)
    assert np.array_equal(read, np.asarray(faster_whisper_decode(str(path)), dtype=np.float32))
    assert np.array_equal(decode_pcm16(path.read_bytes(), NO_LIMIT_SECONDS), jfk_pcm)
    with path.open("rb") as spooled:  # an upload spooled to disk is read where it lies
        assert np.array_equal(decode_pcm16(spooled, NO_LIMIT_SECONDS), jfk_pcm)
    probe = probe_audio(path.read_bytes(), NO_LIMIT_SECONDS)
    assert (probe.format_name, probe.sample_rate, probe.channels) == ("wav", 16_000, 1)
    assert probe.declared_seconds == pytest.approx(jfk_pcm.shape[0] / 16_000)


def test_the_decoding_pool_gives_a_wav_the_same_samples(jfk_pcm: np.ndarray) -> None:
    decoder = AudioDecoder(processes=1)
    try:
        assert np.array_equal(decoder.decode_pcm16(wav(jfk_pcm), NO_LIMIT_SECONDS), jfk_pcm)
    finally:
        decoder.close()


@pytest.mark.parametrize(
    ("rate", "channels", "width"), [(8_000, 1, 2), (16_000, 2, 2), (16_000, 1, 3), (48_000, 1, 2)]
)
def test_other_wavs_go_to_ffmpeg(jfk_pcm: np.ndarray, rate: int, channels: int, width: int) -> None:
    frames = jfk_pcm[: 16_000 * 2]
    samples = np.repeat(frames, channels) if width == 2 else np.zeros(len(frames) * 3, np.uint8)
    data = wav(samples, rate, channels, width)
    assert decode_engine_wav(data, NO_LIMIT_SECONDS) is None
    seconds = len(frames) / rate
    assert decode_audio(data, NO_LIMIT_SECONDS).shape[0] == pytest.approx(16_000 * seconds, abs=64)


def test_not_a_wav_goes_to_ffmpeg(shared_audio: Path) -> None:
    for name in ("jfk.flac", "hotwords.mp3"):
        assert decode_engine_wav((shared_audio / name).read_bytes(), NO_LIMIT_SECONDS) is None
    with pytest.raises(ApiError) as refused:
        decode_audio(b"RIFF\x10\x00\x00\x00WAVEjunkjunk", NO_LIMIT_SECONDS)
    assert refused.value.status in (400, 415)


def test_a_wav_over_the_limit_is_refused_before_and_while_reading(jfk_pcm: np.ndarray) -> None:
    eleven_seconds = wav(jfk_pcm)
    with pytest.raises(ApiError, match="declares a duration longer") as declared:
        probe_audio(eleven_seconds, max_seconds=5.0)
    assert declared.value.status == 413
    with pytest.raises(ApiError, match="declares a duration longer"):
        decode_audio(eleven_seconds, max_seconds=5.0)
    # Within the declared slack, the limit holds on the samples read.
    with pytest.raises(ApiError, match="audio is longer than the limit of 10 seconds") as read:
        decode_audio(eleven_seconds, max_seconds=10.0)
    assert read.value.status == 413


def test_a_truncated_wav_gives_what_it_holds(jfk_pcm: np.ndarray) -> None:
    whole = wav(jfk_pcm)
    header = len(whole) - 2 * jfk_pcm.shape[0]
    truncated = whole[: header + 2 * 16_000 + 1]  # one second and half a sample
    assert np.array_equal(decode_pcm16(truncated, NO_LIMIT_SECONDS), jfk_pcm[:16_000])
    with pytest.raises(ApiError, match="empty") as empty:
        decode_audio(whole[:header], NO_LIMIT_SECONDS)
    assert empty.value.status == 400


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(offset=st.integers(0, 43), junk=st.binary(min_size=1, max_size=8))
def test_a_damaged_wav_header_is_read_or_refused_cleanly(
    jfk_pcm: np.ndarray, offset: int, junk: bytes
) -> None:
    whole = wav(jfk_pcm[:16_000])
    damaged = whole[:offset] + junk + whole[offset + len(junk) :]
    try:
        audio = decode_audio(damaged, max_seconds=30.0)
    except ApiError as refused:
        status = refused.status
    else:
        assert 0 < audio.shape[0] <= 30 * 16_000
        status = 200
    assert status in (200, 400, 413, 415)
