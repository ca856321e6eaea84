"""Throughput and latency of the runtime against in-process faster-whisper, same model and threads.

Baseline: faster-whisper's WhisperModel called sequentially in this process (decoding the file
included, as the server decodes every upload). Then a real `voicefleet serve` subprocess with
the same model, compute type, beam size and thread count, driven over HTTP by 1, 4 and 8
concurrent clients. Prints audio-seconds per second, p50/p95 latency and the ratios to the
baseline. Goal: throughput ratio >= 0.95 and p50 overhead <= 30 ms at concurrency 1.

    .venv/bin/python bench/runtime_throughput.py [--requests 24] [--audio ../shared/audio/jfk.flac]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AUDIO = ROOT.parent / "shared" / "audio" / "jfk.flac"


@dataclass(frozen=True)
class Run:
    label: str
    latencies: list[float]
    wall_seconds: float
    audio_seconds: float

    @property
    def throughput(self) -> float:
        return self.audio_seconds / self.wall_seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def baseline(args: argparse.Namespace, duration: float) -> Run:
    from faster_whisper import WhisperModel

    from voicefleet_runtime.engine.models import resolve_model

    model = WhisperModel(
        str(resolve_model(args.model, None).path),
        device="cpu",
        compute_type=args.compute_type,
        cpu_threads=args.threads,
        local_files_only=True,
    )
    for _ in model.transcribe(str(args.audio), beam_size=args.beam_size)[0]:
        pass  # warm-up, as the server does before it is ready
    latencies = []
    started = time.perf_counter()
    for _ in range(args.requests):
        begun = time.perf_counter()
        segments, _ = model.transcribe(str(args.audio), beam_size=args.beam_size)
        "".join(segment.text for segment in segments)
        latencies.append(time.perf_counter() - begun)
    wall = time.perf_counter() - started
    return Run("in-process faster-whisper", latencies, wall, duration * args.requests)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_PRECISION": args.compute_type,
        "VOICEFLEET_CPU_THREADS": str(args.threads),
        "VOICEFLEET_BEAM_SIZE": str(args.beam_size),
        "VOICEFLEET_CONCURRENCY": "1",
        "VOICEFLEET_QUEUE_SIZE": "64",
        "VOICEFLEET_LOG_LEVEL": "warning",
    }
    voicefleet = Path(sys.executable).with_name("voicefleet")
    process = subprocess.Popen(
        [
            str(voicefleet),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            args.model,
        ],
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server was not ready in 120 s")


async def drive(
    base_url: str, audio: bytes, concurrency: int, requests: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = requests

    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                begun = time.perf_counter()
                response = await client.post(
                    "/v1/audio/transcriptions",
                    files={"file": ("audio", audio)},
                    data={"model": "whisper-1"},
                )
                response.raise_for_status()
                latencies.append(time.perf_counter() - begun)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    from faster_whisper import decode_audio

    duration = len(decode_audio(str(args.audio))) / 16_000
    audio = args.audio.read_bytes()
    print(
        f"model {args.model}, {args.compute_type}, beam {args.beam_size}, {args.threads} threads; "
        f"{args.audio.name} ({duration:.1f} s) x {args.requests} requests per row",
        flush=True,
    )
    base = baseline(args, duration)
    runs = [base]
    process, base_url = start_server(args)
    try:
        asyncio.run(drive(base_url, audio, 1, 2))  # connection and page-cache warm-up
        for concurrency in args.concurrency:
            latencies, wall = asyncio.run(drive(base_url, audio, concurrency, args.requests))
            runs.append(
                Run(f"server, {concurrency} concurrent", latencies, wall, duration * args.requests)
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    header = f"{'run':<28}{'audio s/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'x base':>8}{'p50 +ms':>9}"
    print(header)
    print("-" * len(header))
    for run in runs:
        print(
            f"{run.label:<28}{run.throughput:>10.2f}{run.percentile(0.5) * 1000:>9.0f}"
            f"{run.percentile(0.95) * 1000:>9.0f}{run.throughput / base.throughput:>8.3f}"
            f"{(run.percentile(0.5) - base.percentile(0.5)) * 1000:>+9.0f}"
        )
    single = runs[1]
    ratio = single.throughput / base.throughput
    overhead_ms = (single.percentile(0.5) - base.percentile(0.5)) * 1000
    print(
        f"\nconcurrency 1: throughput ratio {ratio:.3f} (goal >= 0.95), "
        f"p50 overhead {overhead_ms:+.0f} ms (goal <= 30)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
