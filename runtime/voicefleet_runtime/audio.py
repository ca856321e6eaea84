"""Decode an uploaded file into 16 kHz mono float32 PCM with PyAV (FFmpeg's decoders).

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


def decode_audio(data: bytes, max_seconds: float) -> NDArray[np.float32]:
    """Blocking and CPU-bound: call it in a worker thread."""
    if not data:
        raise _empty()
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise _not_audio(type(exc).__name__) from exc
    max_samples = int(max_seconds * SAMPLE_RATE)
    chunks: list[NDArray[np.float32]] = []
    total = 0
    with container:
        if not container.streams.audio:
            raise _not_audio(f"{container.format.name} without an audio stream")
        # Stereo and other layouts are mixed down here; every engine gets mono.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(audio=0):
                for resampled in resampler.resample(frame):
                    samples = resampled.to_ndarray().reshape(-1).astype(np.float32, copy=False)
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
                chunks.append(resampled.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except av.error.FFmpegError as exc:
            raise ApiError(
                400,
                f"the audio is corrupt or truncated ({type(exc).__name__})",
                code="invalid_audio",
                param="file",
            ) from exc
    if not chunks:
        raise _empty()
    audio = np.concatenate(chunks)
    if audio.shape[0] == 0:
        raise _empty()
    return audio
