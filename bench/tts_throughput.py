"""Text-to-speech: in-process Kokoro against the server, in the same run, on this machine.

Baseline: the same SpeechEngine the server uses (model, voices, G2P, one onnxruntime thread
per inference), called in this process from `c` threads. Server: a real `voicefleet serve
--tts-model kokoro` subprocess (concurrency 8, one onnxruntime thread per inference, the
result cache on) over HTTP with `c` synchronous clients, response_format pcm so both sides
do the same work. At concurrency 1 the two are interleaved text by text, the side that goes
first alternating, so drift on a shared machine hits both alike; ratios are per round,
summarised by their median.

Also measured:
- first audio of a ~500-character paragraph: the server's time to its first body byte,
  against the baseline's time to synthesise the paragraph's first chunk;
- the cache: a hit's latency against a miss's, and cache bytes per cached second of audio
  (pcm and mp3);
- batching across requests on CPU: whether the graph can batch at all, and two requests on
  one thread each against one request on two threads;
- resident memory of a TTS-only server and of one serving tiny.en and Kokoro together.

Goals (issue 9): throughput ratio >= 0.95 and p50 overhead <= 30 ms at concurrency 1; first
audio <= first chunk + 30 ms.

    .venv/bin/python bench/tts_throughput.py [--rounds 2] [--concurrency 1 4 8]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from voicefleet_runtime.tts.assets import DEFAULT_ASSETS_DIR
from voicefleet_runtime.tts.engine import SpeechEngine, load_speech_engine
from voicefleet_runtime.tts.model import SAMPLE_RATE, KokoroOnnx
from voicefleet_runtime.tts.normalize import normalize_text

VOICE = "af_heart"
TEXTS = (
    "The meeting starts at 9:30 in the main hall.",
    "Please bring your badge and a copy of the agenda.",
    "Lunch will be served on the second floor at noon.",
    "The train to the airport leaves every 15 minutes.",
    "Our quarterly revenue grew by 12% to $4.5 million.",
    "Dr. Brown will present the results of the study.",
    "Remember to save your work before the update starts.",
    "The library closes early on Fridays during the summer.",
)
PARAGRAPH = (
    "Welcome to the quarterly review. Over the last three months the team shipped four "
    "releases, closed more than two hundred issues, and cut the median response time by a "
    "third. Customers noticed: support tickets fell by 18% while active users grew. There is "
    "still work to do on onboarding, where too many people drop out before their first "
    "project, and on the mobile app, which is slower than it should be. Let us start."
)
SETTLE_SECONDS = 0.3


def percentile50(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def server(port: int, *extra: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    voicefleet = Path(sys.executable).with_name("voicefleet")
    command = [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port), *extra]
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server was not ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Sides:
    def __init__(self, engine: SpeechEngine, base_url: str) -> None:
        self.engine = engine
        self.voice = engine.voices.voices[VOICE]
        self.client = httpx.Client(base_url=base_url, timeout=600)

    def in_process(self, text: str) -> tuple[float, float]:
        """(latency, audio seconds)"""
        started = time.perf_counter()
        audio = self.engine.speak(normalize_text(text), self.voice, 1.0)
        return time.perf_counter() - started, audio.shape[0] / SAMPLE_RATE

    def over_http(self, text: str, response_format: str = "pcm") -> tuple[float, float]:
        started = time.perf_counter()
        response = self.client.post(
            "/v1/audio/speech",
            json={
                "model": "tts-1",
                "input": text,
                "voice": VOICE,
                "response_format": response_format,
            },
        )
        response.raise_for_status()
        return time.perf_counter() - started, len(response.content) / 2 / SAMPLE_RATE

    def metric(self, name: str) -> float:
        """An unlabelled sample of the server's /metrics."""
        text = self.client.get("/metrics").text
        return next(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(f"{name} ")
        )

    def first_audio_http(self, text: str) -> float:
        started = time.perf_counter()
        body = {"model": "tts-1", "input": text, "voice": VOICE, "response_format": "pcm"}
        with self.client.stream("POST", "/v1/audio/speech", json=body) as response:
            for _ in response.iter_raw():
                return time.perf_counter() - started
        raise AssertionError("no body")

    def first_chunk_in_process(self, text: str) -> float:
        started = time.perf_counter()
        chunk = next(iter(self.engine.chunks(normalize_text(text))))
        self.engine.render(chunk, self.voice, 1.0)
        return time.perf_counter() - started


def run_phase(
    call: Callable[[str], tuple[float, float]], texts: Sequence[str], concurrency: int
) -> tuple[list[float], float, float]:
    """(latencies, audio seconds, wall seconds)"""
    time.sleep(SETTLE_SECONDS)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(call, texts))
    wall = time.perf_counter() - started
    return [latency for latency, _ in results], sum(seconds for _, seconds in results), wall


