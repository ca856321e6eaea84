"""The runtime on a GPU through HTTP: the PyTorch engine served by `voicefleet serve`.

Baseline: the same engine (`TorchWhisperEngine`, same model, device and precision) called
in-process, one request after another, on the same clip decoded by the runtime's own
decoder. Then a real `voicefleet serve` subprocess on the same GPU, driven over HTTP at
concurrency 1 (interleaved request by request with the baseline) and at higher concurrency
(server slots = clients). Prints audio-seconds per second, p50 latency and the ratios, then
the server's GPU series and a SIGTERM drain with requests in flight.

    python bench/gpu_runtime_http.py --model-dir DIR --audio jfk.flac [--precision float16]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from voicefleet_runtime.audio import decode_audio
from voicefleet_runtime.engine.base import SAMPLE_RATE, DecodeOptions
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.readiness import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(args: argparse.Namespace, port: int, slots: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "VOICEFLEET_ENGINE": "torch",
        "VOICEFLEET_DEVICE": args.device,
        "VOICEFLEET_PRECISION": args.precision,
        "VOICEFLEET_CONCURRENCY": str(slots),
        "VOICEFLEET_QUEUE_SIZE": "64",
        "VOICEFLEET_BEAM_SIZE": "1",
        "VOICEFLEET_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "operator")])
        + os.pathsep
        + os.environ.get("PYTHONPATH", ""),
    }
    command = [sys.executable, "-m", "voicefleet_operator.cli", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--model", str(args.model_dir)]
    server = subprocess.Popen(command, env=env)
    wait_until_ready(f"http://127.0.0.1:{port}", lambda: server.poll() is None, "the server", 300)
    return server


def wait_accepted(url: str, count: int, timeout: float = 30) -> None:
    """Until the server reports `count` requests running or queued (SIGTERM must drain them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("voicefleet_queue_depth ", "voicefleet_requests_in_flight "))
        }
        if sum(values.values()) >= count:
            return
        time.sleep(0.01)
    raise SystemExit(f"the server never held {count} requests at once")


def post(client: httpx.Client, url: str, audio: bytes, name: str) -> tuple[float, str]:
    started = time.perf_counter()
    response = client.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": (name, audio)},
        data={"model": "whisper-1"},
        timeout=120,
    )
    response.raise_for_status()
    return time.perf_counter() - started, str(response.json()["text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="float16")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    audio_bytes = args.audio.read_bytes()
    duration = len(decode_audio(audio_bytes, max_seconds=3600)) / SAMPLE_RATE

    model = ResolvedModel(name="tiny.en", path=args.model_dir, multilingual=False)
    engine = TorchWhisperEngine.load(
        model, device=args.device, precision=args.precision, cpu_threads=0
    )
    options = DecodeOptions(beam_size=1)

    def in_process() -> float:
        started = time.perf_counter()
        audio = decode_audio(audio_bytes, max_seconds=3600)
        _, segments = engine.transcribe(audio, options)
        for _ in segments:
            pass
        return time.perf_counter() - started

    in_process()
    rows: list[tuple[str, float, float]] = []
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port, slots=1)
    baseline_times, single_times = [], []
    with httpx.Client() as client:
        post(client, url, audio_bytes, args.audio.name)
        for index in range(args.requests):
            # Alternate who goes first so drift on a shared GPU host hits both sides alike.
            if index % 2:
                baseline_times.append(in_process())
                single_times.append(post(client, url, audio_bytes, args.audio.name)[0])
            else:
                single_times.append(post(client, url, audio_bytes, args.audio.name)[0])
                baseline_times.append(in_process())
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    rows.append(("in-process engine", duration / statistics.fmean(baseline_times), 0.0))
    rows[0] = (rows[0][0], rows[0][1], statistics.median(baseline_times))
    rows.append(
        (
            "server, 1 client",
            duration / statistics.fmean(single_times),
            statistics.median(single_times),
        )
    )

    for clients in args.concurrency:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(args, port, slots=clients)

        def one(_: int, url: str = url) -> float:
            with httpx.Client() as client:
                return post(client, url, audio_bytes, args.audio.name)[0]

        # Warm every engine thread: CUDA libraries set up per-thread state on first use.
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(2):
                list(pool.map(one, range(clients)))

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - started
        rows.append(
            (
                f"server, {clients} clients",
                duration * args.requests / wall,
                statistics.median(latencies),
            )
        )
        if clients == args.concurrency[-1]:
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
            gpu_lines = [
                line
                for line in metrics.splitlines()
                if line.startswith(
                    ("voicefleet_gpu_", "voicefleet_model_info", "voicefleet_model_load")
                )
            ]

            # SIGTERM with work in flight: every accepted request must still come back 200.
            def status_of(_: int, url: str = url) -> str:
                try:
                    with httpx.Client() as client:
                        response = client.post(
                            f"{url}/v1/audio/transcriptions",
                            files={"file": (args.audio.name, audio_bytes)},
                            data={"model": "whisper-1"},
                            timeout=120,
                        )
                    return str(response.status_code)
                except httpx.TransportError:
                    return "refused"

            with ThreadPoolExecutor(clients * 2) as pool:
                futures = [pool.submit(status_of, i) for i in range(clients * 2)]
                wait_accepted(url, clients * 2)
                server.send_signal(signal.SIGTERM)
                late = [pool.submit(status_of, i) for i in range(4)]
                drained = [future.result() for future in futures]
                after = [future.result() for future in late]
            code = server.wait(timeout=120)
        else:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    base = rows[0][1]
    print(
        f"\ntorch engine, {args.device} {args.precision}, {duration:.1f} s clip, "
        f"{args.requests} requests a row"
    )
    print(f"{'run':<22}{'audio s/s':>11}{'p50 ms':>9}{'x base':>8}{'p50 +ms':>9}")
    for label, throughput, p50 in rows:
        print(
            f"{label:<22}{throughput:>11.1f}{p50 * 1000:>9.0f}{throughput / base:>8.2f}"
            f"{(p50 - rows[0][2]) * 1000:>+9.0f}"
        )
    print("\n/metrics on the GPU server:")
    print("\n".join(gpu_lines))
    print(
        f"\nSIGTERM after {len(drained)} requests were sent: statuses {sorted(drained)}; "
        f"requests sent after SIGTERM: {sorted(after)}; exit code {code}"
    )


if __name__ == "__main__":
    main()
