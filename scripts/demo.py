"""The embedded default: serve the packaged tiny.en and Kokoro models in one process,
transcribe a real recording, then speak a sentence with our TTS and transcribe it back.

No cluster, no GPU, no network: the runtime starts as a subprocess on loopback, exactly as
a pod would run it, and this script is its first client. It prints the transcripts, then
stops the server with SIGTERM, the way Kubernetes does.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from voicefleet_runtime.readiness import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AUDIO = ROOT.parent / "shared" / "audio" / "jfk.flac"
SENTENCE = "Dr. Lee's train leaves at 9:30, and the ticket costs $12.50."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def speak_and_hear(base_url: str, model: str, sentence: str) -> None:
    """Our TTS speaks the sentence; our STT, in the same server, writes down what it heard."""
    started = time.monotonic()
    spoken = httpx.post(
        f"{base_url}/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": sentence, "response_format": "flac"},
        timeout=120,
    )
    spoken.raise_for_status()
    speaking = time.monotonic() - started
    heard = httpx.post(
        f"{base_url}/v1/audio/transcriptions",
        files={"file": ("speech.flac", spoken.content)},
        data={"model": model},
        timeout=120,
    )
    heard.raise_for_status()
    print(f"demo: spoke {len(spoken.content) / 1024:.0f} KiB of flac in {speaking:.2f} s")
    print(f"said:  {sentence}")
    print(f"heard: {heard.json()['text'].strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("audio", nargs="?", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--say", default=SENTENCE, help="the sentence to speak and hear back")
    args = parser.parse_args()
    if not args.audio.exists():
        raise SystemExit(f"no audio file at {args.audio}")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    voicefleet = Path(sys.executable).with_name("voicefleet")
    env = {**os.environ, "VOICEFLEET_DEVICE": os.environ.get("VOICEFLEET_DEVICE", "cpu")}
    print(
        f"demo: starting `voicefleet serve --model {args.model} --tts-model kokoro` on {base_url}",
        flush=True,
    )
    server = subprocess.Popen(
        [
            str(voicefleet),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            args.model,
            "--tts-model",
            "kokoro",
        ],
        env=env,
    )
    try:
        started = time.monotonic()
        wait_until_ready(base_url, lambda: server.poll() is None, "voicefleet serve", 180)
        print(f"demo: ready in {time.monotonic() - started:.1f} s (model loaded, warm-up done)")
        started = time.monotonic()
        with args.audio.open("rb") as audio:
            response = httpx.post(
                f"{base_url}/v1/audio/transcriptions",
                files={"file": (args.audio.name, audio)},
                data={"model": args.model, "response_format": "verbose_json"},
                timeout=120,
            )
        response.raise_for_status()
        body = response.json()
        elapsed = time.monotonic() - started
        print(
            f"demo: {args.audio.name}: {body['duration']:.1f} s of {body['language']} audio "
            f"in {elapsed:.2f} s ({body['duration'] / elapsed:.1f}x real time)"
        )
        print(body["text"].strip())
        speak_and_hear(base_url, args.model, args.say)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
