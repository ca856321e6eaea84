"""The official openai client: `audio.speech.create` and `with_streaming_response` for every
response format; each body decodes (PyAV) to the format's sample rate and the same length."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.runtime.conftest import API_KEY, RunningServer
from tests.runtime_tts.conftest import SPEECH_SAMPLE_RATE, decode
from voicefleet_runtime.tts.formats import SPEECH_FORMATS, SpeechFormat

TEXT = "Speech for every format."
EXPECTED = {
    # format: (codec FFmpeg reports, sample rate)
    "mp3": ("mp3float", SPEECH_SAMPLE_RATE),
    "opus": ("opus", 48_000),
    "aac": ("aac", SPEECH_SAMPLE_RATE),
    "flac": ("flac", SPEECH_SAMPLE_RATE),
    "wav": ("pcm_s16le", SPEECH_SAMPLE_RATE),
}
CODEC_PADDING_SECONDS = 0.1
"""mp3 and aac add encoder delay and pad the last frame; the speech itself is the same."""


@pytest.fixture(scope="module")
def client(speech_server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{speech_server.base_url}/v1", api_key=API_KEY, max_retries=0
    ) as client:
        yield client


@pytest.fixture(scope="module")
def pcm_seconds(client: openai.OpenAI) -> float:
    """The reference length: raw 16-bit samples at 24 kHz, no container, no codec delay."""
    body = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm"
    ).content
    assert len(body) % 2 == 0
    return len(body) / 2 / SPEECH_SAMPLE_RATE


@pytest.mark.parametrize("response_format", [f for f in SPEECH_FORMATS if f != "pcm"])
def test_create_decodes_to_the_format(
    client: openai.OpenAI, pcm_seconds: float, response_format: SpeechFormat
) -> None:
    body = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format=response_format
    ).content
    decoded = decode(body)
    codec, rate = EXPECTED[response_format]
    assert (decoded.codec, decoded.sample_rate, decoded.channels) == (codec, rate, 1)
    assert decoded.seconds == pytest.approx(pcm_seconds, abs=CODEC_PADDING_SECONDS)


@pytest.mark.parametrize("response_format", SPEECH_FORMATS)
def test_streaming_response_decodes_to_the_format(
    client: openai.OpenAI, pcm_seconds: float, response_format: SpeechFormat
) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1-hd", voice="am_onyx", input=TEXT, response_format=response_format, speed=1.0
    ) as response:
        pieces = list(response.iter_bytes(4096))
    body = b"".join(pieces)
    if response_format == "pcm":
        assert response.headers["content-type"] == "audio/pcm"
        # a different voice speaks the same words in about the same time
        assert len(body) / 2 / SPEECH_SAMPLE_RATE == pytest.approx(pcm_seconds, rel=0.3)
        return
    decoded = decode(body)
    assert decoded.sample_rate == EXPECTED[response_format][1]
    assert decoded.seconds == pytest.approx(pcm_seconds, rel=0.3)


@pytest.mark.parametrize("speed", [0.25, 2.0, 4.0])
def test_speed_scales_the_duration_faithfully(
    client: openai.OpenAI, pcm_seconds: float, speed: float
) -> None:
    """Beyond Kokoro's own 0.5..2 the rest is a time-stretch: the length still follows."""
    body = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm", speed=speed
    ).content
    seconds = len(body) / 2 / SPEECH_SAMPLE_RATE
    assert seconds == pytest.approx(pcm_seconds / speed, rel=0.2)


def test_instructions_are_accepted(client: openai.OpenAI) -> None:
    body = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input="Hello.",
        instructions="Speak in a cheerful tone.",
        response_format="wav",
    ).content
    assert decode(body).seconds > 0.3
