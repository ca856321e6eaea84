"""Decode an uploaded file into 16 kHz mono float32 PCM with PyAV (FFmpeg's decoders).

The level matches faster-whisper's (and OpenAI Whisper's) own decoder, which the models were
validated with: FFmpeg resamples to signed 16-bit mono, then samples are scaled by 1/32768.
With an integer output format FFmpeg normalises its downmix matrix, so stereo becomes the
average of the channels and stays within [-1, 1]; with a float output it would sum the
channels at -3 dB each, 1.41 times too loud for identical channels and above 1.0 at peaks.

Statuses the failures map to (documented in the README):
- 415: not audio at all (FFmpeg cannot open it, or it has no audio stream);
- 400: empty, or audio that breaks off or is corrupt while decoding;
- 413: longer than the configured limit, detected while decoding, so a long file is not
  decoded to the end just to be refused.
"""

from __future__ import annotations

import io

import av
import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import SAMPLE_RATE
from voicefleet_runtime.errors import ApiError


def _not_audio(detail: str) -> ApiError:
    return ApiError(
        415,
        f"the file is not audio FFmpeg can decode: {detail}",
        code="unsupported_audio",
        param="file",
    )


def _empty() -> ApiError:
    return ApiError(400, "the audio file is empty", code="empty_audio", param="file")


PCM_SCALE = 1.0 / 32768.0
"""signed 16-bit to [-1, 1), as faster-whisper's decode_audio scales."""


def _samples(frame: av.AudioFrame) -> NDArray[np.int16]:
    # The resampler outputs s16 already: astype only tells the type checker, it copies nothing.
    return frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)


def decode_audio(data: bytes, max_seconds: float) -> NDArray[np.float32]:
    """Blocking and CPU-bound: call it in a worker thread."""
    if not data:
        raise _empty()
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise _not_audio(type(exc).__name__) from exc
    max_samples = int(max_seconds * SAMPLE_RATE)
    chunks: list[NDArray[np.int16]] = []
    total = 0
    with container:
        if not container.streams.audio:
            raise _not_audio(f"{container.format.name} without an audio stream")
        # Stereo and other layouts are mixed down here; every engine gets mono. s16, not flt:
        # see the module docstring for why the format decides the downmix level.
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(audio=0):
                for resampled in resampler.resample(frame):
                    samples = _samples(resampled)
                    total += samples.shape[0]
                    if total > max_samples:
                        raise ApiError(
                            413,
                            f"the audio is longer than the limit of {max_seconds:g} seconds",
                            code="audio_too_long",
                            param="file",
                        )
                    chunks.append(samples)
            for resampled in resampler.resample(None):
                chunks.append(_samples(resampled))
        except av.error.FFmpegError as exc:
            raise ApiError(
                400,
                f"the audio is corrupt or truncated ({type(exc).__name__})",
                code="invalid_audio",
                param="file",
            ) from exc
    if not chunks:
        raise _empty()
    pcm = np.concatenate(chunks)
    if pcm.shape[0] == 0:
        raise _empty()
    audio = pcm.astype(np.float32)
    audio *= PCM_SCALE
    return audio
