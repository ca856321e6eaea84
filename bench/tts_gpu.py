"""Kokoro on a GPU (the torch paths) against onnxruntime's int8 CPU path, in the same run.

Two steps, because the device machine has neither our G2P nor the packaged model:

    # here: phonemise the workload, and stage model, voice and code for the device
    .venv/bin/python bench/tts_gpu.py prepare DIR
    # on the device (DIR carried, model joined from its parts there):
    python3 bench/tts_gpu.py run DIR [--concurrency 1 8 32] [--cpu-threads 1 4]

`run` measures, on the same chunks (the server's own normaliser and chunk planner made them):
- the baseline: KokoroOnnx (the int8 graph, onnxruntime CPU) single-stream, per thread count;
- the old GPU path, KokoroTorch (tts_onnx2torch.py: the graph converted node by node), unless
  --skip-onnx2torch: `c` concurrent requests from `c` threads, one CUDA stream each;
- the runtime's torch backend, KokoroNative (tts/native/, behind its micro-batcher), in each of
  --native-dtypes: `c` concurrent requests from `c` threads (each request speaks its chunks in
  order, as the server streams them), then synthesize_batch directly at fixed batch sizes, its
  launches and host syncs per forward, and its agreement with float32 (durations, audio).
Figures: aggregate real-time factor (audio seconds / wall seconds), time to first audio (the
first chunk's audio ready) p50/p95, and per-request latency. It prints them, their ratio to the
baseline, and writes them as JSON to --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tts_workload import TEXTS, VOICE

from voicefleet_runtime.tts.model import SAMPLE_RATE

REQUESTS = tuple(f"{TEXTS[i % 8]} {TEXTS[(i + 3) % 8]}" for i in range(8))
"""Eight two-sentence requests (two chunks each), reused round-robin at any concurrency."""


def prepare(folder: Path) -> None:
    from voicefleet_runtime.tts.assets import (
        DEFAULT_ASSETS_DIR,
        load_vocab,
        model_bytes,
        voice_files,
    )
    from voicefleet_runtime.tts.chunking import plan_chunks
    from voicefleet_runtime.tts.g2p import EnglishG2P
    from voicefleet_runtime.tts.normalize import normalize_text
    from voicefleet_runtime.tts.vocab import token_ids

    folder.mkdir(parents=True, exist_ok=True)
    g2p, vocab = EnglishG2P(), load_vocab(DEFAULT_ASSETS_DIR)
    workload = [
        [
            token_ids(chunk.phonemes, vocab)
            for chunk in plan_chunks(normalize_text(text), g2p.phonemes)
        ]
        for text in REQUESTS
    ]
    (folder / "workload.json").write_text(json.dumps({"voice": VOICE, "requests": workload}))
    shutil.copy(voice_files(DEFAULT_ASSETS_DIR)[VOICE], folder / f"{VOICE}.bin")
    model = model_bytes()
    half = len(model) // 2
    (folder / "model.part1").write_bytes(model[:half])
    (folder / "model.part2").write_bytes(model[half:])
    (folder / "model.sha256").write_text(hashlib.sha256(model).hexdigest())
    print(f"staged {len(workload)} requests, {VOICE}, the model in 2 parts in {folder}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _speak_request(
    model: Any, style_of: Any, chunks: list[list[int]]
) -> tuple[float, float, float]:
    """(time to first audio, whole latency, audio seconds) for one request, chunk by chunk."""
    started = time.perf_counter()
    first = 0.0
    samples = 0
    for index, ids in enumerate(chunks):
        audio = model.synthesize(ids, style_of(len(ids) - 2), 1.0)
        samples += audio.shape[0]
        if index == 0:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started, samples / SAMPLE_RATE


def _load(
    concurrency: int, model: Any, style_of: Any, requests: list[list[list[int]]], rounds: int
) -> dict[str, float]:
    jobs = [requests[i % len(requests)] for i in range(concurrency * rounds)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda chunks: _speak_request(model, style_of, chunks), jobs))
    wall = time.perf_counter() - started
    return {"concurrency": concurrency, **_summary(results, wall)}


def _summary(results: list[tuple[float, float, float]], wall: float) -> dict[str, float]:
    """Figures of finished requests, each (first audio s, latency s, audio s), over `wall` s."""
    firsts = [r[0] for r in results]
    audio = sum(r[2] for r in results)
    return {
        "requests": len(results),
        "audio_seconds": audio,
        "wall_seconds": wall,
        "real_time_factor": audio / wall,
        "first_audio_p50_ms": 1000 * statistics.median(firsts),
        "first_audio_p95_ms": 1000 * _percentile(firsts, 0.95),
        "latency_p50_ms": 1000 * statistics.median(r[1] for r in results),
    }


def _worker(
    folder: str, device: str, concurrency: int, rounds: int, barrier: Any, out: Any
) -> None:
    """One process of the multi-process variant: its own model copy, its own GIL."""
    from tts_onnx2torch import KokoroTorch

    from voicefleet_runtime.tts.voices import load_voice

    root = Path(folder)
    model = (root / "model.part1").read_bytes() + (root / "model.part2").read_bytes()
    spec = json.loads((root / "workload.json").read_text())
    voice = load_voice(spec["voice"], root / f"{spec['voice']}.bin")
    requests = spec["requests"]
    torch_model = KokoroTorch(model, device)
    for ids in (chunks[0] for chunks in requests[:3]):
        torch_model.synthesize(ids, voice.style_for(len(ids) - 2), 1.0)
    barrier.wait()
    jobs = [requests[i % len(requests)] for i in range(concurrency * rounds)]
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(
            pool.map(lambda chunks: _speak_request(torch_model, voice.style_for, chunks), jobs)
        )
    out.put((time.time(), results))


def _load_processes(
    folder: Path, device: str, processes: int, concurrency: int, rounds: int
) -> dict[str, float]:
    """`concurrency` requests at once spread over `processes` processes sharing the GPU."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    out = context.Queue()
    per_process = max(1, concurrency // processes)
    workers = [
        context.Process(
            target=_worker, args=(str(folder), device, per_process, rounds, barrier, out)
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=600)
    started = time.time()
    finished = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    wall = max(end for end, _ in finished) - started
    results = [r for _, rs in finished for r in rs]
    return {
        "processes": processes,
        "concurrency": per_process * processes,
        **_summary(results, wall),
    }


def run(folder: Path, args: argparse.Namespace) -> None:
    import torch

    from voicefleet_runtime.tts.onnx_model import KokoroOnnx
    from voicefleet_runtime.tts.voices import load_voice

    model = (folder / "model.part1").read_bytes() + (folder / "model.part2").read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    assert digest == (folder / "model.sha256").read_text().strip(), "the joined model is corrupt"
    spec = json.loads((folder / "workload.json").read_text())
    voice = load_voice(spec["voice"], folder / f"{spec['voice']}.bin")
    requests: list[list[list[int]]] = spec["requests"][: args.max_requests]
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "chunks_per_request": [len(r) for r in requests],
    }
    print(json.dumps(report["machine"]), flush=True)

    baseline = {}
    for threads in args.cpu_threads:
        onnx_model = KokoroOnnx(model, threads, max_parallel_runs=1)
        _speak_request(onnx_model, voice.style_for, requests[0])  # warm-up
        baseline[threads] = _load(1, onnx_model, voice.style_for, requests, 1)
        print(
            f"onnxruntime int8 CPU, {threads} thread(s), c=1: {json.dumps(baseline[threads])}",
            flush=True,
        )
    report["onnxruntime_cpu"] = baseline

    # --cpu-threads with no value skips the CPU baseline (minutes of device time); the ratios
    # to it then read nan.
    best_cpu = max((b["real_time_factor"] for b in baseline.values()), default=float("nan"))
    if not args.skip_onnx2torch:
        from tts_onnx2torch import KokoroTorch  # onnx2torch: carried as a wheel to the device

        started = time.perf_counter()
        torch_model = KokoroTorch(model, args.device)
        report["torch_load_seconds"] = time.perf_counter() - started
        print(
            f"onnx2torch: converted and moved to {args.device} in "
            f"{report['torch_load_seconds']:.1f} s",
            flush=True,
        )
        for ids in (chunks[0] for chunks in requests[:3]):  # warm-up: a few shapes
            torch_model.synthesize(ids, voice.style_for(len(ids) - 2), 1.0)
        rows = []
        for concurrency in args.concurrency:
            row = _load(concurrency, torch_model, voice.style_for, requests, args.rounds)
            row["vs_best_cpu"] = row["real_time_factor"] / best_cpu
            rows.append(row)
            print(f"onnx2torch {args.device} c={concurrency}: {json.dumps(row)}", flush=True)
        report["torch"] = rows
        del torch_model
    report["native"] = {
        f"{dtype} max_batch={max_batch}{' compiled' if compiled else ''}": _native(
            model, args, voice, requests, dtype, best_cpu, max_batch, compiled, first=index == 0
        )
        for dtype in args.native_dtypes
        for compiled in sorted({mode == "on" for mode in args.compiled})
        for index, max_batch in enumerate(args.max_batch)
    }
    process_rows = []
    for processes in args.processes:
        row = _load_processes(folder, args.device, processes, args.process_concurrency, args.rounds)
        row["vs_best_cpu"] = row["real_time_factor"] / best_cpu
        process_rows.append(row)
        print(f"torch {args.device}, {processes} processes: {json.dumps(row)}", flush=True)
    report["torch_processes"] = process_rows
    if torch.cuda.is_available():
        report["gpu_memory_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def _native(
    model: bytes,
    args: argparse.Namespace,
    voice: Any,
    requests: list[list[list[int]]],
    dtype_name: str,
    best_cpu: float,
    max_batch: int,
    compiled: bool,
    first: bool,
) -> dict[str, Any]:
    """KokoroNative in one precision and batch bound: served-style load; for the `first` bound
    also fixed batches, launches and the kernels' time, and agreement with float32."""
    import torch

    from voicefleet_runtime.tts.native.backend import KokoroNative, load_net
    from voicefleet_runtime.tts.native.model import ChunkRequest

    dtype = getattr(torch, dtype_name)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        native = KokoroNative(model, args.device, dtype, max_batch=max_batch, compiled=compiled)
    except Exception as error:  # a report, not a crash: the other rows still print
        print(f"native {dtype_name}: fails to load: {type(error).__name__}: {error}", flush=True)
        return {"error": str(error)}
    result["load_seconds"] = time.perf_counter() - started
    chunks = [ChunkRequest(ids, voice.style_for(len(ids) - 2), 1.0) for r in requests for ids in r]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    try:
        for size in (1, 2, 8, 32):  # warm-up: cuDNN picks its algorithms per shape
            native.synthesize_batch([chunks[i % len(chunks)] for i in range(size)])
        sync()
    except Exception as error:
        print(f"native {dtype_name}: fails: {type(error).__name__}: {error}", flush=True)
        native.close()
        return {"error": str(error)}
    label = f"native {dtype_name} max_batch={max_batch}{' compiled' if compiled else ''}"
    result["warm_up_seconds"] = time.perf_counter() - started - result["load_seconds"]
    print(
        f"{label}: loaded in {result['load_seconds']:.1f} s, "
        f"warmed up (compiled, if so) in {result['warm_up_seconds']:.1f} s",
        flush=True,
    )
    rows = []
    for concurrency in args.concurrency:
        before = dict(native.batcher.batch_sizes)
        row: dict[str, Any] = _load(concurrency, native, voice.style_for, requests, args.rounds)
        row["vs_best_cpu"] = row["real_time_factor"] / best_cpu
        after = native.batcher.batch_sizes
        row["batches"] = {
            n: after[n] - before.get(n, 0) for n in after if after[n] - before.get(n, 0)
        }
        # Graphs compiled so far in this process: a rise during a row would be a recompile.
        row["compiled_graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        rows.append(row)
        print(f"{label} {args.device} c={concurrency}: {json.dumps(row)}", flush=True)
    result["served"] = rows
    if not first:
        native.close()
        return result
    direct = []
    for size in args.batch_sizes:
        batch = [chunks[i % len(chunks)] for i in range(size)]
        native.synthesize_batch(batch)
        sync()
        started = time.perf_counter()
        repeats = 3
        audio = 0.0
        for _ in range(repeats):
            audio += sum(piece.shape[0] for piece in native.synthesize_batch(batch)) / SAMPLE_RATE
        wall = (time.perf_counter() - started) / repeats
        row = {
            "batch": size,
            "ms_per_batch": 1000 * wall,
            "real_time_factor": audio / repeats / wall,
        }
        direct.append(row)
        print(f"{label} synthesize_batch: {json.dumps(row)}", flush=True)
    result["direct"] = direct
    result["new_shapes"] = _new_shapes(native, chunks[1:], sync)
    print(f"{label} each chunk alone, first and second time: {result['new_shapes']}", flush=True)
    if device.type == "cuda":
        result["gpu_memory_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["per_forward"] = {size: _launches(native, chunks[:size]) for size in (1, 32)}
        print(f"{label} per forward: {json.dumps(result['per_forward'])}", flush=True)
    if dtype_name != "float32" or compiled:
        reference = load_net(model, device, torch.float32)
        result["vs_float32"] = _agreement(native.net, reference, chunks)
        del reference
        print(f"{label} vs float32: {json.dumps(result['vs_float32'])}", flush=True)
    native.close()
    return result


def _new_shapes(native: Any, chunks: list[Any], sync: Callable[[], None]) -> dict[str, float]:
    """Mean ms of a forward of one chunk the first time its shapes are seen, then the second
    time: the served rows meet new shapes at every forward (cuDNN builds a plan per new conv
    and LSTM shape), the repeated synthesize_batch rows do not."""
    passes = []
    for _ in range(2):
        sync()
        started = time.perf_counter()
        for chunk in chunks:
            native.synthesize_batch([chunk])
        sync()
        passes.append(1000 * (time.perf_counter() - started) / len(chunks))
    return {"first_ms": passes[0], "second_ms": passes[1], "chunks": len(chunks)}


def _launches(native: Any, chunks: list[Any]) -> dict[str, float]:
    """Kernel launches, host syncs and device time of one forward of `chunks`."""
    import torch

    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as prof:
        native.synthesize_batch(chunks)
        torch.cuda.synchronize()
    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    launches = sum(n for key, n in count.items() if "LaunchKernel" in key)
    sync_calls = {k: n for k, n in count.items() if "Synchronize" in k or k == "aten::item"}
    syncs = sum(sync_calls.values())
    copies = sum(n for key, n in count.items() if "Memcpy" in key and "cuda" in key.lower())
    by_time = sorted(events, key=lambda e: -e.self_device_time_total)
    # Each kernel's time shows twice, under its own name and as the launching op's self time:
    # the aten ops' self times count it once.
    aten = [e for e in by_time if e.key.startswith("aten::") and e.self_device_time_total > 0]
    device_ms = sum(e.self_device_time_total for e in aten) / 1000
    top = {e.key: round(e.self_device_time_total / 1000, 2) for e in aten[:12]}
    return {
        "launches": launches,
        "syncs": syncs,
        "sync_calls": sync_calls,
        "memcpy_calls": copies,
        "device_ms": device_ms,
        "device_ms_by_op": top,
    }


def _agreement(half: Any, reference: Any, chunks: list[Any]) -> dict[str, float]:
    """How a half-precision model's output compares with float32's on every chunk."""
    import numpy as np
    import torch

    same_durations = 0
    errors = []
    with torch.inference_mode():
        for chunk in chunks:
            ours, theirs = half([chunk]), reference([chunk])
            if torch.equal(ours.durations.cpu(), theirs.durations.cpu()):
                same_durations += 1
                a, b = ours.audio[0].float().cpu().numpy(), theirs.audio[0].float().cpu().numpy()
                errors.append(float(np.linalg.norm(a - b) / np.linalg.norm(b)))
    return {
        "chunks": len(chunks),
        "same_durations": same_durations,
        "audio_relative_error_median": statistics.median(errors) if errors else float("nan"),
        "audio_relative_error_max": max(errors) if errors else float("nan"),
    }


def profile(folder: Path, args: argparse.Namespace) -> None:
    """Where one chunk's time goes on the device: each converted ONNX node timed with a sync
    before and after (so launches do not overlap), summed by op type."""
    from collections import defaultdict

    import torch
    from tts_onnx2torch import KokoroTorch

    from voicefleet_runtime.tts.voices import load_voice

    model = (folder / "model.part1").read_bytes() + (folder / "model.part2").read_bytes()
    spec = json.loads((folder / "workload.json").read_text())
    voice = load_voice(spec["voice"], folder / f"{spec['voice']}.bin")
    ids = spec["requests"][0][0]
    torch_model = KokoroTorch(model, args.device)
    module = torch_model.module
    inputs = (
        torch.tensor([ids], device=args.device),
        torch.from_numpy(voice.style_for(len(ids) - 2).reshape(1, -1)).to(args.device),
        torch.tensor([1.0], device=args.device),
    )
    on_gpu = args.device.startswith("cuda")

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = {}

    class Timed(torch.fx.Interpreter):
        def run_node(self, node: Any) -> Any:
            sync()
            started = time.perf_counter()
            result = super().run_node(node)
            sync()
            elapsed = time.perf_counter() - started
            if node.op == "call_module":
                kind = type(self.fetch_attr(node.target)).__name__
                by_type[kind] += elapsed
                by_node[f"{kind} {node.target}"] = elapsed
            return result

    with torch.inference_mode():
        for _ in range(3):
            module(*inputs)
        sync()
        started = time.perf_counter()
        for _ in range(5):
            module(*inputs)
        sync()
        print(
            f"one chunk of {len(ids)} tokens: {(time.perf_counter() - started) / 5 * 1000:.1f} ms"
        )
        style = voice.style_for(len(ids) - 2)

        def in_this_thread() -> None:
            torch_model.synthesize(ids, style, 1.0)

        def in_a_worker_thread() -> None:
            ThreadPoolExecutor(1).submit(torch_model.synthesize, ids, style, 1.0).result()

        for label, call in (
            ("synthesize() (numpy in and out, a side stream)", in_this_thread),
            ("synthesize() from a worker thread", in_a_worker_thread),
        ):
            call()
            started = time.perf_counter()
            for _ in range(5):
                call()
            print(f"{label}: {(time.perf_counter() - started) / 5 * 1000:.1f} ms")
        if args.device.startswith("cuda"):
            for dtype in (torch.float16, torch.bfloat16):
                try:
                    with torch.autocast("cuda", dtype=dtype):
                        module(*inputs)
                        sync()
                        started = time.perf_counter()
                        for _ in range(5):
                            module(*inputs)
                        sync()
                    elapsed = (time.perf_counter() - started) / 5 * 1000
                    print(f"  under autocast {dtype}: {elapsed:.1f} ms")
                except RuntimeError as error:
                    print(f"  autocast {dtype} fails: {str(error)[:200]}")
        by_type.clear()
        Timed(module).run(*inputs)
    print(
        "by op type (ms):",
        json.dumps(
            {k: round(v * 1000, 2) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])[:25]}
        ),
    )
    print("slowest nodes (ms):")
    for name, seconds in sorted(by_node.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {seconds * 1000:8.2f} {name}")
    if args.compile:
        _try_compile(module, spec["requests"], voice, args.device, sync)
    with (
        torch.inference_mode(),
        torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        ) as prof,
    ):
        module(*inputs)
        sync()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25))


