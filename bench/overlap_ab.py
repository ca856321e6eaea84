"""Overlapped decode steps on and off, alternating on one engine (real weights, real speech).

One batched engine on one GPU; rounds of a closed loop of `--concurrency` callers over the
speech corpus, the loop's overlap switched on and off between rounds (so that a shared host's
drift hits both alike). Prints each round's audio seconds per second, word error rate and
decode step (wall and GPU), then each setting's median.

    python bench/overlap_ab.py --model DIR --jfk jfk.flac [--rounds 3] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path

from closed_loop import closed_loop
from gpu_batching import transcribe_text
from gpu_batching_engines import EngineFactory
from speech_corpus import load_corpus

from voicefleet_runtime.engine.models import ResolvedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--jfk", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cpu: a check of this script")
    args = parser.parse_args()
    clips = load_corpus(args.jfk)
    precision = "float16" if args.device.startswith("cuda") else "float32"
    # gpu_batching.py's in-process engine: the settings as served.
    ours = EngineFactory(args.device, precision, {}).batched(
        ResolvedModel(args.model.name, args.model, False), args.concurrency
    )
    loop = ours.engine.loops[0]
    requests = 2 * args.concurrency
    closed_loop(partial(transcribe_text, ours), clips, args.concurrency, requests, 1e9)
    figures: dict[bool, list[float]] = {True: [], False: []}
    for round_index in range(2 * args.rounds):
        overlap = round_index % 2 == 0
        loop.overlap_steps = overlap  # between rounds: nothing is in flight
        ours.reset_stats()
        result = closed_loop(partial(transcribe_text, ours), clips, args.concurrency, requests, 1e9)
        row = result.row("tiny.en", "", args.concurrency)
        figures[overlap].append(row.audio_s_per_s)
        print(
            f"overlap {'on ' if overlap else 'off'}: {row.audio_s_per_s:7.1f} audio s/s, WER "
            f"{row.wer or 0:.4f}, step {ours.step_ms() or 0:.2f} ms wall / "
            f"{ours.step_gpu_ms() or 0:.2f} GPU",
            flush=True,
        )
    on, off = statistics.median(figures[True]), statistics.median(figures[False])
    print(f"median: on {on:.1f}, off {off:.1f} audio s/s; on / off {on / off:.2f}x")
    ours.close()


if __name__ == "__main__":
    main()
