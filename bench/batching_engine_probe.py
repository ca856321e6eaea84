"""Development probe of the batched torch engine on a GPU: graphs against eager, throughput by
batch size, one GPU against all of them. Random weights (no carry needed) unless a model
folder is given; the full benchmark with real weights and the HF anchor is
bench/gpu_batching.py.

    python bench/batching_engine_probe.py --tokenizer DIR [--model DIR] [--shape tiny|large-v3]
        [--batches 1,8,32,64,128] [--forced-length 100] [--audio FILE.npy]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from voicefleet_runtime.engine.base import DecodeOptions
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper.batched import BatchedWhisperEngine, BatchingConfig
from voicefleet_runtime.engine.torch_whisper.model import LARGE_V3_DIMENSIONS, WhisperDimensions

TINY_DIMENSIONS = WhisperDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
SHAPES = {"tiny": TINY_DIMENSIONS, "large-v3": LARGE_V3_DIMENSIONS}


def build(args: argparse.Namespace, config: BatchingConfig, device: str) -> BatchedWhisperEngine:
    if args.model:
        folder = Path(args.model)
        return BatchedWhisperEngine.load(
            ResolvedModel(folder.name, folder, False), device, args.precision, config
        )
    tokenizer = ResolvedModel("tokenizer", Path(args.tokenizer), True)
    return BatchedWhisperEngine.random(
        SHAPES[args.shape], tokenizer, device, args.precision, config, seed=0
    )


def run_batch(
    engine: BatchedWhisperEngine, audio: np.ndarray, clients: int, rounds: int
) -> dict[str, float]:
    options = DecodeOptions(beam_size=1, language="en", segment_timestamps=False)

    def one(_: int) -> float:
        started = time.perf_counter()
        _info, segments = engine.transcribe(audio, options)
        for _segment in segments:
            pass
        return time.perf_counter() - started

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))  # warm-up round
        engine.reset_stats()
        started = time.perf_counter()
        latencies = list(pool.map(one, range(clients * rounds)))
        wall = time.perf_counter() - started
    stats = engine.stats()
    seconds = audio.shape[0] / 16000 * clients * rounds
    return {
        "clients": clients,
        "audio_s_per_s": round(seconds / wall, 1),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3),
        "step_ms": round(float(stats["step_ms"]), 3),
        "step_gpu_ms": round(float(stats["step_gpu_ms"]), 3),
        "encoder_gpu_ms_per_window": round(
            1000 * float(stats["encoder_gpu_seconds"]) / max(stats["encoder_windows"], 1), 3
        ),
        "steps": stats["steps"],
        "encoder_s": round(float(stats["encoder_seconds"]), 3),
        "decode_s": round(float(stats["decode_seconds"]), 3),
        "wall_s": round(wall, 3),
        "mean_batch": round(
            sum(k * v for k, v in stats["batch_histogram"].items())
            / max(sum(stats["batch_histogram"].values()), 1),
            1,
        ),
    }


def graphs_agree(args: argparse.Namespace, audio: np.ndarray) -> dict[str, object]:
    """Same weights, same audio: tokens with graphs and bucket padding against eager steps."""
    options = DecodeOptions(beam_size=1, language="en")
    outputs = []
    for graphs in (True, False):
        config = BatchingConfig(max_sequences=16, memory_gib=8, cuda_graphs=graphs)
        engine = build(args, config, "cuda:0")
        clips = [audio[i * 8000 :] for i in range(6)]

        def tokens(
            clip: np.ndarray, engine: BatchedWhisperEngine = engine
        ) -> list[tuple[int, ...]]:
            return [segment.tokens for segment in engine.transcribe(clip, options)[1]]

        with ThreadPoolExecutor(6) as pool:
            texts = list(pool.map(tokens, clips))
        outputs.append(texts)
        engine.close()
    same = sum(a == b for a, b in zip(outputs[0], outputs[1], strict=True))
    return {"clips": len(outputs[0]), "identical": same}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--model")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--precision", default="float16")
    parser.add_argument("--batches", default="1,8,32,64,128")
    parser.add_argument("--forced-length", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--audio", help=".npy float32 16 kHz clip; default: 30 s of noise")
    parser.add_argument("--memory-gib", type=float, default=40.0)
    parser.add_argument("--check-graphs", action="store_true")
    parser.add_argument("--devices", default="cuda:0,cuda")

    args = parser.parse_args()
    rng = np.random.default_rng(0)
    audio = (
        np.load(args.audio).astype(np.float32)
        if args.audio
        else (0.1 * rng.standard_normal(30 * 16000)).astype(np.float32)
    )
    report: dict[str, object] = {
        "shape": args.shape,
        "model": args.model,
        "precision": args.precision,
    }
    if args.check_graphs:
        report["graphs_agree"] = graphs_agree(args, audio)
        print(json.dumps(report), flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    for device in args.devices.split(","):
        config = BatchingConfig(
            max_sequences=max(batches),
            memory_gib=args.memory_gib,
            windows_per_request=8,
            encoder_batch=32,
            forced_length=args.forced_length,
        )
        started = time.perf_counter()
        engine = build(args, config, device)
        load_s = time.perf_counter() - started
        print(
            json.dumps(
                {"device": device, "load_and_capture_s": round(load_s, 1), **engine.stats()}
            ),
            flush=True,
        )
        for clients in batches:
            row = run_batch(engine, audio, clients, args.rounds)
            print(json.dumps({"device": device, "shape": args.shape, **row}), flush=True)
        engine.close()
        del engine
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
