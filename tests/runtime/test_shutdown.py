"""SIGTERM on a real `voicefleet serve` process: accepted work finishes, new work gets 503."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import free_port, serve_on_loopback, wait_for

GRACE_SECONDS = 60
ACCEPTED = 3  # one running, two queued


def gauges(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_CPU_THREADS": "2",
        "VOICEFLEET_BEAM_SIZE": "1",
        "VOICEFLEET_CONCURRENCY": "1",
        "VOICEFLEET_QUEUE_SIZE": "4",
        "VOICEFLEET_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    with serve_on_loopback(port, env, tmp_path / "server.log", "--model", "tiny.en") as process:
        yield process, f"http://127.0.0.1:{port}"


def transcribe(base_url: str, audio: bytes) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("speech.mp3", audio)},
        data={"model": "tiny.en"},
        timeout=GRACE_SECONDS,
    )


def test_sigterm_drains_running_and_queued_requests(
    server_process: tuple[subprocess.Popen[bytes], str], shared_audio: Path
) -> None:
    process, base_url = server_process
    audio = (shared_audio / "multilingual.mp3").read_bytes()
    with ThreadPoolExecutor(max_workers=ACCEPTED) as pool:
        accepted: list[Future[httpx.Response]] = [
            pool.submit(transcribe, base_url, audio) for _ in range(ACCEPTED)
        ]

        def one_running_two_queued() -> bool:
            now = gauges(base_url)
            return (
                now["voicefleet_requests_in_flight"] == 1
                and now["voicefleet_queue_depth"] == ACCEPTED - 1
            )

        wait_for(one_running_two_queued, 30, "one request running and two queued")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)

        wait_for(
            lambda: httpx.get(f"{base_url}/readyz", timeout=2).status_code == 503,
            5,
            "/readyz to fail after SIGTERM",
        )
        assert httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
        refused = transcribe(base_url, audio)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"

        for future in accepted:
            response = future.result(timeout=GRACE_SECONDS)
            assert response.status_code == 200, response.text
            assert "permission" in response.json()["text"].lower()

    assert process.wait(timeout=GRACE_SECONDS) == 0
    assert time.monotonic() - signalled < GRACE_SECONDS
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/healthz", timeout=2)
