"""Streaming: the first audio leaves before the whole text is synthesised; SSE events carry
the audio in base64 and end with a done event."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator

import pytest

from tests.runtime.conftest import RunningServer, serve_in_thread, tiny_settings
from tests.runtime_tts.conftest import SPEECH_SAMPLE_RATE, decode
from voicefleet_runtime.tts.chunking import Chunk
from voicefleet_runtime.tts.engine import RenderedChunk, SpeechEngine
from voicefleet_runtime.tts.voices import Voice

PARAGRAPH = (
    "The first sentence is short. The second one follows it, and it is a little longer. "
    "A third sentence keeps the engine busy. The fourth sentence is the last but one. "
    "And the fifth sentence closes the paragraph."
)


class EventLog:
    """One ordered record of what the server synthesised and what the client received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[str] = []

    def add(self, event: str) -> None:
        with self._lock:
            self.events.append(event)


class RecordingEngine(SpeechEngine):
    """The real engine; each finished chunk is also written to the log."""

    log: EventLog

    def render(self, chunk: Chunk, voice: Voice, speed: float) -> RenderedChunk:
        rendered = super().render(chunk, voice, speed)
        self.log.add("synthesised")
        return rendered


@pytest.fixture
def recording(speech_server: RunningServer) -> Iterator[EventLog]:
    """The shared server's loaded engine, recording each chunk it finishes, for one test."""
    loaded = speech_server.runtime.tts
    assert loaded is not None
    engine = RecordingEngine(loaded.model, loaded.voices, loaded.vocab, loaded.g2p)
    engine.log = EventLog()
    speech_server.runtime.tts = engine
    try:
        yield engine.log
    finally:
        speech_server.runtime.tts = loaded


def test_first_audio_leaves_before_the_text_is_synthesised(
    speech_server: RunningServer, recording: EventLog
) -> None:
    request = {"model": "tts-1", "input": PARAGRAPH, "voice": "af_heart", "response_format": "pcm"}
    received = bytearray()
    with (
        speech_server.client() as client,
        client.stream("POST", "/v1/audio/speech", json=request) as response,
    ):
        assert response.status_code == 200
        for piece in response.iter_bytes():
            if not received:
                recording.add("client received audio")
            received.extend(piece)
    chunks = recording.events.count("synthesised")
    assert chunks >= 3, recording.events
    first_heard = recording.events.index("client received audio")
    last_synthesised = len(recording.events) - 1 - recording.events[::-1].index("synthesised")
    assert first_heard < last_synthesised, recording.events
    assert len(received) / 2 / SPEECH_SAMPLE_RATE > 5


def test_sse_stream_carries_base64_audio_and_usage(speech_server: RunningServer) -> None:
    request = {
        "model": "gpt-4o-mini-tts",
        "input": "One. Two sentences here.",
        "voice": "alloy",
        "response_format": "wav",
        "stream_format": "sse",
    }
    with speech_server.client() as client:
        response = client.post("/v1/audio/speech", json=request)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    assert [event["type"] for event in events[-1:]] == ["speech.audio.done"]
    assert {event["type"] for event in events[:-1]} == {"speech.audio.delta"}
    audio = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    decoded = decode(audio)
    assert decoded.sample_rate == SPEECH_SAMPLE_RATE
    assert decoded.seconds > 1.0
    assert events[-1]["usage"]["input_tokens"] > 0


def test_tts_only_server_refuses_transcription(speech_server: RunningServer) -> None:
    """`--tts-model kokoro` alone: speech-to-text answers 404, not an endless 503."""
    settings = tiny_settings(stt_enabled=False, tts_model="kokoro", warmup=False)
    loaded = speech_server.runtime.tts
    assert loaded is not None
    for server in serve_in_thread(settings, tts_engine_factory=lambda _: loaded):
        with server.client() as client:
            refused = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("a.wav", b"RIFF", "audio/wav")},
                data={"model": "whisper-1"},
            )
            ready = client.get("/readyz")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "model_not_found"
        assert ready.json()["model"] == "kokoro"
