"""Where a request's windows lie: fixed 30 s cuts, or speech chunks found by Silero VAD.

Windows are decoded independently (that is what lets one file's windows share a batch), so
with VAD they start and end at pauses, as faster-whisper's batched pipeline cuts them: each
window runs from the start of one speech chunk to the end of the last chunk that still fits
in 30 s, silence between chunks included, so times need no remapping.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.torch_whisper.features import (
    CHUNK_SECONDS,
    HOP_LENGTH,
    N_FRAMES_PER_CHUNK,
)

VAD_MIN_SILENCE_MS = 160
"""faster-whisper's batched pipeline's setting: cut at short pauses, windows stay full."""

Span = tuple[int, int]
"""(first mel frame, frames) of one window."""


def fixed_spans(content_frames: int) -> list[Span]:
    return [
        (start, min(N_FRAMES_PER_CHUNK, content_frames - start))
        for start in range(0, content_frames, N_FRAMES_PER_CHUNK)
    ]


def speech_spans(audio: NDArray[np.float32]) -> list[Span]:
    # faster-whisper ships Silero VAD (ONNX, on CPU); imported here so engines without VAD
    # requests never load it.
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(
        max_speech_duration_s=CHUNK_SECONDS, min_silence_duration_ms=VAD_MIN_SILENCE_MS
    )
    chunks = get_speech_timestamps(audio, options)
    limit = CHUNK_SECONDS * 16_000
    merged: list[tuple[int, int]] = []
    for chunk in chunks:
        start, end = int(chunk["start"]), int(chunk["end"])
        if merged and end - merged[-1][0] <= limit:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, min(end, start + limit)))
    spans = []
    for start, end in merged:
        first = start // HOP_LENGTH
        frames = min(max((end - start) // HOP_LENGTH, 1), N_FRAMES_PER_CHUNK)
        spans.append((first, frames))
    return spans


def window_spans(audio: NDArray[np.float32], content_frames: int, vad: bool) -> list[Span]:
    if content_frames <= 0:
        return []
    return speech_spans(audio) if vad else fixed_spans(content_frames)
