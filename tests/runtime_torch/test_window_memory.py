"""The memory budget's bound on what a long request's windows hold on the host (GPU pods),
checked against the windows the batched engine really cuts from real speech, with VAD and
without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicefleet_runtime.audio import decode_audio
from voicefleet_runtime.engine.base import SAMPLE_RATE
from voicefleet_runtime.engine.torch_whisper.batched.windows import window_spans
from voicefleet_runtime.engine.torch_whisper.features import (
    HOP_LENGTH,
    N_FRAMES_PER_CHUNK,
)
from voicefleet_runtime.memory_budget import FEATURE_BYTES_PER_SECOND

LARGEST_MELS = 128
FLOAT32_BYTES = 4


@pytest.mark.parametrize("vad", [False, True])
def test_the_windows_of_long_speech_fit_the_budget_per_audio_second(
    shared_audio: Path, vad: bool
) -> None:
    # Real recordings with silences between them, about four minutes, so VAD cuts many windows.
    recordings = [
        decode_audio((shared_audio / name).read_bytes(), max_seconds=600)
        for name in ("jfk.flac", "hotwords.mp3", "multilingual.mp3")
    ]
    pause = np.zeros(2 * SAMPLE_RATE, np.float32)
    audio = np.concatenate([part for recording in recordings * 6 for part in (recording, pause)])
    seconds = audio.shape[0] / SAMPLE_RATE
    spans = window_spans(audio, audio.shape[0] // HOP_LENGTH, vad)
    assert len(spans) > 3
    held = len(spans) * N_FRAMES_PER_CHUNK * LARGEST_MELS * FLOAT32_BYTES
    one_window = N_FRAMES_PER_CHUNK * LARGEST_MELS * FLOAT32_BYTES
    assert held <= seconds * FEATURE_BYTES_PER_SECOND["torch-gpu"] + one_window
