"""Where a batched decoder step and a batched encoder pass spend their GPU time (CUDA events).

Large-v3 shape, random weights, one GPU. Times, at the given batch: the captured decode step
replayed; its parts alone (32 layers of cross-attention by each SDPA backend and by plain
matmuls, self-attention with its mask, the linear layers, the token rules); and the encoder
at several batch sizes, as TFLOP/s against a bf16 matmul measured in the same run.

    python bench/batching_step_profile.py --tokenizer DIR [--batch 64] [--precision bfloat16]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
from gpu_batching_measure import gpu_ms
from torch.nn import functional
from torch.nn.attention import SDPBackend, sdpa_kernel

from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper.batched import (
    BatchedWhisperEngine,
    BatchingConfig,
    step_tables,
)
from voicefleet_runtime.engine.torch_whisper.batched.step import DecodeStep
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import (
    COUNT,
    INPUT_COLUMNS,
    LAST,
    LAST_TIME,
    OUT_LOGPROB,
    OUT_TOKEN,
    PENULTIMATE,
    POSITION,
    TIMESTAMPS,
)
from voicefleet_runtime.engine.torch_whisper.model import LARGE_V3_DIMENSIONS, DecoderLayer, Whisper


def print_step_kernels(step: DecodeStep, batch: int, context: int, count: int) -> None:
    """The kernels one eager step launches, costliest first: the same dispatch as at capture,
    so this shows which SDPA kernel the captured cross-attention really runs."""
    step._compute(batch, context)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        step._compute(batch, context)
        torch.cuda.synchronize()
    table = profile.key_averages().table(sort_by="device_time_total", row_limit=count)
    print(f"kernels of one eager step (batch {batch}, context {context}):\n{table}")


def compare_fused_norms(
    step: DecodeStep, table: torch.Tensor, batch: int, report: dict[str, float]
) -> None:
    """One eager step with the residual adds and layer norms fused (residual_norm.py, as
    served) and in torch: the share of rows choosing the same token, the largest change in
    a chosen token's log-probability."""
    fused = step.add_layer_norm
    outputs = []
    for kernel in (fused, None):
        step.add_layer_norm = kernel
        step.inputs[:batch].copy_(table)  # a step advances its inputs: start both alike
        outputs.append(step._compute(batch, 128).float())
    step.add_layer_norm = fused
    one, other = outputs
    same = (one[:, OUT_TOKEN] == other[:, OUT_TOKEN]).float().mean()
    report["fused_norms_same_tokens"] = same.item()
    report["fused_norms_logprob_max_diff"] = (
        (one[:, OUT_LOGPROB] - other[:, OUT_LOGPROB]).abs().max().item()
    )


