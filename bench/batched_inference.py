"""Does faster-whisper's BatchedInferencePipeline help on long audio? Measured, not assumed.

Same model, compute type, beam size and CPU threads on both sides, on a real long recording
(multilingual.mp3, 60 s, the same clip repeated to 3 minutes, and its English first 28 s
repeated to 168 s, since tiny.en is English-only):
- baseline: `WhisperModel.transcribe` with VAD on, as the runtime decodes long audio
  sequentially;
- batched: `BatchedInferencePipeline.transcribe` at batch sizes 4, 8 and 16 (VAD on: the
  pipeline cuts its chunks at speech pauses).

Built for a noisy, shared machine: every round runs every variant once per clip, in forward
order on even rounds and reversed on odd ones, so drift hits all alike; the ratio to the
baseline is taken inside a round and summarised by its median over rounds. CPU seconds per
audio second are printed too (they barely move when other work loads the machine). The word
error rate of each batched transcript against the sequential one shows whether speed was
bought with accuracy.

    .venv/bin/python bench/batched_inference.py [--models tiny.en base] [--rounds 3]
        [--device cpu] [--batch-sizes 4 8 16]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import SAMPLE_RATE
from voicefleet_runtime.engine.models import resolve_model
from voicefleet_runtime.engine.precision import resolve_placement

ROOT = Path(__file__).resolve().parent.parent
SHARED_AUDIO = ROOT.parent / "shared" / "audio"
SEQUENTIAL = "sequential"
ENGLISH_SECONDS = 28.0
"""multilingual.mp3 is English for its first ~29 s: tiny.en is English-only, and German it
cannot transcribe makes the two decoders' outputs (and their cost) diverge for that reason."""
MIT_LICENCE_OPENING = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software and associated documentation files, to deal in the software without restriction, "
    "including without limitation the rights to use, copy, modify, merge, publish, distribute, "
    "sublicense, and/or sell copies of the software, and to permit persons to whom the software "
    "is furnished to do so, subject to the following conditions: the above copyright notice and "
    "this permission notice shall be included in all copies or substantial portions of the "
    "software."
)
"""What the English first 28 s say (the MIT licence's first paragraph, "(the Software)" unread)."""


@dataclass(frozen=True)
class Clip:
    name: str
    audio: NDArray[np.float32]
    reference: str | None = None
    """What is said, where known: then each run's WER against it is printed too."""

    @property
    def seconds(self) -> float:
        return float(self.audio.shape[0]) / SAMPLE_RATE


@dataclass
class Measurements:
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).split())


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def transcribers(
    model: WhisperModel, beam_size: int, batch_sizes: list[int]
) -> dict[str, Callable[[NDArray[np.float32]], str]]:
    pipeline = BatchedInferencePipeline(model=model)

    def sequential(audio: NDArray[np.float32]) -> str:
        segments, _ = model.transcribe(audio, beam_size=beam_size, vad_filter=True)
        return " ".join(segment.text.strip() for segment in segments)

    def batched(batch_size: int) -> Callable[[NDArray[np.float32]], str]:
        def run(audio: NDArray[np.float32]) -> str:
            segments, _ = pipeline.transcribe(
                audio, beam_size=beam_size, vad_filter=True, batch_size=batch_size
            )
            return " ".join(segment.text.strip() for segment in segments)

        return run

    runs: dict[str, Callable[[NDArray[np.float32]], str]] = {SEQUENTIAL: sequential}
    runs.update({f"batched bs={size}": batched(size) for size in batch_sizes})
    return runs


