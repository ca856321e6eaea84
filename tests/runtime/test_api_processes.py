"""`voicefleet serve` with VOICEFLEET_API_PROCESSES=2: one engine process and two API
processes on one port (api_processes.py), as real processes on loopback, with the torch
engine's batching loop on the CPU so the batching metrics cross processes too."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from tests.conftest import JFK_REFERENCE
from tests.loopback import free_port, serve_on_loopback, wait_for
from voicefleet_runtime.api_processes import listening_sockets
from voicefleet_runtime.exit_status import EXIT_API_PROCESS_LOST, EXIT_LOAD_FAILED, EXIT_OK
from voicefleet_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.slow

PROCESSES = 2
CONCURRENCY = 4
UPLOAD_PLACES = 16
GRACE_SECONDS = 180
TRANSCRIPTIONS = "/v1/audio/transcriptions"


def serving_env() -> dict[str, str]:
    return {
        **os.environ,
        "VOICEFLEET_API_PROCESSES": str(PROCESSES),
        "VOICEFLEET_ENGINE": "torch",
        "VOICEFLEET_CONTINUOUS_BATCHING": "on",
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_CPU_THREADS": "2",
        "VOICEFLEET_BEAM_SIZE": "1",
        "VOICEFLEET_CONCURRENCY": str(CONCURRENCY),
        "VOICEFLEET_QUEUE_SIZE": "8",
        "VOICEFLEET_MAX_UPLOADS_IN_PROGRESS": str(UPLOAD_PLACES),
        "VOICEFLEET_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }


def api_processes_of(server: subprocess.Popen[bytes]) -> list[int]:
    """The server's children that multiprocessing spawned to serve (not its helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if parent == server.pid and b"multiprocessing.spawn" in command:
            found.append(int(entry.name))
    return found


def samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, on a new connection (any API process may answer)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def transcribe(base_url: str, audio: bytes, timeout: float = 120) -> httpx.Response:
    return httpx.post(
        f"{base_url}{TRANSCRIPTIONS}",
        files={"file": ("speech.flac", audio)},
        data={"model": "tiny.en"},
        timeout=timeout,
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    with serve_on_loopback(port, serving_env(), log, "--model", "tiny.en") as process:
        base_url = f"http://127.0.0.1:{port}"
        # Ready once one process answers ready; the others turn ready within moments (all wait
        # on the engine process). Each probe is a new connection, to either process.
        wait_for(
            lambda: all(
                httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200 for _ in range(8)
            ),
            30,
            "every API process to be ready",
        )
        yield process, base_url, log


def test_the_api_processes_share_the_port_the_engine_and_their_metrics(
    started: tuple[subprocess.Popen[bytes], str, Path],
    shared_audio: Path,
    wer: Callable[[str, str], float],
) -> None:
    process, base_url, _ = started
    assert len(api_processes_of(process)) == PROCESSES
    jfk = (shared_audio / "jfk.flac").read_bytes()
    requests = 6
    with ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(lambda _: transcribe(base_url, jfk), range(requests)))
    assert [answer.status_code for answer in answers] == [200] * requests
    assert all(wer(JFK_REFERENCE, answer.json()["text"]) < 0.1 for answer in answers)

    refused = httpx.post(
        f"{base_url}/v1/audio/translations",
        files={"file": ("speech.flac", jfk)},
        data={"model": "tiny.en"},
        timeout=30,
    )
    assert refused.status_code == 400
    assert "English-only" in refused.json()["error"]["message"]

    # Every scrape, whichever process answers, sums every process's series: each has its own
    # upload places, while the engine's slots (concurrency) are one engine's.
    done = (("endpoint", TRANSCRIPTIONS), ("status", "200"))
    for _ in range(4):
        scrape = samples(base_url)
        assert scrape[("voicefleet_upload_capacity", ())] == PROCESSES * UPLOAD_PLACES
        assert scrape[("voicefleet_concurrency_limit", ())] == CONCURRENCY
        assert scrape[("voicefleet_requests_total", done)] == requests
        assert scrape[("voicefleet_audio_seconds_total", ())] == pytest.approx(11.0 * requests)
        assert scrape[("voicefleet_ready", ())] == 1
        # The engine's own series, from the engine process.
        assert scrape[("voicefleet_decode_steps_total", ())] > 0
        assert scrape[("voicefleet_queue_depth", ())] == 0


