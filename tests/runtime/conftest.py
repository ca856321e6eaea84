"""Real servers for the runtime tests: each loads a real model once per module or session."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import httpx
import jiwer
import pytest
import uvicorn

from voicefleet_runtime.app import create_app
from voicefleet_runtime.readiness import wait_until_ready
from voicefleet_runtime.server import uvicorn_config
from voicefleet_runtime.settings import RuntimeSettings
from voicefleet_runtime.state import RuntimeState, TtsEngineFactory, load_tts_engine

# container format, codec, sample rate, channel layout: a spread of what clients upload
VARIANTS: dict[str, tuple[str, str, int, str]] = {
    "wav": ("wav", "pcm_s16le", 44_100, "stereo"),
    "ogg": ("ogg", "libopus", 48_000, "stereo"),
    "webm": ("webm", "libopus", 48_000, "mono"),
    "m4a": ("ipod", "aac", 22_050, "mono"),
    "mp3": ("mp3", "libmp3lame", 32_000, "mono"),
}


def encode_variant(source: Path, target: Path, variant: str) -> Path:
    container_format, codec, rate, layout = VARIANTS[variant]
    with av.open(str(source)) as decoded, av.open(str(target), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)  # a codec name alone doesn't tell mypy
        formats = stream.codec_context.codec.audio_formats
        assert formats, f"{codec} lists no sample formats"
        sample_format = formats[0].name
        resampler = av.AudioResampler(format=sample_format, layout=layout, rate=rate)
        for frame in decoded.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))
    return target


API_KEY = "test-key-7f3a"
SMALL_UPLOAD_LIMIT = 3 * 1024 * 1024
SHORT_AUDIO_LIMIT = 30.0


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


@dataclass
class RunningServer:
    base_url: str
    runtime: RuntimeState
    headers: dict[str, str]

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout)


def serve_in_thread(
    settings: RuntimeSettings, tts_engine_factory: TtsEngineFactory = load_tts_engine
) -> Iterator[RunningServer]:
    """uvicorn on an ephemeral loopback port in a thread: the real HTTP stack, in process."""
    app = create_app(settings, tts_engine_factory=tts_engine_factory)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, thread.is_alive, "the test server")
        key = settings.resolved_api_key()
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        yield RunningServer(base_url, app.state.runtime, headers)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def tiny_settings(**overrides: object) -> RuntimeSettings:
    values: dict[str, object] = {
        "model": "tiny.en",
        "device": "cpu",
        "cpu_threads": 2,
        "beam_size": 1,
        "concurrency": 1,
        "queue_size": 8,
        "max_upload_bytes": SMALL_UPLOAD_LIMIT,
        "max_audio_seconds": SHORT_AUDIO_LIMIT,
        "api_key": API_KEY,
    }
    values.update(overrides)
    return RuntimeSettings.model_validate(values)


@pytest.fixture(scope="session")
def tiny_server() -> Iterator[RunningServer]:
    """tiny.en with a key, a 3 MiB upload limit and a 30 s audio limit; greedy for speed."""
    yield from serve_in_thread(tiny_settings())


@pytest.fixture(scope="session")
def tiny_client(tiny_server: RunningServer) -> Iterator[httpx.Client]:
    with tiny_server.client() as client:
        yield client


@pytest.fixture(scope="session")
def audio_variants(shared_audio: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """jfk.flac re-encoded as wav (44.1 kHz stereo), ogg/opus, webm/opus, m4a/aac and mp3."""
    folder = tmp_path_factory.mktemp("variants")
    return {
        name: encode_variant(shared_audio / "jfk.flac", folder / f"jfk.{name}", name)
        for name in VARIANTS
    }


@pytest.fixture(scope="session")
def wer() -> Callable[[str, str], float]:
    """Word error rate on lower-cased text without punctuation."""
    return word_error_rate


@pytest.fixture(scope="session")
def start_server() -> Callable[[RuntimeSettings], AbstractContextManager[RunningServer]]:
    """For tests that need a server of their own (other limits, fresh metrics)."""
    return contextmanager(serve_in_thread)


@pytest.fixture(scope="session")
def make_tiny_settings() -> Callable[..., RuntimeSettings]:
    return tiny_settings
