"""Admitting windows into a float8 cache: torch's quantisation against the Triton kernel.

Large-v3 shape: the cross-attention keys and values of `--windows` windows, for all 32
layers, from a real projection layout (one linear's output, heads interleaved), written into
a slot cache as SlotCache.write_cross does. Prints the GPU time of each way (CUDA events),
their ratio, and how many stored values differ (0 expected: same numbers).

    python bench/float8_admission.py [--windows 16]
"""

from __future__ import annotations

import argparse

import torch
from gpu_batching_measure import gpu_ms

from voicefleet_runtime.engine.torch_whisper.batched.cache import FLOAT8, quantize_float8
from voicefleet_runtime.engine.torch_whisper.batched.float8_quantize import quantize_into
from voicefleet_runtime.engine.torch_whisper.model import LARGE_V3_DIMENSIONS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=16)
    args = parser.parse_args()
    dims = LARGE_V3_DIMENSIONS
    windows, heads, positions = args.windows, dims.n_text_head, dims.n_audio_ctx
    layers, head_dim = dims.n_text_layer, dims.n_text_state // dims.n_text_head
    generator = torch.Generator(device="cuda").manual_seed(0)
    projected = torch.randn(
        windows,
        positions,
        heads * head_dim,
        device="cuda",
        dtype=torch.bfloat16,
        generator=generator,
    )
    source = projected.view(windows, positions, heads, head_dim).transpose(1, 2)
    cache = torch.zeros(layers, windows, heads, positions, head_dim, device="cuda", dtype=FLOAT8)
    scales = torch.zeros(layers, windows, heads, device="cuda")

    def in_torch() -> None:
        for layer in range(layers):
            stored, scale = quantize_float8(source)
            cache[layer].copy_(stored)
            scales[layer].copy_(scale)

    def in_kernel() -> None:
        for layer in range(layers):
            quantize_into(source, cache[layer], scales[layer])

    with torch.inference_mode():
        torch_ms = gpu_ms(in_torch, 5)
        expected = cache[0].float().clone()
        kernel_ms = gpu_ms(in_kernel, 5)
        differ = int((cache[0].float() != expected).sum())
    input_bytes = 2 * windows * layers * heads * positions * head_dim  # bf16 bytes read once
    print(f"windows {windows}, {layers} layers, keys or values (one of the two):")
    print(f"  torch (six passes and a copy): {torch_ms:.2f} ms")
    print(f"  kernel: {kernel_ms:.2f} ms ({input_bytes / kernel_ms / 1e6:.0f} GB/s of input)")
    print(f"  torch / kernel: {torch_ms / kernel_ms:.1f}x; values that differ: {differ}")


if __name__ == "__main__":
    main()