def compare_rules_kernel(step: DecodeStep, batch: int, report: dict[str, float]) -> None:
    """The rules and the choice by token_choice.py (as served) and by its torch twin, on
    the same random logits and rows in mixed states (timestamps on for half, sampling at 0.8
    for a quarter): the share of rows choosing the same token and writing the same next
    inputs, the largest change in a log-probability."""
    rules = step.rules
    vocabulary = rules.columns.numel()
    begin = rules.vocabulary.timestamp_begin
    generator = torch.Generator("cuda").manual_seed(3)
    logits = torch.randn(batch, vocabulary, device="cuda", generator=generator) * 4
    logits[batch // 2 :, begin:] += 6  # timestamps likelier: some rows emit only them
    inputs = torch.zeros(batch, INPUT_COLUMNS, dtype=torch.long, device="cuda")
    rows = torch.arange(batch, device="cuda")
    inputs[:, COUNT] = rows % 4
    inputs[:, LAST] = torch.where(rows % 3 == 0, begin + 40, 400)
    inputs[:, PENULTIMATE] = torch.where(rows % 5 == 0, begin + 35, 500)
    inputs[:, LAST_TIME] = torch.where(rows % 3 == 0, begin + 40, -1)
    inputs[:, TIMESTAMPS] = rows % 2
    temperatures = torch.where(rows % 4 == 3, 0.8, 0.0).float()
    noise = torch.empty(batch, vocabulary, device="cuda").exponential_(generator=generator)
    kernel_inputs, torch_inputs = inputs.clone(), inputs.clone()
    logits = logits.to(step.logits_weight.dtype)
    kernel = step.choose_tokens(logits, kernel_inputs, temperatures, noise, rules)
    reference = step_tables.choose_tokens(logits, torch_inputs, temperatures, noise, rules)
    same = (kernel[:, OUT_TOKEN] == reference[:, OUT_TOKEN]).float().mean()
    report["rules_kernel_same_tokens"] = same.item()
    report["rules_kernel_same_inputs"] = (
        (kernel_inputs == torch_inputs).all(1).float().mean().item()
    )
    report["rules_kernel_logprob_max_diff"] = (
        (kernel[:, OUT_LOGPROB] - reference[:, OUT_LOGPROB]).abs().max().item()
    )
    tokens = reference[:, OUT_TOKEN]
    report["rules_kernel_rows_choosing_timestamps"] = (tokens >= begin).float().sum().item()


def time_logits(model: Whisper, batch: int, report: dict[str, float]) -> None:
    """The step's last product (hidden states by the token embeddings), with the vocabulary as
    is and padded with zero rows: cuBLAS picks its kernel by shape."""
    weight = model.decoder.embeddings.weight
    vocab, width = weight.shape
    normed = torch.randn(batch, width, device=weight.device, dtype=weight.dtype)
    for multiple in (1, 64, 128, 256):
        padded = torch.zeros(-(-vocab // multiple) * multiple, width, dtype=weight.dtype)
        padded = padded.to(weight.device)
        padded[:vocab] = weight

        def matmul(padded: torch.Tensor = padded) -> None:
            normed @ padded.T

        def linear(padded: torch.Tensor = padded) -> None:
            functional.linear(normed, padded)

        report[f"logits_ms_vocab{padded.shape[0]}"] = gpu_ms(matmul)
        report[f"logits_linear_ms_vocab{padded.shape[0]}"] = gpu_ms(linear)


def encoder_flops(windows: int) -> float:
    d, layers, positions, mels = 1280, 32, 1500, 128
    per_layer = 2 * positions * (4 * d * d + 8 * d * d) + 2 * 2 * positions * positions * d
    convs = 2 * 3000 * mels * d * 3 + 2 * positions * d * d * 3
    return float(windows * (layers * per_layer + convs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--compile", action="store_true", help="also time a compiled encoder")
    parser.add_argument(
        "--float8",
        action="store_true",
        help="float8 cross keys and values (the Triton kernel): the step, its kernels, the "
        "linears and the rules only",
    )
    parser.add_argument(
        "--kernels", type=int, default=15, help="list this many of the step's costliest kernels"
    )
    args = parser.parse_args()
    batch = args.batch
    tokenizer = ResolvedModel("tokenizer", Path(args.tokenizer), True)
    engine = BatchedWhisperEngine.random(
        LARGE_V3_DIMENSIONS,
        tokenizer,
        "cuda:0",
        args.precision,
        BatchingConfig(
            max_sequences=batch,
            memory_gib=40,
            forced_length=100,
            float8_cross_attention="on" if args.float8 else "off",
        ),
    )
    loop = engine.loops[0]
    step = loop.step_runner
    model = loop.model
    dtype = loop.dtype
    report: dict[str, float] = {}
    peak_a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def matmul() -> None:
        peak_a @ peak_a

    report["bf16_matmul_tflops"] = 2 * 8192**3 / gpu_ms(matmul, 10) / 1e9

    with torch.inference_mode():
        table = torch.zeros(batch, INPUT_COLUMNS, dtype=torch.long)
        table[:, POSITION] = 100
        step.inputs[:batch].copy_(table)
        for context in step.context_buckets:
            graph, _ = step._graphs[(batch, context)]
            report[f"step_graph_ms_ctx{context}"] = gpu_ms(graph.replay)
        print_step_kernels(step, batch, step.context_buckets[1], args.kernels)
        layers: list[DecoderLayer] = list(model.decoder.layers)  # type: ignore[arg-type]
        cache = loop.cache
        x = torch.randn(batch, 1, 1280, device="cuda", dtype=dtype)

        def linears() -> None:
            for layer in layers:
                layer.self_attention.linear_0(x)
                layer.self_attention.linear_1(x)
                layer.attention.linear_0(x)
                layer.attention.linear_2(x)
                layer.ffn(x)

        report["linears_32_layers_ms"] = gpu_ms(linears)
        raw = torch.randn(batch, LARGE_V3_DIMENSIONS.n_vocab, device="cuda")
        temperatures, noise = step.temperatures[:batch], step.noise[:batch]
        report["rules_and_choice_ms"] = gpu_ms(
            lambda: step.rules.choose(raw, step.inputs[:batch], temperatures, noise)
        )
        if step.choose_tokens is not step_tables.choose_tokens:  # the kernel runs
            choose, logits, inputs = step.choose_tokens, raw.to(dtype), step.inputs[:batch].clone()
            report["rules_and_choice_kernel_ms"] = gpu_ms(
                lambda: choose(logits, inputs, temperatures, noise, step.rules)
            )
            compare_rules_kernel(step, batch, report)
        time_logits(model, batch, report)
        if args.float8:
            compare_fused_norms(step, table, batch, report)
            print_report(report)
            return  # the rest times the model dtype's alternatives
        heads, head_dim = step.heads, step.head_dim
        query = torch.randn(batch, heads, 1, head_dim, device="cuda", dtype=dtype)
        keys, values = cache.cross_keys[:, :batch], cache.cross_values[:, :batch]

        def cross(backend: SDPBackend | None) -> Callable[[], object]:
            def run() -> None:
                for layer in range(len(layers)):
                    if backend is None:
                        scores = (query @ keys[layer].transpose(-1, -2)) * head_dim**-0.5
                        scores.softmax(dim=-1) @ values[layer]
                    else:
                        with sdpa_kernel(backend):
                            functional.scaled_dot_product_attention(
                                query, keys[layer], values[layer]
                            )

            return run

        for name, backend in (
            ("flash", SDPBackend.FLASH_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("math", SDPBackend.MATH),
            ("matmul", None),
        ):
            try:
                report[f"cross_32_layers_ms_{name}"] = gpu_ms(cross(backend))
            except RuntimeError as error:
                report[f"cross_32_layers_ms_{name}"] = -1.0
                print(name, "failed:", str(error)[:120])
        cross_bytes = 2 * keys[:, :batch].numel() * keys.element_size()
        report["cross_bytes_gb"] = cross_bytes / 1e9
        for context in (128, 448):
            mask = torch.ones(batch, 1, 1, context, dtype=torch.bool, device="cuda")
            self_keys = cache.self_keys[:, :batch, :, :context]
            self_values = cache.self_values[:, :batch, :, :context]

            def self_attention(
                mask: torch.Tensor = mask,
                k: torch.Tensor = self_keys,
                v: torch.Tensor = self_values,
            ) -> None:
                for layer in range(len(layers)):
                    functional.scaled_dot_product_attention(
                        query, k[layer], v[layer], attn_mask=mask
                    )

            report[f"self_32_layers_ms_ctx{context}"] = gpu_ms(self_attention)
        for windows in (16, 32, 64):
            mel = torch.randn(windows, 128, 3000, device="cuda", dtype=dtype)

            def encode(mel: torch.Tensor = mel) -> None:
                model.encoder(mel)

            ms = gpu_ms(encode, 3)
            report[f"encoder_ms_per_window_b{windows}"] = ms / windows
            report[f"encoder_tflops_b{windows}"] = encoder_flops(windows) / ms / 1e9
            audio = model.encoder(mel)

            def project(audio: torch.Tensor = audio) -> None:
                for layer in layers:
                    layer.attention.project_audio(audio)

            report[f"cross_kv_projection_ms_per_window_b{windows}"] = gpu_ms(project, 3) / windows
        # The encoder's self-attention by each SDPA backend (1500 positions, 20 heads of 64).
        mel = torch.randn(64, 128, 3000, device="cuda", dtype=dtype)
        for name, backend in (
            ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("flash", SDPBackend.FLASH_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ):

            def encode_with(backend: SDPBackend = backend) -> None:
                with sdpa_kernel(backend):
                    model.encoder(mel)

            try:
                seconds_ms = gpu_ms(encode_with, 3)
                report[f"encoder_tflops_b64_{name}"] = encoder_flops(64) / seconds_ms / 1e9
            except RuntimeError as error:
                report[f"encoder_tflops_b64_{name}"] = -1.0
                print(name, "failed:", str(error)[:120])
        if args.compile:
            import time

            compiled = torch.compile(model.encoder)
            mel = torch.randn(32, 128, 3000, device="cuda", dtype=dtype)
            started = time.perf_counter()
            compiled(mel)
            report["compile_s"] = time.perf_counter() - started

            def encode_compiled(mel: torch.Tensor = mel) -> None:
                compiled(mel)

            ms = gpu_ms(encode_compiled, 3)
            report["compiled_encoder_tflops_b32"] = encoder_flops(32) / ms / 1e9
    print_report(report)
    engine.close()


def print_report(report: dict[str, float]) -> None:
    print(json.dumps({key: round(value, 3) for key, value in report.items()}, indent=1))


if __name__ == "__main__":
    main()
