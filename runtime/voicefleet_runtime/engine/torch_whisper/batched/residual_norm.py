"""The decode step's residual add and the layer norm after it, as one Triton kernel.

Every residual add in the decoder feeds a layer norm (the next block's, or the decoder's last),
and at a decode batch each is a kernel of a few microseconds that mostly waits for memory:
97 layer norms (4.0 us each) and 97 adds (1.3 us) were 0.5 ms of the large-v3 step at batch
64 (bench/results/batching-notes.md, run 17). One kernel reads the residual and the update
once and writes the sum and its normalised form.

Imported only where it runs: on a CUDA device, or on the CPU under TRITON_INTERPRET=1 (the
tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import nn


@triton.jit
def _add_layer_norm(
    residual_ptr,
    update_ptr,
    weight_ptr,
    bias_ptr,
    sum_ptr,
    normed_ptr,
    width,
    residual_row_stride,
    update_row_stride,
    eps,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    columns = tl.arange(0, BLOCK)
    inside = columns < width
    residual = tl.load(residual_ptr + row * residual_row_stride + columns, mask=inside, other=0.0)
    update = tl.load(update_ptr + row * update_row_stride + columns, mask=inside, other=0.0)
    # Rounded to the model's dtype first, as the add would store it and the norm would read it.
    total = (residual.to(tl.float32) + update.to(tl.float32)).to(sum_ptr.dtype.element_ty)
    tl.store(sum_ptr + row * width + columns, total, mask=inside)
    x = total.to(tl.float32)
    mean = tl.sum(x, axis=0) / width
    centred = tl.where(inside, x - mean, 0.0)
    variance = tl.sum(centred * centred, axis=0) / width
    weight = tl.load(weight_ptr + columns, mask=inside, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + columns, mask=inside, other=0.0).to(tl.float32)
    normed = centred * tl.math.rsqrt(variance + eps) * weight + bias
    normed_at = normed_ptr + row * width + columns
    tl.store(normed_at, normed.to(normed_ptr.dtype.element_ty), mask=inside)


def add_layer_norm(
    residual: torch.Tensor, update: torch.Tensor, norm: nn.LayerNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual + update, norm(residual + update)) for (rows, width) inputs whose rows are
    contiguous (any row stride)."""
    rows, width = residual.shape
    if residual.stride(1) != 1 or update.stride(1) != 1 or update.shape != residual.shape:
        raise ValueError("residual and update need the same shape and contiguous rows")
    total = torch.empty(rows, width, device=residual.device, dtype=residual.dtype)
    normed = torch.empty_like(total)
    _add_layer_norm[(rows,)](
        residual,
        update,
        norm.weight,
        norm.bias,
        total,
        normed,
        width,
        residual.stride(0),
        update.stride(0),
        norm.eps,
        BLOCK=triton.next_power_of_2(width),
    )
    return total, normed
