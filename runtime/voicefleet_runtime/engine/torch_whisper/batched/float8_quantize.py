"""cache.quantize_float8 as one Triton kernel, for the cross-attention keys and values a GPU
stores when it admits windows.

In torch the quantisation is six passes over each layer's keys and values (abs, peak, to
float32, divide, clamp, to float8), with float32 temporaries twice the size of the input, and
a seventh to copy the result into the cache: about 0.15 s per 64 large-v3 windows, which
cancelled float8's shorter decode step (bench/results/batching-notes.md, run 17). This kernel
reads the projection's output twice (the peak, then the values) and writes the cache slot's
float8 bytes and scale directly: no temporaries, no copy, the same numbers, 6.4x faster on an
H200 (bench/float8_admission.py, run 18).

Imported only where it runs: on a CUDA device, or on the CPU under TRITON_INTERPRET=1 (the
tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from voicefleet_runtime.engine.torch_whisper.batched.cache import FLOAT8_MAX

BLOCK = 128
"""Positions per loop iteration: 128 x 64 values a program holds at once."""


@triton.jit
def _round_to_e4m3(x):
    """x (float32, |x| <= 448) rounded to the nearest e4m3 value, ties to even, so that the
    cast after it is exact. The cast would round by itself on a GPU, but Triton's interpreter
    (the tests) rounds ties up and drops the carry into the next power of two."""
    bits = x.to(tl.int32, bitcast=True)
    exponent = ((bits >> 23) & 0xFF) - 127
    # e4m3 keeps 3 mantissa bits; below 2^-6 its steps stay 2^-9 (subnormals).
    step_exponent = tl.maximum(exponent, -6) - 3
    step = ((step_exponent + 127) << 23).to(tl.float32, bitcast=True)
    # Adding 1.5 * 2^23 steps pushes the fraction out of float32's mantissa with its own
    # round-to-nearest-even; subtracting it back leaves x on the step grid.
    magic = step * 12582912.0
    rounded = (tl.abs(x) + magic) - magic
    return tl.where(bits < 0, -rounded, rounded)  # the sign kept, -0 included, as a cast does


@triton.jit
def _quantize_heads(
    source_ptr,
    target_ptr,
    scales_ptr,
    positions,
    source_window_stride,
    source_head_stride,
    source_position_stride,
    target_window_stride,
    target_head_stride,
    scales_window_stride,
    scales_head_stride,
    largest,
    HEAD_DIM: tl.constexpr,
    BLOCK: tl.constexpr,
):
    window = tl.program_id(0)
    head = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    source = source_ptr + window * source_window_stride + head * source_head_stride
    peak = tl.zeros([BLOCK, HEAD_DIM], dtype=tl.float32)
    for start in range(0, positions, BLOCK):
        at = start + tl.arange(0, BLOCK)
        offsets = at[:, None] * source_position_stride + dims[None, :]
        x = tl.load(source + offsets, mask=at[:, None] < positions, other=0.0)
        peak = tl.maximum(peak, tl.abs(x.to(tl.float32)))
    # As quantize_float8: peak / largest, never 0 (a silent head stays 0, not NaN).
    scale = tl.maximum(tl.max(tl.max(peak, axis=1), axis=0) / largest, 1.1754943508222875e-38)
    tl.store(scales_ptr + window * scales_window_stride + head * scales_head_stride, scale)
    target = target_ptr + window * target_window_stride + head * target_head_stride
    for start in range(0, positions, BLOCK):
        at = start + tl.arange(0, BLOCK)
        inside = at[:, None] < positions
        x = tl.load(
            source + at[:, None] * source_position_stride + dims[None, :], mask=inside, other=0.0
        )
        scaled = tl.math.div_rn(x.to(tl.float32), scale)
        scaled = _round_to_e4m3(tl.minimum(tl.maximum(scaled, -largest), largest))
        tl.store(
            target + at[:, None] * HEAD_DIM + dims[None, :],
            scaled.to(target_ptr.dtype.element_ty),
            mask=inside,
        )


def quantize_into(source: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> None:
    """Write `source` (windows, heads, positions, head_dim; each position's head_dim values
    contiguous, any other strides) into `target` (the same shape, float8, contiguous per
    head) with one scale per (window, head) into `scales` (windows, heads, float32)."""
    windows, heads, positions, head_dim = source.shape
    if source.stride(3) != 1:
        raise ValueError("each position's head_dim values must be contiguous")
    if target.shape != source.shape or target.stride()[2:] != (head_dim, 1):
        raise ValueError("the target must hold each head's positions contiguously")
    _quantize_heads[(windows, heads)](
        source,
        target,
        scales,
        positions,
        source.stride(0),
        source.stride(1),
        source.stride(2),
        target.stride(0),
        target.stride(1),
        scales.stride(0),
        scales.stride(1),
        FLOAT8_MAX,
        HEAD_DIM=head_dim,
        BLOCK=BLOCK,
    )