def test_sigterm_drains_every_api_process_then_the_engine_process_exits(
    started: tuple[subprocess.Popen[bytes], str, Path], shared_audio: Path
) -> None:
    process, base_url, log = started
    children = api_processes_of(process)
    long_speech = (shared_audio / "multilingual.mp3").read_bytes()  # 60 s
    accepted = 3
    with ThreadPoolExecutor(accepted) as pool:
        running = [pool.submit(transcribe, base_url, long_speech) for _ in range(accepted)]

        def all_accepted() -> bool:
            scrape = samples(base_url)
            waiting_or_running = (
                scrape[("voicefleet_queue_depth", ())]
                + scrape[("voicefleet_requests_in_flight", ())]
            )
            return waiting_or_running == accepted

        wait_for(all_accepted, 60, "the requests to be accepted")
        process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: httpx.get(f"{base_url}/readyz", timeout=5).status_code == 503,
            10,
            "/readyz to turn 503",
        )
        assert transcribe(base_url, long_speech, timeout=10).status_code == 503
        answers = [future.result() for future in running]
    assert [answer.status_code for answer in answers] == [200] * accepted
    assert all("Permission is hereby granted" in answer.json()["text"] for answer in answers)
    assert process.wait(timeout=GRACE_SECONDS) == EXIT_OK, log.read_text()
    assert not any(Path(f"/proc/{child}").exists() for child in children)


def test_an_api_process_that_dies_stops_the_server_with_its_own_status(
    started: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, _, log = started
    lost, kept = api_processes_of(process)
    os.kill(lost, signal.SIGKILL)
    assert process.wait(timeout=GRACE_SECONDS) == EXIT_API_PROCESS_LOST
    assert not Path(f"/proc/{kept}").exists()
    assert "voicefleet-api-" in log.read_text()


def test_several_api_processes_serve_speech_to_text_only() -> None:
    with pytest.raises(ValidationError, match="speech-to-text only"):
        RuntimeSettings(api_processes=2, tts_model="kokoro")


def test_connections_to_the_api_sockets_are_accepted_with_nagle_off() -> None:
    """What asyncio (uvicorn's server) makes of a connection accepted on each process's socket:
    TCP_NODELAY on, as on a socket uvicorn binds itself. With it off, a response's body waited
    for the client's delayed ACK of the response's head, ~40 ms a request."""

    async def accepted_nodelay(listening: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connection(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connection = writer.get_extra_info("socket")
            accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            nodelay = await asyncio.wait_for(accepted, timeout=30)
            writer.close()
            await writer.wait_closed()
            return nodelay

    # One socket: with two on the port, the kernel may queue the connection on the other.
    (listening,) = listening_sockets("127.0.0.1", 0, 1)
    with listening:
        assert asyncio.run(accepted_nodelay(listening))


def test_a_port_in_use_ends_the_server_with_the_load_failed_status() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        voicefleet = Path(sys.executable).with_name("voicefleet")
        finished = subprocess.run(
            [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=serving_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert finished.returncode == EXIT_LOAD_FAILED
    assert f"cannot listen on 127.0.0.1:{port}" in finished.stderr


def test_api_processes_stop_when_the_engine_process_is_killed(
    started: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, _, log = started
    children = api_processes_of(process)
    process.kill()  # no drain, no forwarding: as an OOM kill would end it
    process.wait()
    wait_for(
        lambda: not any(Path(f"/proc/{child}").exists() for child in children),
        30,
        "the API processes to stop",
    )
    assert "the engine process ended: stopping" in log.read_text()


def test_a_model_that_does_not_load_ends_every_process_with_the_load_failed_status(
    tmp_path: Path,
) -> None:
    voicefleet = Path(sys.executable).with_name("voicefleet")
    port, missing = free_port(), tmp_path / "no-such-model"
    finished = subprocess.run(
        [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port), "--model", missing],
        env=serving_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == EXIT_LOAD_FAILED
    assert "the model could not be loaded" in finished.stderr
