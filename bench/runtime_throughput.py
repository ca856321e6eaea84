"""Throughput and latency of the runtime against in-process faster-whisper, same model and threads.

Baseline: faster-whisper's WhisperModel in this process, called sequentially on the uploaded
bytes (it decodes each file, as the server decodes every upload). Server: a real
`voicefleet serve` subprocess with the same model, compute type, beam size and CPU threads,
over HTTP at concurrency 1 (one plain synchronous client, so the client barely uses the CPUs
the two sides compete for) and at 4 and 8 (one synchronous client per thread).

Built for a noisy, shared machine:
- concurrency 1 is interleaved request by request: each clip goes to the baseline and to the
  server back to back, the side that goes first alternating, so drift hits both alike;
- every round then runs the baseline back to back ("baseline block") and the concurrent
  phases, in forward order on even rounds and reversed on odd ones; the concurrent phases are
  compared with that block (back to back, caches stay warm, as they do for a busy server),
  concurrency 1 with its interleaved twin;
- ratios and latency differences are computed inside a round (per clip for latency) and
  summarised by their median over rounds; warm-ups are excluded;
- CPU seconds per audio second (server process plus client, against this process for the
  baseline) are printed too: unlike wall time, CPU time barely moves when other work loads
  the machine.

Goal (issue 2): at concurrency 1, throughput ratio >= 0.95 and p50 overhead <= 30 ms.

Under attack (issue 12): the row "server c=N +S slow" runs the same honest clients as
"server c=N" while S raw connections upload bodies slowly beside them, half of them below the
server's minimum upload rate (cut off with 408 after the grace period, then reconnecting), half
above it (holding upload places for minutes). Its reference is the clean "server c=N" of the
same round. Goal: honest throughput >= 0.9x the clean run.

    .venv/bin/python bench/runtime_throughput.py [--rounds 4] [--requests 8] [--concurrency 1 4 8]
        [--slow-uploads 50] [--slow-beside 4]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx

from voicefleet_runtime.audio import decode_audio
from voicefleet_runtime.readiness import wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
MULTILINGUAL_ENGLISH_SECONDS = 20.0
"""multilingual.mp3 is English for its first ~29 s; the slice stays inside that."""
SETTLE_SECONDS = 0.3
"""Pause between phases so the previous phase's threads and sockets are quiet."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BASELINE = "baseline"
"""Interleaved request by request with the server at concurrency 1: its reference."""
BASELINE_BLOCK = "baseline block"
"""Back to back, like the concurrent phases (caches stay warm): their reference."""


SLOW_BODY_BYTES = 4 * 1024 * 1024
SLOW_TICK_SECONDS = 0.1
SLOW_RATES = (100, 8192)
"""Bytes per second of the slow uploads: below and above the server's default minimum (4096)."""


def reference_of(label: str) -> str:
    if label in (BASELINE, server_label(1)):
        return BASELINE
    if " +" in label:
        return label.split(" +", 1)[0]  # the clean run at the same concurrency
    return BASELINE_BLOCK


@dataclass(frozen=True)
class Clip:
    name: str
    data: bytes
    seconds: float


