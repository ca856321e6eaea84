"""Speeds beyond what Kokoro renders itself: the rest is a pitch-preserving time-stretch.

Kokoro's `speed` input scales phoneme durations and sounds natural within MODEL_SPEED_RANGE.
OpenAI accepts 0.25 to 4.0, so a request for 4.0 is rendered at 2.0 by the model and then
made twice as fast by FFmpeg's `atempo` filter (WSOLA: tempo changes, pitch does not).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.tts.model import MODEL_SPEED_RANGE, SAMPLE_RATE


def split_speed(speed: float) -> tuple[float, float]:
    """(the model's speed, the stretch after it); their product is `speed`."""
    low, high = MODEL_SPEED_RANGE
    model_speed = min(max(speed, low), high)
    return model_speed, speed / model_speed


def time_stretch(audio: NDArray[np.float32], tempo: float) -> NDArray[np.float32]:
    """`audio` played `tempo` times faster at the same pitch; tempo 1 returns it unchanged."""
    if abs(tempo - 1.0) < 1e-6 or audio.size == 0:
        return audio
    graph = av.filter.Graph()
    source = graph.add_abuffer(
        sample_rate=SAMPLE_RATE, format="flt", layout="mono", time_base=Fraction(1, SAMPLE_RATE)
    )
    stretch = graph.add("atempo", f"{tempo:.6f}")
    sink = graph.add("abuffersink")
    source.link_to(stretch)
    stretch.link_to(sink)
    graph.configure()
    frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    graph.push(frame)
    graph.push(None)
    pieces: list[NDArray[np.float32]] = []
    while True:
        try:
            out = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            break
        pieces.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