def unique(texts: Sequence[str], tag: str) -> list[str]:
    """Distinct texts per phase so the server's cache never answers a throughput request."""
    return [f"{text} ({tag}.)" for text in texts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args()

    engine = load_speech_engine(DEFAULT_ASSETS_DIR, (VOICE,), threads=1)
    port = free_port()
    env = {
        "VOICEFLEET_CONCURRENCY": str(max(args.concurrency)),
        "VOICEFLEET_QUEUE_SIZE": "64",
        "VOICEFLEET_TTS_THREADS": "1",
        "VOICEFLEET_TTS_VOICES": f'["{VOICE}"]',
        "VOICEFLEET_CACHE_MAX_BYTES": str(256 * 1024 * 1024),
        "VOICEFLEET_LOG_LEVEL": "warning",
    }
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with server(port, "--tts-model", "kokoro", env=env) as process:
        sides = Sides(engine, f"http://127.0.0.1:{port}")
        sides.in_process(TEXTS[0])
        sides.over_http("Warm up.")
        print(f"server RSS after warm-up (TTS only): {rss_mib(process.pid):.0f} MiB")
        ratios: dict[int, list[float]] = {c: [] for c in args.concurrency}
        overheads_ms: list[float] = []
        for round_index in range(args.rounds):
            for concurrency in args.concurrency:
                texts = unique(TEXTS, f"round {round_index} at {concurrency}")
                if concurrency == 1:
                    base_lat, serv_lat, base_audio, serv_audio = [], [], 0.0, 0.0
                    base_wall = serv_wall = 0.0
                    for index, text in enumerate(texts):
                        order = (sides.in_process, sides.over_http)
                        for call in order if index % 2 == 0 else order[::-1]:
                            latency, audio = call(text)
                            if call == sides.in_process:
                                base_lat.append(latency)
                                base_audio += audio
                                base_wall += latency
                            else:
                                serv_lat.append(latency)
                                serv_audio += audio
                                serv_wall += latency
                    overheads_ms.append(
                        statistics.median(s - b for s, b in zip(serv_lat, base_lat, strict=True))
                        * 1000
                    )
                else:
                    base_lat, base_audio, base_wall = run_phase(
                        sides.in_process, texts, concurrency
                    )
                    serv_lat, serv_audio, serv_wall = run_phase(sides.over_http, texts, concurrency)
                base_rt, serv_rt = base_audio / base_wall, serv_audio / serv_wall
                ratios[concurrency].append(serv_rt / base_rt)
                print(
                    f"round {round_index} c={concurrency}: in-process {base_rt:.2f}x real time "
                    f"(p50 {percentile50(base_lat) * 1000:.0f} ms), server {serv_rt:.2f}x "
                    f"(p50 {percentile50(serv_lat) * 1000:.0f} ms), ratio {serv_rt / base_rt:.3f}"
                )
        print("\n== throughput, server / in-process (median over rounds)")
        for concurrency, values in ratios.items():
            print(f"c={concurrency}: {statistics.median(values):.3f}")
        print(f"c=1 p50 latency overhead per text: {statistics.median(overheads_ms):+.0f} ms")

        print("\n== first audio of a paragraph of", len(PARAGRAPH), "characters")
        firsts, chunks = [], []
        for take in range(3):
            text = f"{PARAGRAPH} Take {take}."
            chunks.append(sides.first_chunk_in_process(text))
            firsts.append(sides.first_audio_http(text))
        first, chunk = statistics.median(firsts), statistics.median(chunks)
        whole, _ = sides.in_process(PARAGRAPH)
        print(
            f"server first byte p50 {first * 1000:.0f} ms; in-process first chunk "
            f"{chunk * 1000:.0f} ms (difference {(first - chunk) * 1000:+.0f} ms); "
            f"whole paragraph in-process {whole * 1000:.0f} ms"
        )

        print("\n== cache")
        misses, hits = [], []
        for take in range(5):
            text = f"The cache is measured, take {take}."
            misses.append(sides.over_http(text)[0])
            hits.append(sides.over_http(text)[0])
        print(
            f"pcm: miss p50 {percentile50(misses) * 1000:.1f} ms, hit p50 "
            f"{percentile50(hits) * 1000:.1f} ms ({percentile50(misses) / percentile50(hits):.0f}x)"
        )
        cache_bytes = sides.metric("voicefleet_cache_bytes")
        audio_seconds = sides.metric("voicefleet_tts_audio_seconds_total")
        print(
            f"pcm: {cache_bytes / 1024:.0f} KiB for about {audio_seconds:.0f} s of audio served "
            f"(cache hits counted too): {cache_bytes / audio_seconds / 1024:.1f} KiB per "
            f"cached second; 16-bit 24 kHz pcm is {SAMPLE_RATE * 2 / 1024:.1f} KiB/s"
        )
        before = cache_bytes
        mp3_seconds = 0.0
        for text in TEXTS:
            mp3_seconds += sides.in_process(text)[1]
            sides.over_http(f"{text} (mp3)", "mp3")
        after = sides.metric("voicefleet_cache_bytes")
        print(
            f"mp3: {(after - before) / mp3_seconds / 1024:.1f} KiB per cached second "
            f"(server RSS now {rss_mib(process.pid):.0f} MiB)"
        )

    print("\n== batching across requests on CPU")
    assert isinstance(engine.model, KokoroOnnx)  # this bench measures the CPU backend
    shapes = engine.model.input_shapes()
    print(f"the int8 graph's inputs: {shapes}: the batch axis is fixed at 1")
    two_threads = load_speech_engine(DEFAULT_ASSETS_DIR, (VOICE,), threads=2)
    for label, eng, concurrency in (
        ("1 request x 2 onnx threads", two_threads, 1),
        ("2 requests x 1 onnx thread", engine, 2),
    ):
        side = Sides(eng, "http://127.0.0.1:1")
        latencies, audio, wall = run_phase(side.in_process, list(TEXTS), concurrency)
        p50 = percentile50(latencies) * 1000
        print(f"{label}: {audio / wall:.2f}x real time, p50 latency {p50:.0f} ms")

    print("\n== memory")
    with server(free_port(), "--model", "tiny.en", "--tts-model", "kokoro", env={}) as both:
        print(f"one process serving tiny.en and Kokoro: RSS {rss_mib(both.pid):.0f} MiB")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
