"""One real server for the TTS tests: Kokoro and tiny.en in one process, as `--model tiny.en
--tts-model kokoro` runs them, on loopback."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import av
import pytest

from tests.runtime.conftest import RunningServer, serve_in_thread, tiny_settings

SPEECH_SAMPLE_RATE = 24_000


@pytest.fixture(scope="session")
def speech_server() -> Iterator[RunningServer]:
    yield from serve_in_thread(tiny_settings(tts_model="kokoro", concurrency=2, queue_size=4))


@dataclass(frozen=True)
class DecodedAudio:
    sample_rate: int
    channels: int
    seconds: float
    codec: str


def decode(data: bytes) -> DecodedAudio:
    """What FFmpeg (PyAV) makes of a response body."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
        rate = stream.codec_context.sample_rate
        return DecodedAudio(rate, stream.codec_context.channels, samples / rate, stream.codec.name)