@dataclass(frozen=True)
class Sample:
    """One phase of one round: per-request latencies (in plan order), wall and CPU time."""

    latencies: tuple[float, ...]
    wall_seconds: float
    cpu_seconds: float
    audio_seconds: float

    @property
    def throughput(self) -> float:
        return self.audio_seconds / self.wall_seconds

    @property
    def cpu_per_audio_second(self) -> float:
        return self.cpu_seconds / self.audio_seconds


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def process_cpu_seconds(pid: int) -> float:
    """user + system time of another process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def mp3_slice(path: Path, seconds: float) -> bytes:
    """The first `seconds` of a recording, re-encoded as mp3 (a realistic upload)."""
    out_buffer = io.BytesIO()
    with av.open(str(path)) as source, av.open(out_buffer, "w", format="mp3") as out:
        rate = source.streams.audio[0].rate
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=rate)
        samples_left = int(seconds * rate)
        for frame in source.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                if samples_left <= 0:
                    break
                kept = resampled.to_ndarray()[:, :samples_left]
                samples_left -= kept.shape[1]
                piece = av.AudioFrame.from_ndarray(kept, format="s16p", layout="mono")
                piece.sample_rate = rate
                out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    return out_buffer.getvalue()


def load_clips() -> list[Clip]:
    uploads = {
        "jfk.flac": (SHARED_AUDIO / "jfk.flac").read_bytes(),
        "multilingual-20s.mp3": mp3_slice(
            SHARED_AUDIO / "multilingual.mp3", MULTILINGUAL_ENGLISH_SECONDS
        ),
    }
    return [
        Clip(name, data, len(decode_audio(data, max_seconds=3600)) / 16_000)
        for name, data in uploads.items()
    ]


def request_plan(clips: Sequence[Clip], requests: int) -> list[Clip]:
    return [clips[index % len(clips)] for index in range(requests)]


class Baseline:
    """faster-whisper called on the uploaded bytes, decoding included.

    By default the bytes are decoded with the runtime's own PyAV decoder, so the comparison
    measures what serving adds; faster-whisper's decode_audio is slower on these files, which
    would hide that much serving overhead (`--baseline-decoder faster-whisper` shows it).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from faster_whisper import WhisperModel

        from voicefleet_runtime.engine.models import resolve_model

        self._beam_size: int = args.beam_size
        self._decoder: str = args.baseline_decoder
        self._model = WhisperModel(
            str(resolve_model(args.model, None).path),
            device="cpu",
            compute_type=args.compute_type,
            cpu_threads=args.threads,
            local_files_only=True,
        )

    def transcribe(self, clip: Clip) -> float:
        """Latency of one clip, bytes to text."""
        begun = time.perf_counter()
        audio: Any = io.BytesIO(clip.data)
        if self._decoder == "runtime":
            audio = decode_audio(clip.data, max_seconds=3600)
        segments, _ = self._model.transcribe(audio, beam_size=self._beam_size)
        "".join(segment.text for segment in segments)
        return time.perf_counter() - begun


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_server(args: argparse.Namespace) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_PRECISION": args.compute_type,
        "VOICEFLEET_CPU_THREADS": str(args.threads),
        "VOICEFLEET_BEAM_SIZE": str(args.beam_size),
        "VOICEFLEET_CONCURRENCY": "1",
        "VOICEFLEET_QUEUE_SIZE": "64",
        "VOICEFLEET_LOG_LEVEL": args.server_log_level,
    }
    voicefleet = Path(sys.executable).with_name("voicefleet")
    command = [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen([*command, "--model", args.model], env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, lambda: process.poll() is None, "voicefleet serve", 120)
        yield Server(base_url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def post_clip(client: httpx.Client, clip: Clip) -> float:
    begun = time.perf_counter()
    response = client.post(
        "/v1/audio/transcriptions",
        files={"file": (clip.name, clip.data)},
        data={"model": "whisper-1"},
    )
    response.raise_for_status()
    response.json()
    return time.perf_counter() - begun


def interleaved_single(
    baseline: Baseline, server: Server, client: httpx.Client, plan: Sequence[Clip], first: int
) -> tuple[Sample, Sample]:
    """Each clip to both sides back to back; who goes first alternates (ABBA...)."""
    latencies: dict[str, list[float]] = {BASELINE: [], "server": []}
    cpu = dict.fromkeys(latencies, 0.0)

    def on_baseline(clip: Clip) -> None:
        before = own_cpu_seconds()
        latencies[BASELINE].append(baseline.transcribe(clip))
        cpu[BASELINE] += own_cpu_seconds() - before

    def on_server(clip: Clip) -> None:
        before = own_cpu_seconds() + server.cpu_seconds()
        latencies["server"].append(post_clip(client, clip))
        cpu["server"] += own_cpu_seconds() + server.cpu_seconds() - before

    # The plan cycles through the clips: flip who goes first once per cycle, so that every
    # clip gets both orders within a round.
    cycle = len({clip.name for clip in plan})
    for index, clip in enumerate(plan):
        forward = (index // cycle + first) % 2 == 0
        sides = (on_baseline, on_server) if forward else (on_server, on_baseline)
        for side in sides:
            side(clip)
    audio = sum(clip.seconds for clip in plan)
    base, served = (
        Sample(tuple(latencies[side]), sum(latencies[side]), cpu[side], audio)
        for side in (BASELINE, "server")
    )
    return base, served


def baseline_block(baseline: Baseline, plan: Sequence[Clip]) -> Sample:
    cpu_before = own_cpu_seconds()
    started = time.perf_counter()
    latencies = tuple(baseline.transcribe(clip) for clip in plan)
    wall = time.perf_counter() - started
    cpu = own_cpu_seconds() - cpu_before
    return Sample(latencies, wall, cpu, sum(clip.seconds for clip in plan))


def concurrent_phase(
    server: Server, clients: Sequence[httpx.Client], plan: Sequence[Clip], concurrency: int
) -> Sample:
    """`concurrency` threads, each with its own keep-alive client, share the request plan."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        cpu_before = own_cpu_seconds() + server.cpu_seconds()
        started = time.perf_counter()
        futures = [
            pool.submit(post_clip, clients[index % concurrency], clip)
            for index, clip in enumerate(plan)
        ]
        latencies = tuple(future.result() for future in futures)
        wall = time.perf_counter() - started
        cpu = own_cpu_seconds() + server.cpu_seconds() - cpu_before
    return Sample(latencies, wall, cpu, sum(clip.seconds for clip in plan))


def server_label(concurrency: int) -> str:
    return f"server c={concurrency}"


def attacked_label(concurrency: int, slow_uploads: int) -> str:
    return f"{server_label(concurrency)} +{slow_uploads} slow"


class SlowUploads:
    """`count` connections uploading a multipart body slowly, from one thread; a connection the
    server cuts off (408) is opened again, as a persistent attacker would."""

    def __init__(self, base_url: str, count: int) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self._address = (host, int(port))
        self._rates = [SLOW_RATES[index % len(SLOW_RATES)] for index in range(count)]
        self._sockets: list[socket.socket] = []
        self._sent = [0] * count
        """Body bytes sent on each connection (the head counts as none)."""
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SlowUploads:
        self._sockets = [self._open() for _ in self._rates]
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._sockets:
            sock.close()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self._address, timeout=5)
        sock.setblocking(False)
        head = (
            "POST /v1/audio/transcriptions HTTP/1.1\r\n"
            f"Host: {self._address[0]}\r\n"
            "Content-Type: multipart/form-data; boundary=slowslowslow\r\n"
            f"Content-Length: {SLOW_BODY_BYTES}\r\n\r\n"
            "--slowslowslow\r\n"
            'Content-Disposition: form-data; name="file"; filename="slow.mp3"\r\n\r\n'
        ).encode()
        sock.send(head)
        return sock

    def _run(self) -> None:
        while not self._stop.wait(SLOW_TICK_SECONDS):
            for index, sock in enumerate(self._sockets):
                piece = int(self._rates[index] * SLOW_TICK_SECONDS)
                try:
                    sock.recv(65536)  # an answer (408) or b"" means cut off
                    cut_off = True
                except BlockingIOError:
                    cut_off = False
                except OSError:
                    cut_off = True
                if not cut_off and self._sent[index] + piece < SLOW_BODY_BYTES:
                    try:
                        self._sent[index] += sock.send(b"\0" * piece)
                        continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                sock.close()
                self.reconnects += 1
                self._sockets[index] = self._open()
                self._sent[index] = 0


Phase = Callable[[], dict[str, Sample]]


def round_phases(
    args: argparse.Namespace,
    baseline: Baseline,
    server: Server,
    clients: Sequence[httpx.Client],
    plan: Sequence[Clip],
    round_index: int,
) -> list[Phase]:
    """This round's phases: forward order on even rounds, reversed on odd ones."""

    def single() -> dict[str, Sample]:
        base, served = interleaved_single(baseline, server, clients[0], plan, round_index)
        return {BASELINE: base, server_label(1): served}

    def concurrent(concurrency: int) -> Phase:
        return lambda: {
            server_label(concurrency): concurrent_phase(server, clients, plan, concurrency)
        }

    def block() -> dict[str, Sample]:
        return {BASELINE_BLOCK: baseline_block(baseline, plan)}

    def attacked() -> dict[str, Sample]:
        with SlowUploads(server.base_url, args.slow_uploads):
            time.sleep(1.0)  # every slow connection open and sending before honest traffic
            sample = concurrent_phase(server, clients, plan, args.slow_beside)
        return {attacked_label(args.slow_beside, args.slow_uploads): sample}

    phases = [single if c == 1 else concurrent(c) for c in args.concurrency]
    if max(args.concurrency) > 1:
        phases.insert(1, block)
    if args.slow_uploads:
        # Right after its clean twin, so drift between the two is as small as it gets.
        phases.insert(args.concurrency.index(args.slow_beside) + 2, attacked)
    return phases[::-1] if round_index % 2 else phases


def run_rounds(args: argparse.Namespace, plan: Sequence[Clip]) -> list[dict[str, Sample]]:
    baseline = Baseline(args)
    for clip in plan[:2]:
        baseline.transcribe(clip)  # warm-up, as the server does before it is ready
    rounds: list[dict[str, Sample]] = []
    with running_server(args) as server:
        clients = [
            httpx.Client(base_url=server.base_url, timeout=600)
            for _ in range(max(args.concurrency))
        ]
        try:
            for clip in plan[:2]:
                post_clip(clients[0], clip)  # connection, page cache, first requests
            for round_index in range(args.rounds):
                phases = round_phases(args, baseline, server, clients, plan, round_index)
                results: dict[str, Sample] = {}
                for phase in phases:
                    time.sleep(SETTLE_SECONDS)
                    results.update(phase())
                rounds.append(results)
                print(
                    f"round {round_index + 1}/{args.rounds} (audio s/s): "
                    + ", ".join(f"{label} {s.throughput:.2f}" for label, s in results.items()),
                    flush=True,
                )
        finally:
            for client in clients:
                client.close()
    return rounds


def report(rounds: Sequence[dict[str, Sample]], labels: Sequence[str]) -> tuple[float, float]:
    """Print the table; return (throughput ratio, p50 overhead ms) at concurrency 1."""
    header = (
        f"{'run':<21}{'audio s/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'x base':>8}{'(min..max)':>14}{'p50 +ms':>9}{'CPU s/audio s':>15}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, tuple[float, float]] = {}
    for label in labels:
        samples = [r[label] for r in rounds]
        latencies = [latency for s in samples for latency in s.latencies]
        reference = reference_of(label)
        ratios = [r[label].throughput / r[reference].throughput for r in rounds]
        # Same clip, same round: the pairwise difference removes clip length and drift.
        deltas = [
            mine - theirs
            for r in rounds
            for mine, theirs in zip(r[label].latencies, r[reference].latencies, strict=True)
        ]
        ratio, overhead = statistics.median(ratios), statistics.median(deltas) * 1000
        summary[label] = (ratio, overhead)
        print(
            f"{label:<21}{statistics.median(s.throughput for s in samples):>10.2f}"
            f"{percentile(latencies, 0.5) * 1000:>9.0f}{percentile(latencies, 0.95) * 1000:>9.0f}"
            f"{ratio:>8.3f}{f'({min(ratios):.2f}..{max(ratios):.2f})':>14}{overhead:>+9.0f}"
            f"{statistics.median(s.cpu_per_audio_second for s in samples):>15.3f}"
        )
    print(
        "\naudio s/s: median over rounds. p50/p95: over all requests. x base: median over rounds "
        "of the\nthroughput ratio to the same round's reference: 'baseline' (interleaved request "
        "by request)\nfor server c=1, 'baseline block' (back to back) for the concurrent rows, "
        "and for a\n'+N slow' row the clean server row at its concurrency (the honest clients' "
        "throughput\nbeside N slow uploads against theirs alone). "
        "p50 +ms: median\nof the latency differences to that reference for the same clip in the "
        "same round (at\nconcurrency > 1 it includes queueing). CPU s/audio s: median over "
        "rounds; the server's\ncounts its process and the client."
    )
    return summary.get(server_label(1), (float("nan"), float("nan")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--requests", type=int, default=8, help="requests per phase (>= the concurrency)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--server-log-level", default="warning")
    parser.add_argument(
        "--slow-uploads", type=int, default=50, help="slow-upload connections (0: no attacked row)"
    )
    parser.add_argument(
        "--slow-beside", type=int, default=4, help="the honest concurrency they run beside"
    )
    parser.add_argument(
        "--baseline-decoder",
        choices=["runtime", "faster-whisper"],
        default="runtime",
        help="how the baseline decodes the bytes (the server always uses the runtime's decoder)",
    )
    args = parser.parse_args()
    if 1 not in args.concurrency:
        parser.error("--concurrency must include 1: it is measured against the baseline")
    if args.requests < max(args.concurrency):
        parser.error("--requests must be at least the largest --concurrency")
    if args.slow_uploads and args.slow_beside not in args.concurrency:
        parser.error("--slow-beside must be one of --concurrency (its clean reference)")

    clips = load_clips()
    plan = request_plan(clips, args.requests)
    print(
        f"model {args.model}, {args.compute_type}, beam {args.beam_size}, "
        f"{args.threads} threads, {os.cpu_count()} CPUs; clips: "
        + ", ".join(f"{clip.name} ({clip.seconds:.1f} s)" for clip in clips)
        + f"; {args.requests} requests per phase, {args.rounds} interleaved rounds; "
        f"the baseline decodes with the {args.baseline_decoder} decoder",
        flush=True,
    )
    rounds = run_rounds(args, plan)
    labels = [BASELINE, server_label(1)]
    if max(args.concurrency) > 1:
        labels += [BASELINE_BLOCK, *(server_label(c) for c in args.concurrency if c > 1)]
    if args.slow_uploads:
        labels.append(attacked_label(args.slow_beside, args.slow_uploads))
    print()
    ratio, overhead_ms = report(rounds, labels)
    verdict = "met" if ratio >= 0.95 and overhead_ms <= 30 else "NOT met"
    print(
        f"\nconcurrency 1: throughput ratio {ratio:.3f} (goal >= 0.95), "
        f"p50 overhead {overhead_ms:+.0f} ms (goal <= +30): goal {verdict}"
    )
    if args.slow_uploads:
        label = attacked_label(args.slow_beside, args.slow_uploads)
        attacked_ratio = statistics.median(
            r[label].throughput / r[server_label(args.slow_beside)].throughput for r in rounds
        )
        verdict = "met" if attacked_ratio >= 0.9 else "NOT met"
        print(
            f"beside {args.slow_uploads} slow uploads: honest throughput {attacked_ratio:.3f}x "
            f"the clean run at concurrency {args.slow_beside} (goal >= 0.9): goal {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
