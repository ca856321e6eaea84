"""The attack table, against a real `voicefleet serve` on loopback: slow heads and bodies beside
honest traffic, decode bombs under a memory bound read from /proc, oversized forms, early
errors that close, and clients that vanish at every stage. Every wait is bounded; no test
asserts a duration, only bounds generous enough to prove that nobody is stuck."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_REFERENCE
from tests.loopback import wait_for
from tests.runtime.hostile import (
    ServerProcess,
    answer_or_close,
    connect,
    flac_bomb,
    lying_mp3,
    multipart,
    request_head,
    server_process,
    speech_wav,
)
from voicefleet_runtime import metric_names as names
from voicefleet_runtime.engine.models import resolve_model
from voicefleet_runtime.memory_budget import memory_budget

API_KEY = "hostile-test-key-5b1e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
TRANSCRIPTIONS = "/v1/audio/transcriptions"
UPLOAD_CAP = 16
SHUTDOWN_GRACE_SECONDS = 60
Upload = tuple[str, bytes]
STALL_SECONDS = 20.0
"""Generous bound for the server to answer or close a connection it must give up on."""
BOMB_PEAK_RSS_BOUND = 96 * 1024 * 1024
"""What all the decode bombs together may add to the server's peak RSS. Their budget is the
decoded audio of the longest allowed file (120 s here: 7.7 MB of float32) plus one frame;
before these limits the 55-byte FLAC alone took the process to 5.6 GB."""
BOMB_CPU_SECONDS_BOUND = 10.0
"""All bombs together; before, the 8-channel FLAC alone cost 40 CPU-seconds."""


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(
        tmp_path_factory.mktemp("attacked"),
        api_key=API_KEY,
        concurrency="1",
        queue_size="2",
        max_audio_seconds="150",
        upload_timeout_seconds="8",
        upload_min_bytes_per_second="2000",
        upload_rate_grace_seconds="3",
        max_uploads_in_progress=str(UPLOAD_CAP),
        header_timeout_seconds="2",
        keep_alive_timeout_seconds="2",
        shutdown_grace_seconds=str(SHUTDOWN_GRACE_SECONDS),
        # One window per engine step, so that a client leaving stops the engine mid-file.
        batched="off",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def jfk(shared_audio: Path) -> bytes:
    return (shared_audio / "jfk.flac").read_bytes()


@pytest.fixture(scope="module")
def long_speech(shared_audio: Path) -> bytes:
    """96 s of speech: four 30-second windows for the engine."""
    return speech_wav(shared_audio, 2)


def honest(server: ServerProcess, audio: bytes, **fields: str) -> httpx.Response:
    with server.client() as client:
        return client.post(
            TRANSCRIPTIONS,
            files={"file": ("speech.flac", audio)},
            data={"model": "tiny.en", **fields},
        )


def refusals(server: ServerProcess, reason: str) -> float:
    return server.gauge(names.REFUSALS_TOTAL, reason=reason)


def idle(server: ServerProcess) -> bool:
    metrics = server.metrics()
    return all(
        metrics[(name, ())] == 0
        for name in (names.UPLOADS_IN_PROGRESS, names.QUEUE_DEPTH, names.REQUESTS_IN_FLIGHT)
    )


class Trickler:
    """Upload bodies a few bytes at a time on raw sockets, from one thread."""

    def __init__(self, port: int, count: int, bytes_per_tick: int, body_size: int = 200_000):
        body = multipart({"model": "tiny.en"}, b"\0" * body_size)
        self.sockets = [connect(port) for _ in range(count)]
        self._rest = []
        for sock in self.sockets:
            sock.sendall(request_head(port, TRANSCRIPTIONS, len(body), AUTH) + body[:200])
            self._rest.append(body[200:])
        self._per_tick = bytes_per_tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for index, sock in enumerate(self.sockets):
                piece, self._rest[index] = (
                    self._rest[index][: self._per_tick],
                    self._rest[index][self._per_tick :],
                )
                try:
                    if piece:
                        sock.send(piece)
                except OSError:
                    self._rest[index] = b""

    def answers(self) -> list[bytes]:
        answers = [answer_or_close(sock, STALL_SECONDS) for sock in self.sockets]
        self.close()
        return answers

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def test_slow_heads_and_bodies_never_block_honest_requests(
    attacked: ServerProcess, jfk: bytes, wer: Callable[[str, str], float]
) -> None:
    port = attacked.port
    slow_heads = [connect(port) for _ in range(8)]
    for sock in slow_heads:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Le")
    # Above the minimum rate (3 KB/s): they hold upload places until the body deadline.
    steady = Trickler(port, 12, bytes_per_tick=300)
    # Stalled after their first bytes: below the minimum rate once the grace period is over.
    stalled = Trickler(port, 4, bytes_per_tick=0)
    try:
        wait_for(lambda: attacked.gauge(names.UPLOADS_IN_PROGRESS) == UPLOAD_CAP, 10, "16 uploads")
        # Upload places are full: one more upload is refused at once, and costs nothing.
        full = honest(attacked, jfk)
        assert full.status_code == 429, full.text
        assert full.json()["error"]["code"] == "uploads_full"

        for answer in stalled.answers():
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        # 12 slow uploads in progress, four times the engine's places (1 running, 2 queued):
        # they hold no engine place, so honest requests go through beside them.
        assert attacked.gauge(names.UPLOADS_IN_PROGRESS) >= 1
        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(lambda _: honest(attacked, jfk), range(3)))
        for response in responses:
            assert response.status_code == 200, response.text
            assert wer(JFK_REFERENCE, response.json()["text"]) <= 0.1
        for answer in steady.answers():
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        for sock in slow_heads:
            answer = answer_or_close(sock, STALL_SECONDS)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
            sock.close()
    finally:
        steady.close()
        stalled.close()
    wait_for(lambda: idle(attacked), STALL_SECONDS, "no upload in progress")
    assert refusals(attacked, "uploads_full") >= 1
    assert refusals(attacked, "upload_too_slow") >= 4
    assert refusals(attacked, "upload_timeout") + refusals(attacked, "upload_too_slow") >= 16
    assert refusals(attacked, "header_timeout") >= 8


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [({}, TRANSCRIPTIONS, b"401"), (AUTH, "/v1/no/such/path", b"404")],
    ids=["no key", "unknown path"],
)
def test_early_error_closes_instead_of_draining_the_body(
    attacked: ServerProcess, headers: dict[str, str], path: str, status: bytes
) -> None:
    sock = connect(attacked.port)
    # Declares 20 MB, sends 64 KB, then nothing: the server answers and hangs up.
    sock.sendall(request_head(attacked.port, path, 20_000_000, headers) + b"\0" * 65536)
    answer = answer_or_close(sock, STALL_SECONDS)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b"connection: close" in answer.lower()


def test_idle_keep_alive_connection_is_closed(attacked: ServerProcess) -> None:
    sock = connect(attacked.port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    # One answer, then the server hangs up (answer_or_close fails if it keeps it open).
    answer = answer_or_close(sock, STALL_SECONDS)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b'{"status":"ok"}')
    sock.close()


BOMBS: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "55-byte FLAC declaring 3 Hz (six hours)": (
        lambda: flac_bomb(3, 1, 1),
        400,
        "unsupported_audio_format",
    ),
    "55-byte FLAC declaring 1 MHz": (
        lambda: flac_bomb(1_048_575, 1, 1),
        400,
        "unsupported_audio_format",
    ),
    "1.6 MB FLAC of 8 channels at 192 kHz": (
        lambda: flac_bomb(192_000, 8, 46_000),
        413,
        "audio_too_long",
    ),
    "15 KB MP3 with a lying header": (lying_mp3, 413, "audio_too_long"),
    "302-byte FLAC declaring 82 s": (
        lambda: flac_bomb(16_000, 1, 20, total_samples=20 * 65535),
        400,
        "implausible_audio",
    ),
    "302-byte FLAC of 82 s, length undeclared": (
        lambda: flac_bomb(16_000, 1, 20),
        400,
        "implausible_audio",
    ),
}


def test_decode_bombs_are_refused_within_a_memory_and_cpu_bound(attacked: ServerProcess) -> None:
    peak_before = attacked.peak_rss_bytes()
    cpu_before = attacked.cpu_seconds()
    for name, (build, status, code) in BOMBS.items():
        response = honest(attacked, build())
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["code"] == code, name
    cpu = attacked.cpu_seconds() - cpu_before
    grown = attacked.peak_rss_bytes() - peak_before
    assert grown < BOMB_PEAK_RSS_BOUND, f"peak RSS grew by {grown / 2**20:.0f} MiB"
    assert cpu < BOMB_CPU_SECONDS_BOUND, f"the bombs cost {cpu:.1f} CPU-seconds"
    assert refusals(attacked, "unsupported_audio_format") >= 2
    assert refusals(attacked, "implausible_audio") >= 2
    assert refusals(attacked, "audio_too_long") >= 2
    assert attacked.client().get("/readyz").status_code == 200


def test_oversized_forms_and_fields_are_refused_without_echo(
    attacked: ServerProcess, jfk: bytes
) -> None:
    with attacked.client() as client:

        def post(
            data: dict[str, str], files: list[tuple[str, tuple[str, bytes]]]
        ) -> httpx.Response:
            return client.post(TRANSCRIPTIONS, data=data, files=files)

        one_file = [("file", ("a.flac", jfk))]
        many_fields = {f"field{index}": "x" for index in range(40)} | {"model": "tiny.en"}
        cases = {
            "40 fields": post(many_fields, one_file),
            "a 200 KB prompt": post({"model": "tiny.en", "prompt": "y" * 200_000}, one_file),
            "a 10 KB model name": post({"model": "m" * 10_000}, one_file),
            "two files": post({"model": "tiny.en"}, [*one_file, ("file", ("b.flac", jfk))]),
        }
        for name, response in cases.items():
            assert response.status_code == 400, (name, response.text)
            assert len(response.content) < 1000, name
        unknown = post({"model": "z" * 200}, one_file)
        assert unknown.status_code == 404
        assert "z" * 40 not in unknown.text
        assert len(unknown.content) < 1000
        # A bad language is refused before the audio is decoded: a bomb never gets that far.
        language = post({"model": "tiny.en", "language": "de"}, [("file", ("b", lying_mp3()))])
        assert language.status_code == 400
        assert language.json()["error"]["param"] == "language"


def raw_transcription(port: int, audio: bytes, **fields: str) -> socket.socket:
    body = multipart({"model": "tiny.en", **fields}, audio)
    sock = connect(port)
    sock.sendall(request_head(port, TRANSCRIPTIONS, len(body), AUTH) + body)
    return sock


def test_clients_leaving_at_every_stage_free_everything(
    attacked: ServerProcess, jfk: bytes, long_speech: bytes
) -> None:
    port = attacked.port
    # Before the body ends.
    half = connect(port)
    body = multipart({"model": "tiny.en"}, long_speech)
    half.sendall(request_head(port, TRANSCRIPTIONS, len(body), AUTH) + body[: len(body) // 2])
    wait_for(lambda: attacked.gauge(names.UPLOADS_IN_PROGRESS) == 1, 10, "the upload")
    half.close()
    wait_for(lambda: attacked.gauge(names.UPLOADS_IN_PROGRESS) == 0, 10, "the upload to end")

    # A full run of the long file, for the engine's cost of it.
    cpu_before = attacked.cpu_seconds()
    assert honest(attacked, long_speech).status_code == 200
    full_cost = attacked.cpu_seconds() - cpu_before

    # While running: the engine stops within one window (here a quarter of the file).
    running = raw_transcription(port, long_speech)
    wait_for(lambda: attacked.gauge(names.REQUESTS_IN_FLIGHT) == 1, 30, "the request to run")
    # While queued, behind it.
    queued = raw_transcription(port, jfk)
    wait_for(lambda: attacked.gauge(names.QUEUE_DEPTH) == 1, 30, "the second to queue")
    queued.close()
    wait_for(lambda: attacked.gauge(names.QUEUE_DEPTH) == 0, 10, "the queue to empty")
    left_at = attacked.cpu_seconds()
    running.close()
    wait_for(lambda: attacked.gauge(names.REQUESTS_IN_FLIGHT) == 0, 60, "the engine to stop")
    after_leaving = attacked.cpu_seconds() - left_at
    assert after_leaving < 0.6 * full_cost, (after_leaving, full_cost)

    # Streaming: gone before the first chunk, and gone after it.
    early = raw_transcription(port, long_speech, stream="true")
    early.close()
    streaming = raw_transcription(port, long_speech, stream="true")
    streaming.settimeout(60)
    assert b"data: " in streaming.recv(65536) + streaming.recv(65536)
    streaming.close()

    wait_for(lambda: idle(attacked), 60, "every gauge back to 0")
    stages = {
        stage: attacked.gauge(names.CLIENT_DISCONNECTS_TOTAL, stage=stage)
        for stage in ("queued", "running", "streaming")
    }
    assert min(stages.values()) >= 1, stages
    # Full capacity again: one running and two queued, all served.
    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(lambda _: honest(attacked, jfk), range(3)))
    assert [response.status_code for response in responses] == [200, 200, 200]
    # Everything this module sent so far, long files included, stayed within the budget a
    # pod's memory limit is set from.
    budget = memory_budget(
        engine="faster-whisper",
        gpu=False,
        model_weights_mib=(resolve_model("tiny.en", None).path / "model.bin").stat().st_size
        / 2**20,
        concurrency=1,
        queue_size=2,
        max_uploads_in_progress=UPLOAD_CAP,
        max_audio_seconds=150,
        batched_min_audio_seconds=None,
    )
    assert attacked.peak_rss_bytes() < budget.total_mib * 2**20, budget.describe()


def test_sigterm_cuts_off_half_sent_uploads_and_exits_after_accepted_work(
    attacked: ServerProcess, shared_audio: Path
) -> None:
    """Last in this module: it stops the module's server."""
    audio = speech_wav(shared_audio, 1)
    half_sent = Trickler(attacked.port, 3, bytes_per_tick=2000)
    with ThreadPoolExecutor(max_workers=1) as pool:
        accepted = pool.submit(honest, attacked, audio)
        wait_for(lambda: attacked.gauge(names.REQUESTS_IN_FLIGHT) == 1, 30, "a running request")
        attacked.process.terminate()
        for answer in half_sent.answers():
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer[:200]
        response = accepted.result(timeout=120)
    finished = time.monotonic()
    assert response.status_code == 200, response.text
    assert attacked.process.wait(timeout=SHUTDOWN_GRACE_SECONDS) == 0
    # The uploads still in progress did not hold the exit until the end of the grace period.
    assert time.monotonic() - finished < SHUTDOWN_GRACE_SECONDS / 2
