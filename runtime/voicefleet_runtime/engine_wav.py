"""Uploads that are already what the engines take: 16 kHz mono 16-bit PCM WAV, read without
FFmpeg.

Such a file needs no decoding and no resampling: its samples are copied out of the upload.
Through FFmpeg (audio.py) the same file costs a probe, a decoding process's round trip (the
upload pickled there, the samples pickled back) and a resampler pass that changes nothing, on
the request's critical path. The standard library's `wave` reads the RIFF header; a file it
cannot read, or any other rate, width or layout, goes to FFmpeg as before, which gives the
same samples (tests/runtime/test_engine_wav.py) and every error a bad file deserves.

No third-party parser runs on the bytes, so reading them in the request's own thread is safe
(the decoding processes are there to isolate FFmpeg, audio_workers.py), and bounded: samples
are read up to the duration limit, from bytes already uploaded.
"""

from __future__ import annotations

import wave
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import SAMPLE_RATE

SAMPLE_BYTES = 2
FORMAT_NAME = "wav"
ENGINE_LAYOUT = (SAMPLE_RATE, 1, SAMPLE_BYTES)
"""(frame rate, channels, bytes per sample) of the engines' input."""


def open_engine_wav(stream: BinaryIO) -> wave.Wave_read | None:
    """A reader at the first sample, when the upload is a 16 kHz mono 16-bit PCM WAV; None for
    anything else (FFmpeg's to decode or refuse)."""
    stream.seek(0)
    try:
        # Not a context manager: the reader does not own the upload's stream, and is used
        # after this returns; closing it would close nothing of ours.
        reader = wave.open(stream, "rb")  # noqa: SIM115
    except Exception:
        # The stdlib's parser raises assorted errors on junk (wave.Error, EOFError, a bare
        # RuntimeError for a chunk longer than the file): FFmpeg's to decode or refuse.
        return None
    layout = (reader.getframerate(), reader.getnchannels(), reader.getsampwidth())
    return reader if layout == ENGINE_LAYOUT else None


def read_samples(reader: wave.Wave_read, most_frames: int) -> NDArray[np.int16]:
    """Up to `most_frames` samples, fewer when the data chunk (or the upload) ends first: a
    read-only view of the bytes read, not a copy (the engines' float32 is made from it)."""
    data = reader.readframes(most_frames)
    # count: a truncated upload may end mid-sample.
    return np.frombuffer(data, dtype="<i2", count=len(data) // SAMPLE_BYTES)
