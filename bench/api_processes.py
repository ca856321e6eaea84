"""`voicefleet serve` with 1, 2, 4, ... API processes at one load, beside HF in the same run.

What VOICEFLEET_API_PROCESSES buys (api_processes.py), and the figures the operator's default
for GPU pods comes from: for each process count, one server, warmed, then a closed loop of
`--clients` at Opus uploads and at 16 kHz WAV uploads (the server's own cost without
decoding). The anchor is gpu_batching.py's: HF transformers at batch `--clients`, same weights.

    python bench/api_processes.py --model DIR [--processes 1 2 4 8] [--clients 64]
        [--server-env VOICEFLEET_DECODE_PROCESSES=14]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from closed_loop import UNCAPPED_REQUESTS, LoopResult
from gpu_batching_engines import EngineFactory
from gpu_batching_http import ClientPool, ServedModel, ServerCounters
from hf_whisper import HfAnchor
from speech_corpus import Clip, as_wav, load_corpus

FORMATS = ("Opus", "WAV")
IDLE_FIELDS = (3, 4)
"""/proc/stat's idle and iowait columns (after user, nice, system)."""


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of every core of the host so far."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = sum(fields[i] for i in IDLE_FIELDS)
    return sum(fields) - idle, sum(fields)


def host_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the host's CPU time that was busy between two `cpu_times()`: whether a
    row was bound by the machine's cores rather than by the server."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def hf_anchor(model: Path, device: str, precision: str, clips: list[Clip], batch: int) -> float:
    """HF's audio seconds per second at `batch` (three batches, after two to warm up)."""
    anchor = HfAnchor.from_model_folder(model, device, precision)
    chosen = [clips[i % len(clips)] for i in range(batch)]
    anchor.warm_up([clip.audio for clip in chosen])
    audio = sum(clip.seconds for clip in chosen)
    started = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        anchor.transcribe([clip.audio for clip in chosen])
    return rounds * audio / (time.perf_counter() - started)


@dataclass(frozen=True)
class ServedRow:
    result: LoopResult
    host_busy: float
    counted: ServerCounters
    """The server's own counters over the row."""


def served(
    model: Path,
    device: str,
    precision: str,
    processes: int,
    clips: list[Clip],
    args: argparse.Namespace,
) -> tuple[float, list[ServedRow]]:
    """One server with `processes` API processes: its seconds to ready, then a closed loop
    per upload format, with the host's busy CPU share and the server's counters over it."""
    env = EngineFactory(device, precision, {}).server_env()  # gpu_batching's HTTP rows'
    env |= dict(item.split("=", 1) for item in args.server_env)
    env["VOICEFLEET_API_PROCESSES"] = str(processes)
    clip_sets = [clips, [as_wav(clip) for clip in clips]]
    with ServedModel(model, device, precision, args.clients, 1, env) as server:
        pool = ClientPool(server.url, clip_sets, args.clients)
        try:
            server.transcribe(clips[0])
            pool.closed_loop(args.clients, 2 * args.clients, args.seconds)  # warm
            rows = []
            for clip_set in range(len(FORMATS)):
                before, counted_before = cpu_times(), server.counters()
                result = pool.closed_loop(args.clients, UNCAPPED_REQUESTS, args.seconds, clip_set)
                busy, counted = host_busy(before, cpu_times()), server.counters()
                rows.append(ServedRow(result, busy, counted.since(counted_before)))
            return server.ready_s, rows
        finally:
            pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="float16")
    parser.add_argument("--jfk", type=Path)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0, help="each closed loop's budget")
    parser.add_argument(
        "--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server settings"
    )
    args = parser.parse_args()
    clips = load_corpus(args.jfk)
    hf = hf_anchor(args.model, args.device, args.precision, clips, args.clients)
    print(f"HF transformers, batch {args.clients}: {hf:.1f} audio s/s")
    print(
        f"{'processes':>9} {'upload':>6} {'audio s/s':>10} {'/ HF':>6} {'/ one':>6} p50 s  host CPU"
    )
    one_process: dict[str, float] = {}
    for processes in args.processes:
        try:
            ready_s, rows = served(args.model, args.device, args.precision, processes, clips, args)
        except Exception as error:  # one server's failure must not cost the others' rows
            print(f"{processes:>9} failed: {error!r}", flush=True)
            continue
        print(f"{processes:>9} ready {ready_s:.1f} s after its start", flush=True)
        for upload, row in zip(FORMATS, rows, strict=True):
            result, busy = row.result, row.host_busy
            rate = result.audio_seconds / result.wall_s
            if processes == 1:
                one_process[upload] = rate
            versus_one = f"{rate / one_process[upload]:.2f}x" if upload in one_process else "-"
            p50 = sorted(result.latencies)[len(result.latencies) // 2]
            figures = f"{rate:>10.1f} {rate / hf:>5.2f}x {versus_one:>6} {p50:.3f} {busy:>8.0%}"
            print(f"{processes:>9} {upload:>6} {figures}", flush=True)
            breakdown = row.counted.breakdown(result.wall_s, statistics.fmean(result.latencies))
            print(f"{'':>9} {upload:>6} {breakdown}", flush=True)


if __name__ == "__main__":
    main()
