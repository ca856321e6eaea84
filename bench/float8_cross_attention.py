"""Float8 cross-attention keys and values against bfloat16 ones, on one GPU, in one run.

Three measurements, every figure beside its baseline from the same process:
1. the ceiling: a device-to-device copy (bytes read and written per second);
2. 32 layers of one-query cross-attention (1500 audio positions, the large-v3 shape) at
   each batch: cuDNN's SDPA on bfloat16 against decode_attention.attend, for each kernel
   tuning (positions per block, warps), with the largest error against float32 attention
   over the same dequantised keys and values;
3. the decode step itself, captured as the engine captures it, with the cache in float8 and
   in bfloat16 (GPU time of a replay, per context bucket), for the large-v3 and tiny shapes,
   and with float8 cross-attention but SDPA's self-attention; and one eager step's tokens and
   log-probabilities with the kernel's self-attention against SDPA's.

    python bench/float8_cross_attention.py --tokenizer DIR [--batches 1 8 32 64 128]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from gpu_batching_measure import gpu_ms
from torch.nn import functional
from torch.nn.attention import SDPBackend, sdpa_kernel

from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper.batched import (
    BatchedWhisperEngine,
    BatchingConfig,
    decode_attention,
)
from voicefleet_runtime.engine.torch_whisper.batched.cache import (
    dequantize_float8,
    quantize_float8,
)
from voicefleet_runtime.engine.torch_whisper.batched.step import DecodeStep
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import (
    INPUT_COLUMNS,
    OUT_LOGPROB,
    OUT_TOKEN,
    POSITION,
)
from voicefleet_runtime.engine.torch_whisper.model import LARGE_V3_DIMENSIONS, WhisperDimensions

TINY = WhisperDimensions(80, 1500, 384, 6, 4, 51865, 448, 384, 6, 4)
"""tiny's shape, multilingual (the tokenizer is base's)."""
Tuning = decode_attention.Tuning
TUNINGS = [
    *(
        Tuning(block, warps, programs)
        for block, warps in ((64, 2), (128, 2), (128, 4), (256, 4), (256, 8))
        for programs in (4, 8, 12, 16, 24, 32)
    ),
    *(Tuning(256, 4, programs, stages) for programs in (4, 16) for stages in (1, 2, 4)),
]
"""The lanes kernel's candidates. A version with tensor-core products (16 query rows, 15 of
them zeros) ran 20-30% slower at batch 64 and 128 (2026-11-30), and was dropped."""


def tuning_name(tuning: Tuning) -> str:
    return (
        f"block{tuning.block}_warps{tuning.warps}_programs{tuning.programs_per_processor}"
        f"_stages{tuning.stages}"
    )


def graph_ms(work: Callable[[], object]) -> float:
    """GPU time of `work` replayed as one CUDA graph, as the decode step runs it: without
    the launches' host overhead, which dominates Triton's eager calls at small batches."""
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        work()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    return gpu_ms(graph.replay)


def copy_tb_per_s() -> float:
    source = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    ms = gpu_ms(lambda: target.copy_(source), 10)
    return 2 * source.numel() / ms / 1e9


Pair = tuple[torch.Tensor, torch.Tensor]


def stacked(pairs: Iterator[Pair]) -> Pair:
    firsts, seconds = zip(*pairs, strict=True)
    return torch.stack(firsts), torch.stack(seconds)


def kernels(
    batch: int,
    layers: int,
    processors: int,
    report: dict[str, float],
    chosen: dict[int, Tuning],
    tunings: list[Tuning],
) -> None:
    dims = LARGE_V3_DIMENSIONS
    heads, head_dim = dims.n_text_head, dims.n_text_state // dims.n_text_head
    shape = (layers, batch, heads, dims.n_audio_ctx, head_dim)
    generator = torch.Generator("cuda").manual_seed(batch)
    keys = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    values = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    query = torch.randn(batch, heads, head_dim, device="cuda", dtype=torch.bfloat16) * 2
    # Layer by layer: quantising all 32 at once would need float32 copies of every layer.
    keys8, key_scales = stacked(quantize_float8(layer) for layer in keys)
    values8, value_scales = stacked(quantize_float8(layer) for layer in values)
    scales = torch.stack([key_scales, value_scales], dim=-1).contiguous()

    def cudnn() -> None:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            for layer in range(layers):
                functional.scaled_dot_product_attention(
                    query[:, :, None], keys[layer], values[layer]
                )

    bf16_bytes = 2 * keys.numel() * keys.element_size()
    ms = graph_ms(cudnn)
    report[f"b{batch}_cudnn_bf16_ms"] = ms
    report[f"b{batch}_cudnn_bf16_tb_s"] = bf16_bytes / ms / 1e9
    reference = functional.scaled_dot_product_attention(
        query[:, :, None].float(),
        dequantize_float8(keys8[0], key_scales[0], torch.float32),
        dequantize_float8(values8[0], value_scales[0], torch.float32),
    )[:, :, 0]
    best = float("inf")
    for tuning in tunings:
        name = tuning_name(tuning)

        def float8(tuning: Tuning = tuning) -> None:
            for layer in range(layers):
                decode_attention.attend(
                    query, keys8[layer], values8[layer], scales[layer], processors, tuning
                )

        ms = graph_ms(float8)
        out = decode_attention.attend(query, keys8[0], values8[0], scales[0], processors, tuning)
        report[f"b{batch}_float8_ms_{name}"] = ms
        report[f"b{batch}_float8_error_{name}"] = (out.float() - reference).abs().max().item()
        if ms < best:
            best, chosen[batch] = ms, tuning
    report[f"b{batch}_float8_best_ms"] = best
    report[f"b{batch}_float8_best_tb_s"] = bf16_bytes / 2 / best / 1e9
    report[f"b{batch}_speedup_best_vs_cudnn"] = report[f"b{batch}_cudnn_bf16_ms"] / best
    print(
        f"batch {batch}: cuDNN bf16 {report[f'b{batch}_cudnn_bf16_ms']:.3f} ms, float8 best "
        f"{best:.3f} ms ({report[f'b{batch}_speedup_best_vs_cudnn']:.2f}x)",
        flush=True,
    )


def time_steps(
    step: DecodeStep, name: str, variant: str, batches: list[int], report: dict[str, float]
) -> None:
    with torch.inference_mode():
        for batch in batches:
            table = torch.zeros(batch, INPUT_COLUMNS, dtype=torch.long)
            table[:, POSITION] = 60
            step.inputs[:batch].copy_(table)
            for context in step.context_buckets[:2]:
                graph, _ = step._graphs[(batch, context)]
                key = f"{name}_step_ms_b{batch}_ctx{context}_{variant}"
                report[key] = gpu_ms(graph.replay)
                print(f"{key} = {report[key]:.3f}", flush=True)


def compare_self_attention(step: DecodeStep, name: str, report: dict[str, float]) -> None:
    """One eager step of 8 rows at mixed positions, self-attention by the Triton kernel and by
    SDPA: the same tokens, and how far the log-probabilities moved."""
    batch = 8
    with torch.inference_mode():
        table = torch.zeros(batch, INPUT_COLUMNS, dtype=torch.long)
        table[:, POSITION] = torch.tensor([0, 1, 5, 17, 40, 63, 90, 127])
        step.inputs[:batch].copy_(table)
        outputs = []
        for triton_self_attention in (True, False):
            step.triton_self_attention = triton_self_attention
            outputs.append(step._compute(batch, 128).float())
    step.triton_self_attention = True
    kernel, sdpa = outputs
    report[f"{name}_self_attention_same_tokens"] = float(
        bool((kernel[:, OUT_TOKEN] == sdpa[:, OUT_TOKEN]).all())
    )
    report[f"{name}_self_attention_logprob_max_diff"] = (
        (kernel[:, OUT_LOGPROB] - sdpa[:, OUT_LOGPROB]).abs().max().item()
    )


SELF_TUNINGS = [
    Tuning(block, warps, programs)
    for block in (32, 64, 128)
    for warps in (1, 2, 4)
    for programs in (4, 8, 16, 32)
]


def self_attention_kernels(
    batch: int, processors: int, report: dict[str, float], context: int = 128
) -> Tuning:
    """The kernel as the step's self-attention (32 layers, bfloat16 cache, each row's newest
    key and value appended) at rows of lengths 1..101 (a forced decode of 100 tokens), over
    SELF_TUNINGS; returns the fastest."""
    dims = LARGE_V3_DIMENSIONS
    layers, heads = dims.n_text_layer, dims.n_text_head
    head_dim = dims.n_text_state // heads
    generator = torch.Generator("cuda").manual_seed(batch)
    shape = (layers, batch, heads, dims.n_text_ctx, head_dim)
    keys = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    values = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator)
    fused = torch.randn(batch, 3 * heads * head_dim, device="cuda", dtype=torch.bfloat16)
    query, key, value = (part.view(batch, heads, head_dim) for part in fused.chunk(3, dim=-1))
    lengths = torch.randint(1, 102, (batch,), device="cuda", generator=generator)
    best, chosen, default_ms = float("inf"), Tuning(), 0.0
    for tuning in [Tuning(), *SELF_TUNINGS]:
        name = tuning_name(tuning)

        def attend(tuning: Tuning = tuning) -> None:
            for layer in range(layers):
                decode_attention.attend(
                    query,
                    keys[layer, :, :, :context],
                    values[layer, :, :, :context],
                    None,
                    processors,
                    tuning,
                    lengths,
                    (key, value),
                )

        ms = graph_ms(attend)
        report[f"self_b{batch}_ms_{name}"] = ms
        default_ms = default_ms or ms
        if ms < best:
            best, chosen = ms, tuning
    print(
        f"self-attention batch {batch}: default {default_ms:.3f} ms, best {best:.3f} ms with "
        f"{chosen}",
        flush=True,
    )
    return chosen


def steps(
    name: str,
    dims: WhisperDimensions,
    tokenizer: ResolvedModel,
    batches: list[int],
    report: dict[str, float],
) -> None:
    """The captured step: cross keys and values in bfloat16 ("float8_off"), float8 with
    self-attention by the kernel too (as served, "float8_on"), float8 with SDPA's
    self-attention ("float8_on_sdpa_self")."""
    for mode in ("off", "on"):
        engine = BatchedWhisperEngine.random(
            dims,
            tokenizer,
            "cuda:0",
            "bfloat16",
            BatchingConfig(
                max_sequences=max(batches),
                memory_gib=40,
                forced_length=100,
                float8_cross_attention=mode,
            ),
        )
        step = engine.loops[0].step_runner
        time_steps(step, name, f"float8_{mode}", batches, report)
        if mode == "on":
            compare_self_attention(step, name, report)
            step.triton_self_attention = False
            step._graphs.clear()
            step.capture()
            time_steps(step, name, "float8_on_sdpa_self", batches, report)
        engine.close()
        del engine, step
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizer", required=True, help="a multilingual model folder (base)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--default-tuning", action="store_true", help="time the default tuning only (no sweep)"
    )
    parser.add_argument(
        "--kernels-only", action="store_true", help="the kernels' sweep only (no steps)"
    )
    parser.add_argument(
        "--self-only", action="store_true", help="only sweep the self-attention's tuning"
    )
    args = parser.parse_args()
    processors = torch.cuda.get_device_properties(0).multi_processor_count
    if args.self_only:
        for batch in args.batches:
            self_attention_kernels(batch, processors, {})
        return
    report: dict[str, float] = {"copy_tb_s": copy_tb_per_s()}
    print(f"device copy: {report['copy_tb_s']:.2f} TB/s (read + written)", flush=True)
    chosen: dict[int, Tuning] = {}
    for batch in args.batches:
        tunings = [Tuning()] if args.default_tuning else TUNINGS
        kernels(batch, LARGE_V3_DIMENSIONS.n_text_layer, processors, report, chosen, tunings)
        torch.cuda.empty_cache()
    print(f"best tuning per batch: {chosen}; the default, which the steps use: {Tuning()}")
    if args.kernels_only:
        print_report(report, args.json)
        return
    tokenizer = ResolvedModel("tokenizer", Path(args.tokenizer), True)
    step_batches = [b for b in args.batches if b <= 64]
    steps("large_v3", LARGE_V3_DIMENSIONS, tokenizer, step_batches, report)
    steps("tiny", TINY, tokenizer, step_batches, report)
    print_report(report, args.json)


def print_report(report: dict[str, float], path: Path | None) -> None:
    for key, value in report.items():
        print(f"{key} = {value:.4f}")
    if path:
        path.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
