"""One engine setting on and off, alternating rounds (real weights, real speech, one GPU).

`--compare overlap`: one batched engine, the loop's overlapped steps switched between rounds.
`--compare float8`: two batched engines side by side, float8 cross-attention keys and values
(with the step's Triton kernels) and the model's dtype, taking rounds in turn. Each round is a
closed loop of `--concurrency` callers over the speech corpus; alternating lets a shared host's
drift hit both settings alike. Prints each round's audio seconds per second, word error rate,
decode step (wall and GPU) and windows sent back for a retry, then each setting's median.

    python bench/engine_ab.py --model DIR --jfk jfk.flac --compare float8 [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

from closed_loop import closed_loop
from gpu_batching import transcribe_text
from gpu_batching_engines import EngineFactory, OurEngine
from speech_corpus import load_corpus

from voicefleet_runtime.engine.models import ResolvedModel

Settings = dict[str, Callable[[], OurEngine]]


def settings(
    compare: str, factory: EngineFactory, model: ResolvedModel, concurrency: int
) -> tuple[Settings, list[OurEngine]]:
    """Each setting's name and how to put an engine in it before a round; the engines."""
    if compare == "overlap":
        ours = factory.batched(model, concurrency)

        def overlapped(on: bool) -> OurEngine:
            ours.engine.loops[0].overlap_steps = on  # between rounds: nothing is in flight
            return ours

        choices: Settings = {
            "overlap on": partial(overlapped, True),
            "overlap off": partial(overlapped, False),
        }
        return choices, [ours]
    float8 = factory.batched(model, concurrency, float8="on")
    model_dtype = factory.batched(model, concurrency, float8="off")
    return {"float8": lambda: float8, "model dtype": lambda: model_dtype}, [float8, model_dtype]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--jfk", type=Path)
    parser.add_argument("--compare", choices=["overlap", "float8"], default="overlap")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cpu: a check of this script")
    args = parser.parse_args()
    clips = load_corpus(args.jfk)
    precision = "float16" if args.device.startswith("cuda") else "float32"
    # gpu_batching.py's in-process engines: the settings as served.
    factory = EngineFactory(args.device, precision, {})
    choices, engines = settings(
        args.compare, factory, ResolvedModel(args.model.name, args.model, False), args.concurrency
    )
    requests = 2 * args.concurrency
    for choose in choices.values():
        closed_loop(partial(transcribe_text, choose()), clips, args.concurrency, requests, 1e9)
    figures: dict[str, list[float]] = {name: [] for name in choices}
    for round_index in range(args.rounds):
        for name, choose in list(choices.items())[:: -1 if round_index % 2 else 1]:
            ours = choose()
            ours.reset_stats()
            result = closed_loop(
                partial(transcribe_text, ours), clips, args.concurrency, requests, 1e9
            )
            row = result.row("", "", args.concurrency)
            figures[name].append(row.audio_s_per_s)
            stats = ours.engine.loops[0].stats
            print(
                f"{name:<12} {row.audio_s_per_s:7.1f} audio s/s, WER {row.wer or 0:.4f}, step "
                f"{ours.step_ms() or 0:.2f} ms wall / {ours.step_gpu_ms() or 0:.2f} GPU, "
                f"{stats.steps} steps, {stats.windows_requeued} windows retried",
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in figures.items()}
    first, second = medians
    print(
        f"median: {first} {medians[first]:.1f}, {second} {medians[second]:.1f} audio s/s; "
        f"{first} / {second} {medians[first] / medians[second]:.2f}x"
    )
    for ours in engines:
        ours.close()


if __name__ == "__main__":
    main()
