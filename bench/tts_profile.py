"""Where a TTS server's CPU goes: `perf record` on a `voicefleet serve --tts-model kokoro`
process while it answers speech requests, summarised per shared library and per thread.

It answers "is the server doing more than synthesis?": onnxruntime's share is the synthesis,
libpython's the G2P, normaliser, HTTP and event loop, the codecs' the encoding, and any BLAS
share numpy's (the G2P's neural fallback). Needs `perf` (Debian linux-perf) and root or
perf_event_paranoid <= 1.

    .venv/bin/python bench/tts_profile.py [--requests 4] [--out TMPDIR/tts-perf.data]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from tts_throughput import free_port, server
from tts_workload import TEXTS, VOICE

SAMPLES_PER_SECOND = 250
TEXT_WITH_UNKNOWN_WORDS = "Zorblax met Kwazulu and Xanthippe in Quokkaville."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "tts-perf.data"))
    args = parser.parse_args()
    port = free_port()
    env = {
        "VOICEFLEET_CONCURRENCY": "1",
        "VOICEFLEET_TTS_THREADS": "1",
        "VOICEFLEET_TTS_VOICES": f'["{VOICE}"]',
        "VOICEFLEET_LOG_LEVEL": "warning",
    }
    with server(port, "--tts-model", "kokoro", env=env) as process:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
        texts = [*TEXTS[: args.requests], TEXT_WITH_UNKNOWN_WORDS]
        perf = subprocess.Popen(
            [
                "perf",
                "record",
                "-F",
                str(SAMPLES_PER_SECOND),
                "-o",
                args.out,
                "-p",
                str(process.pid),
            ],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
        for text in texts:
            for response_format in ("pcm", "mp3"):
                body = {"model": "tts-1", "input": text, "voice": VOICE}
                response = client.post(
                    "/v1/audio/speech", json={**body, "response_format": response_format}
                )
                response.raise_for_status()
        perf.send_signal(signal.SIGINT)
        perf.wait()
    print(f"{len(texts)} texts, each as pcm and mp3, {SAMPLES_PER_SECOND} samples/s")
    for sort in ("dso", "pid,dso"):
        report = subprocess.run(
            ["perf", "report", "-i", args.out, "--no-children", "--sort", sort, "--stdio"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line for line in report.splitlines() if "%" in line and not line.startswith("#")]
        print(f"\n== by {'thread and library' if ',' in sort else 'library'} (top 10)")
        print("\n".join(rows[:10]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