def _try_compile(
    module: Any, requests: Any, voice: Any, device: str, sync: Callable[[], None]
) -> None:
    """torch.compile with dynamic shapes: fewer launches and less Python per chunk, if it works."""
    import torch

    def inputs(ids: list[int]) -> tuple[Any, ...]:
        style = voice.style_for(len(ids) - 2).reshape(1, -1)
        return (
            torch.tensor([ids], device=device),
            torch.from_numpy(style).to(device),
            torch.tensor([1.0], device=device),
        )

    try:
        compiled: Any = torch.compile(module, dynamic=True)
        with torch.inference_mode():
            for chunks in requests[:4]:
                started = time.perf_counter()
                out = compiled(*inputs(chunks[0]))
                sync()
                print(
                    f"compile/warm {len(chunks[0])} tokens: {time.perf_counter() - started:.1f} s"
                )
            ids = requests[0][0]
            eager = module(*inputs(ids))
            started = time.perf_counter()
            for _ in range(5):
                out = compiled(*inputs(ids))
            sync()
            elapsed = (time.perf_counter() - started) / 5 * 1000
            same = out.shape == eager.shape
            print(f"compiled: {elapsed:.1f} ms per chunk; same length as eager: {same}")
    except Exception as error:  # a report, not a crash: the other figures still print
        print(f"torch.compile failed: {type(error).__name__}: {str(error)[:500]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("prepare", "run", "profile"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--cpu-threads", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--processes", type=int, nargs="*", default=[], help="multi-process variant"
    )
    parser.add_argument("--process-concurrency", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="profile: try torch.compile")
    parser.add_argument("--skip-onnx2torch", action="store_true")
    parser.add_argument("--native-dtypes", nargs="*", default=["float32", "float16", "bfloat16"])
    parser.add_argument(
        "--max-batch", type=int, nargs="+", default=[32], help="the native batcher's bounds"
    )
    parser.add_argument(
        "--compiled",
        nargs="+",
        choices=("off", "on"),
        default=["off"],
        help="native rows with eager norms, compiled ones (VOICEFLEET_TTS_COMPILE), or both",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 8, 32, 64])
    parser.add_argument("--max-requests", type=int, default=None, help="a quick check")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.folder)
    elif args.step == "profile":
        profile(args.folder, args)
    else:
        run(args.folder, args)


if __name__ == "__main__":
    main()
