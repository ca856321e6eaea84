"""Encode 24 kHz mono float32 audio into OpenAI's response formats, chunk by chunk.

Every format streams: each chunk's bytes can go to the client before the next chunk exists.
PyAV (FFmpeg) encodes mp3 (LAME), opus (libopus in Ogg, 48 kHz as Opus requires), aac (ADTS)
and flac; wav and pcm are 16-bit little-endian written here. A streamed WAV cannot know its
length up front, so its RIFF and data sizes are 0xFFFFFFFF ("until the end"), as OpenAI's
streamed WAV does; FFmpeg, browsers and soundfile read it to the end of the data.
"""

from __future__ import annotations

import struct

import av
import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.tts.formats import SpeechFormat
from voicefleet_runtime.tts.model import SAMPLE_RATE

MEDIA_TYPES: dict[SpeechFormat, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

_CODECS: dict[SpeechFormat, tuple[str, str, int]] = {
    # format: (FFmpeg encoder, container, sample rate)
    "mp3": ("libmp3lame", "mp3", SAMPLE_RATE),
    "opus": ("libopus", "ogg", 48_000),
    "aac": ("aac", "adts", SAMPLE_RATE),
    "flac": ("flac", "flac", SAMPLE_RATE),
}
OGG_PAGE_MICROSECONDS = "100000"
"""Ogg holds packets until a page fills (1 s by default); short pages let opus stream."""

UNKNOWN_SIZE = 0xFFFFFFFF
PCM_MAX = 32767


def output_sample_rate(response_format: SpeechFormat) -> int:
    codec = _CODECS.get(response_format)
    return codec[2] if codec else SAMPLE_RATE


def pcm16(audio: NDArray[np.float32]) -> bytes:
    clipped = np.clip(audio, -1.0, 1.0) * PCM_MAX
    return clipped.astype("<i2").tobytes()


def streaming_wav_header() -> bytes:
    byte_rate = SAMPLE_RATE * 2
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN_SIZE)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, byte_rate, 2, 16)
        + b"data"
        + struct.pack("<I", UNKNOWN_SIZE)
    )


class _Collector:
    """A write-only file for FFmpeg: not seekable, so muxers never go back to patch."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


class SpeechEncoder:
    """One response's encoder: `encode` each chunk in order, then `finish` once."""

    def __init__(self, response_format: SpeechFormat) -> None:
        self.response_format = response_format
        self._started = False
        self._sink = _Collector()
        self._container: av.container.OutputContainer | None = None
        if response_format in _CODECS:
            codec, container_format, rate = _CODECS[response_format]
            options = {"page_duration": OGG_PAGE_MICROSECONDS} if container_format == "ogg" else {}
            self._container = av.open(self._sink, "w", format=container_format, options=options)
            stream = self._container.add_stream(codec, rate=rate, layout="mono")
            assert isinstance(stream, av.AudioStream)  # a codec name alone doesn't tell mypy
            self._stream = stream
            self._resampler = av.AudioResampler(
                format=self._stream.format.name, layout="mono", rate=rate
            )

    def _mux(self, frame: av.AudioFrame | None) -> None:
        assert self._container is not None
        frames = self._resampler.resample(frame)
        for resampled in frames:
            for packet in self._stream.encode(resampled):
                self._container.mux(packet)

    def encode(self, audio: NDArray[np.float32]) -> bytes:
        if self._container is None:
            header = b""
            if self.response_format == "wav" and not self._started:
                header = streaming_wav_header()
            self._started = True
            return header + pcm16(audio)
        if audio.size:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1),
                format="flt",
                layout="mono",
            )
            frame.sample_rate = SAMPLE_RATE
            self._mux(frame)
        return self._sink.take()

    def finish(self) -> bytes:
        if self._container is None:
            return b"" if self._started else self.encode(np.zeros(0, dtype=np.float32))
        self._mux(None)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()
