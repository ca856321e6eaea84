"""`voicefleet serve --tts-model kokoro` as a real process: it speaks, and SIGTERM in the
middle of a streamed answer lets that answer finish before the process exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.loopback import free_port
from tests.runtime_tts.conftest import decode
from voicefleet_runtime.readiness import wait_until_ready

GRACE_SECONDS = 180
TEXT = " ".join(
    f"Sentence {number} of this answer is spoken even though the server was asked to stop."
    for number in range(1, 5)
)


def draining(base_url: str) -> bool:
    return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 503


def test_tts_only_process_drains_a_stream_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "VOICEFLEET_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS)}
    voicefleet = Path(sys.executable).with_name("voicefleet")
    command = [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--tts-model", "kokoro"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until_ready(base_url, lambda: process.poll() is None, "voicefleet serve")
            request = {"model": "tts-1", "input": TEXT, "voice": "echo", "response_format": "mp3"}
            with (
                httpx.Client(base_url=base_url, timeout=GRACE_SECONDS) as client,
                client.stream("POST", "/v1/audio/speech", json=request) as streaming,
            ):
                assert streaming.status_code == 200
                received = streaming.iter_bytes()  # one iterator: dropping it closes the stream
                pieces = [next(received)]
                process.send_signal(signal.SIGTERM)
                while not draining(base_url):
                    time.sleep(0.05)
                refused = httpx.post(f"{base_url}/v1/audio/speech", json=request, timeout=10)
                pieces.extend(received)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "draining"
            assert decode(b"".join(pieces)).seconds > 10
            assert process.wait(timeout=GRACE_SECONDS) == 0, log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