def bench_model(model_name: str, clips: list[Clip], args: argparse.Namespace) -> None:
    resolved = resolve_model(model_name, None)
    placement = resolve_placement(args.device, args.precision)
    model = WhisperModel(
        str(resolved.path),
        device=placement.device,
        compute_type=placement.compute_type,
        cpu_threads=args.threads,
        local_files_only=True,
    )
    runs = transcribers(model, args.beam_size, args.batch_sizes)
    print(
        f"\nmodel {model_name}, {placement.device} {placement.compute_type}, "
        f"beam {args.beam_size}, {args.threads} threads, {os.cpu_count()} CPUs, "
        f"{args.rounds} interleaved rounds",
        flush=True,
    )
    for clip in clips:
        for run in runs.values():  # warm-up: first-call allocations and VAD model load
            run(clip.audio[: 30 * SAMPLE_RATE])
        measured = Measurements()
        for round_index in range(args.rounds):
            order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
            for label in order:
                cpu_before, started = own_cpu_seconds(), time.perf_counter()
                text = runs[label](clip.audio)
                wall = time.perf_counter() - started
                measured.wall.setdefault(label, []).append(wall)
                measured.cpu.setdefault(label, []).append(own_cpu_seconds() - cpu_before)
                measured.text.setdefault(label, text)
            line = ", ".join(
                f"{label} {clip.seconds / measured.wall[label][-1]:.1f}" for label in order
            )
            print(f"  {clip.name} round {round_index + 1} (audio s/s): {line}", flush=True)
        print_table(clip, measured)


def print_table(clip: Clip, measured: Measurements) -> None:
    reference = normalise(measured.text[SEQUENTIAL])
    print(f"\n  {clip.name} ({clip.seconds:.1f} s)")
    header = (
        f"  {'run':<16}{'audio s/s':>10}{'x seq':>8}{'(min..max)':>14}"
        f"{'CPU s/audio s':>15}{'x seq CPU':>11}{'WER vs seq':>12}{'words':>7}"
        + (f"{'WER vs ref':>12}" if clip.reference else "")
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, walls in measured.wall.items():
        ratios = [base / wall for base, wall in zip(measured.wall[SEQUENTIAL], walls, strict=True)]
        cpu_ratios = [
            base / cpu
            for base, cpu in zip(measured.cpu[SEQUENTIAL], measured.cpu[label], strict=True)
        ]
        hypothesis = normalise(measured.text[label])
        error_rate = jiwer.wer(reference, hypothesis) if reference else float("nan")
        print(
            f"  {label:<16}{clip.seconds / statistics.median(walls):>10.1f}"
            f"{statistics.median(ratios):>8.2f}"
            f"{f'({min(ratios):.2f}..{max(ratios):.2f})':>14}"
            f"{statistics.median(measured.cpu[label]) / clip.seconds:>15.3f}"
            f"{statistics.median(cpu_ratios):>11.2f}"
            f"{error_rate:>12.3f}{len(hypothesis.split()):>7}"
            + (
                f"{jiwer.wer(normalise(clip.reference), hypothesis):>12.3f}"
                if clip.reference
                else ""
            )
        )
    print(
        "  x seq: median over rounds of the sequential run's time / this run's time in the same "
        "round (>1: faster)."
    )
    for label, text in measured.text.items():
        print(f"  [{label}] {text[:160]}{'...' if len(text) > 160 else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=5, help="the runtime's default")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="copies in the long clip")
    parser.add_argument(
        "--clips",
        nargs="+",
        choices=["full", "full-repeated", "english-repeated"],
        default=["full", "full-repeated", "english-repeated"],
    )
    parser.add_argument("--audio", type=Path, default=SHARED_AUDIO / "multilingual.mp3")
    args = parser.parse_args()

    audio: Any = decode_audio(str(args.audio), sampling_rate=SAMPLE_RATE)
    clip = Clip(args.audio.name, np.asarray(audio, dtype=np.float32))
    english = clip.audio[: int(ENGLISH_SECONDS * SAMPLE_RATE)]
    clips = {
        "full": clip,
        "full-repeated": Clip(
            f"{args.audio.stem} x{args.repeat}", np.tile(clip.audio, args.repeat)
        ),
        "english-repeated": Clip(
            f"{args.audio.stem} English {ENGLISH_SECONDS:g} s x{2 * args.repeat}",
            np.tile(english, 2 * args.repeat),
            " ".join([MIT_LICENCE_OPENING] * 2 * args.repeat),
        ),
    }
    for model_name in args.models:
        bench_model(model_name, [clips[name] for name in args.clips], args)


if __name__ == "__main__":
    main()
