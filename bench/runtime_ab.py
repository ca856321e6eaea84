"""Two runtime trees' batched engines on one machine, in-process, alternating: what a change to
the engine buys or costs where nothing else differs (the host, HF's figure, the load).

Each round starts one process per tree, with that tree's `runtime/` first on PYTHONPATH. The
process loads the batched engine on the model, warms it, runs a closed loop of `--clients`
callers over the benchmark's speech for `--seconds` (as gpu_batching.py's in-process rows),
and prints audio s/s and the mean decode step. Rounds alternate which tree goes first, so
drift on a shared host hits both alike.

    git worktree add /tmp/before <commit>
    python bench/runtime_ab.py --model DIR --before /tmp/before/runtime [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
AFTER = BENCH.parent / "runtime"


def measure(
    model: Path, jfk: Path | None, device: str, precision: str, clients: int, seconds: float
) -> dict[str, float | str]:
    """In this process: the batched engine's closed loop (the tree is whatever imports)."""
    sys.path.insert(0, str(BENCH))
    from closed_loop import UNCAPPED_REQUESTS, closed_loop
    from gpu_batching import transcribe_text, warm_up
    from gpu_batching_engines import EngineFactory
    from speech_corpus import load_corpus

    import voicefleet_runtime
    from voicefleet_runtime.engine.models import resolve_model

    clips = load_corpus(jfk)
    engine = EngineFactory(device, precision, {}).batched(resolve_model(str(model), None), clients)
    warm_up(engine, clips, clients)
    engine.reset_stats()
    result = closed_loop(
        partial(transcribe_text, engine), clips, clients, UNCAPPED_REQUESTS, seconds
    )
    return {
        "audio_s_per_s": result.audio_seconds / result.wall_s,
        "step_ms": engine.step_ms() or 0.0,
        "requests": float(len(result.latencies)),
        "runtime": str(Path(voicefleet_runtime.__file__).parent.parent),
    }


def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, float | str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, __file__, "--child", "--model", str(args.model)]
    command += ["--device", args.device, "--precision", args.precision]
    command += ["--clients", str(args.clients), "--seconds", str(args.seconds)]
    command += ["--jfk", str(args.jfk)] if args.jfk else []
    finished = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    figures: dict[str, float | str] = json.loads(finished.stdout.strip().splitlines()[-1])
    if Path(str(figures["runtime"])) != tree:  # the tree must be the one that was imported
        raise RuntimeError(f"{tree} was asked for, {figures['runtime']} was imported")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--before", type=Path, help="the other tree's runtime/ folder")
    parser.add_argument("--jfk", type=Path, help="jfk.flac (default: ../shared/audio)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="float16")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = measure(
            args.model, args.jfk, args.device, args.precision, args.clients, args.seconds
        )
        print(json.dumps(figures), flush=True)
        return
    if args.before is None:
        parser.error("--before is required")
    trees = {"before": args.before.resolve(), "after": AFTER}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for round_index in range(args.rounds):
        order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
        for name in order:
            figures = run_tree(trees[name], args)
            rates[name].append(float(figures["audio_s_per_s"]))
            print(
                f"round {round_index + 1} {name:<6} {float(figures['audio_s_per_s']):9.1f} "
                f"audio s/s  step {float(figures['step_ms']):.2f} ms  "
                f"{float(figures['requests']):.0f} requests",
                flush=True,
            )
    before, after = sum(rates["before"]) / args.rounds, sum(rates["after"]) / args.rounds
    ratio = after / before
    print(f"{args.clients} callers, mean of {args.rounds} rounds: after / before = {ratio:.3f}x")


if __name__ == "__main__":
    main()
