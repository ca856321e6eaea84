"""Attention for one query per sequence (the decode step), in Triton: float8 or not.

At batch 64 on the large-v3 shape the decode step reads 15.7 GB of bfloat16 cross-attention
keys and values, and cuDNN's kernel already reads them near the HBM peak (3.7 ms of the
7.4 ms step: bench/results/batching-notes.md, run 9). Halving the bytes is the only way
down, and SDPA takes no float8 inputs, so this kernel loads the float8 rows, scales them back
in registers and runs an online softmax (flash decoding). Each (row, head) may be split
along the audio positions into `splits` programs, so that a small batch still fills the GPU;
a second kernel merges the splits' partial sums. On an H200 at batch 64 it reads the float8
bytes at 3.1 TB/s (a device copy: 4.2), 1.43x faster than cuDNN on bfloat16
(bench/results/float8_cross_attention-h200.txt).

The same kernel serves the self-attention cache (the model's dtype, no scales): given each
row's length it reads only the positions the row has filled, where SDPA needs a mask over the
whole context bucket, and it stores each row's newest key and value itself as it attends to
them (so the step writes no cache of its own).

Imported only where it runs: on a CUDA device, or on the CPU under TRITON_INTERPRET=1 (the
tests).
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class Tuning:
    """The kernel's launch choices. The defaults won or came within 6% of the best at every
    batch from 1 to 128 on an H200 (bench/results/float8_cross_attention-h200.txt)."""

    block: int = 256
    """Positions per loop iteration of one program (fewer when the keys are shorter)."""
    warps: int = 4
    programs_per_processor: int = 4
    """Splits are added until (rows x heads x splits) reaches this many programs per SM."""
    stages: int = 3
    """Triton's software pipelining depth for the loop over positions (its default)."""


TUNING = Tuning()
SELF_TUNING = Tuning(block=32, warps=1, programs_per_processor=8)
"""For the self-attention cache (at most a few hundred positions, most rows shorter): small
blocks and more programs. 32 large-v3 layers at batch 64, rows of 1 to 101 positions: 0.31 ms
against 0.53 with TUNING (bench/float8_cross_attention.py --self-only; batching-notes.md,
run 19)."""


@triton.jit
def _partial_attention(
    query_ptr,
    keys_ptr,
    values_ptr,
    scales_ptr,
    lengths_ptr,
    new_keys_ptr,
    new_values_ptr,
    partial_ptr,
    out_ptr,
    heads,
    positions,
    positions_per_split,
    query_row_stride,
    new_row_stride,
    kv_row_stride,
    kv_head_stride,
    scales_row_stride,
    out_row_stride,
    softmax_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK: tl.constexpr,
    SPLITS: tl.constexpr,
    SCALED: tl.constexpr,
    LENGTHS: tl.constexpr,
    APPEND: tl.constexpr,
):
    row_head = tl.program_id(0)
    split = tl.program_id(1)
    row = row_head // heads
    head = row_head % heads
    dims = tl.arange(0, HEAD_DIM)
    scale_at = scales_ptr + row * scales_row_stride + head * 2
    if SCALED:
        key_scale = tl.load(scale_at)
    else:
        key_scale = 1.0
    if LENGTHS:
        # Never past the keys given (the context bucket), whatever a row's length says.
        length = tl.minimum(tl.load(lengths_ptr + row).to(tl.int32), positions)
    else:
        length = positions
    query = tl.load(query_ptr + row * query_row_stride + head * HEAD_DIM + dims).to(tl.float32)
    # exp2 instead of exp: fold log2(e) and the key's dequantisation into the query once.
    query = query * (key_scale * softmax_scale * 1.4426950408889634)
    head_base = row * kv_row_stride + head * kv_head_stride
    first = split * positions_per_split
    last = tl.minimum(first + positions_per_split, length)
    if APPEND:
        # The row's newest key and value (at length - 1) come from the projection, not the
        # cache: the split that holds that position writes them there and adds them last.
        newest = length - 1
        owner = (first <= newest) & (newest < first + positions_per_split)
        last = tl.minimum(last, newest)
    # The online softmax runs per lane (one running max and total per position in the
    # block), so the loop never reduces across threads; the lanes merge once, at the end.
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK], dtype=tl.float32)
    acc = tl.zeros([BLOCK, HEAD_DIM], dtype=tl.float32)
    for start in range(first, last, BLOCK):
        at = start + tl.arange(0, BLOCK)
        inside = at < last
        offsets = head_base + at[:, None] * HEAD_DIM + dims[None, :]
        keys = tl.load(keys_ptr + offsets, mask=inside[:, None], other=0.0).to(tl.float32)
        values = tl.load(values_ptr + offsets, mask=inside[:, None], other=0.0).to(tl.float32)
        scores = tl.where(inside, tl.sum(keys * query[None, :], axis=1), float("-inf"))
        new_best = tl.maximum(best, scores)
        # A lane that has seen nothing yet keeps -inf: rescale it by 0, not by NaN.
        seen = new_best > float("-inf")
        rescale = tl.where(seen, tl.exp2(best - new_best), 0.0)
        weights = tl.where(seen, tl.exp2(scores - new_best), 0.0)
        acc = acc * rescale[:, None] + weights[:, None] * values
        total = total * rescale + weights
        best = new_best
    overall = tl.max(best, axis=0)
    lane_weight = tl.where(best > float("-inf"), tl.exp2(best - overall), 0.0)
    out_sum = tl.sum(acc * lane_weight[:, None], axis=0)
    total_sum = tl.sum(total * lane_weight, axis=0)
    if APPEND:
        if owner:
            new_at = row * new_row_stride + head * HEAD_DIM + dims
            new_key = tl.load(new_keys_ptr + new_at)
            new_value = tl.load(new_values_ptr + new_at)
            cache_at = head_base + newest * HEAD_DIM + dims
            tl.store(keys_ptr + cache_at, new_key)
            tl.store(values_ptr + cache_at, new_value)
            score = tl.sum(new_key.to(tl.float32) * query, axis=0)
            merged = tl.maximum(overall, score)
            rescale = tl.where(overall > float("-inf"), tl.exp2(overall - merged), 0.0)
            weight = tl.exp2(score - merged)
            out_sum = out_sum * rescale + weight * new_value.to(tl.float32)
            total_sum = total_sum * rescale + weight
            overall = merged
    if SPLITS == 1:
        if SCALED:
            out = out_sum * (tl.load(scale_at + 1) / total_sum)
        else:
            out = out_sum / total_sum
        out_at = out_ptr + row * out_row_stride + head * HEAD_DIM + dims
        tl.store(out_at, out.to(out_ptr.dtype.element_ty))
    else:
        # Per split: HEAD_DIM partial sums, then the running max and the softmax total.
        partial_at = partial_ptr + (row_head * SPLITS + split) * (HEAD_DIM + 2)
        tl.store(partial_at + dims, out_sum)
        tl.store(partial_at + HEAD_DIM, overall)
        tl.store(partial_at + HEAD_DIM + 1, total_sum)


@triton.jit
def _merge_splits(
    partial_ptr,
    scales_ptr,
    out_ptr,
    heads,
    scales_row_stride,
    out_row_stride,
    HEAD_DIM: tl.constexpr,
    SPLITS: tl.constexpr,
    SPLITS_POW2: tl.constexpr,
    SCALED: tl.constexpr,
):
    row_head = tl.program_id(0)
    row = row_head // heads
    head = row_head % heads
    dims = tl.arange(0, HEAD_DIM)
    splits = tl.arange(0, SPLITS_POW2)
    used = splits < SPLITS
    base = partial_ptr + row_head * SPLITS * (HEAD_DIM + 2) + splits * (HEAD_DIM + 2)
    best = tl.load(base + HEAD_DIM, mask=used, other=float("-inf"))
    total = tl.load(base + HEAD_DIM + 1, mask=used, other=0.0)
    acc = tl.load(base[:, None] + dims[None, :], mask=used[:, None], other=0.0)
    overall = tl.max(best, axis=0)
    weight = tl.where(used & (best > float("-inf")), tl.exp2(best - overall), 0.0)
    out = tl.sum(acc * weight[:, None], axis=0) / tl.sum(total * weight, axis=0)
    if SCALED:
        out = out * tl.load(scales_ptr + row * scales_row_stride + head * 2 + 1)
    tl.store(
        out_ptr + row * out_row_stride + head * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty)
    )


def splits_for(
    rows: int, heads: int, positions: int, processors: int, block: int, programs: int
) -> int:
    """Splits per (row, head): `programs` per SM to keep memory busy, at least a block each."""
    wanted = math.ceil(processors * programs / (rows * heads))
    return max(1, min(wanted, math.ceil(positions / block)))


def attend(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    scales: torch.Tensor | None,
    processors: int,
    tuning: Tuning | None = None,
    lengths: torch.Tensor | None = None,
    appended: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for one query per (row, head).

    query (rows, heads, head_dim) in the model's dtype, each row's heads contiguous (a slice of
    the fused query-key-value projection will do); keys and values (rows,
    heads, positions, head_dim), each position's head_dim values contiguous: float8 with
    scales (rows, heads, 2) float32 (the keys' and the values' dequantisation factors), or
    the model's dtype with scales None. `lengths` (rows,), if given: row r attends to its first
    lengths[r] positions only (the self-attention cache, filled up to each row's position).
    `appended` (new keys, new values), each laid out as the query, with `lengths`: each row's
    newest key and value, written into the cache at lengths[r] - 1 as the kernel attends to
    them (the step's self-attention: no separate write of the cache).
    Returns (rows, heads, head_dim) in the query's dtype. `tuning` defaults to TUNING
    (bench/float8_cross_attention.py sweeps the choices).
    """
    block, warps, programs, stages = astuple(tuning or TUNING)
    rows, heads, positions, head_dim = keys.shape
    if keys.stride(3) != 1 or keys.stride(2) != head_dim or values.stride() != keys.stride():
        raise ValueError("keys and values need contiguous positions of the same layout")
    if query.stride(2) != 1 or query.stride(1) != head_dim:
        raise ValueError("each row of the query needs its heads contiguous")
    if appended is not None and (
        lengths is None or any(t.stride() != appended[0].stride() for t in appended)
    ):
        raise ValueError("appended keys and values need lengths and one layout")
    if appended is not None and appended[0].stride()[1:] != (head_dim, 1):
        raise ValueError("each row of the appended keys needs its heads contiguous")
    block = min(block, triton.next_power_of_2(positions))
    out = torch.empty(rows, heads, head_dim, device=query.device, dtype=query.dtype)
    splits = splits_for(rows, heads, positions, processors, block, programs)
    per_split = math.ceil(math.ceil(positions / splits) / block) * block
    splits = math.ceil(positions / per_split)
    partial = torch.empty(
        rows * heads * splits * (head_dim + 2) if splits > 1 else 1,
        device=query.device,
        dtype=torch.float32,
    )
    # Unused pointers still need a tensor: the query stands in for them.
    scale_table = query if scales is None else scales
    _partial_attention[(rows * heads, splits)](
        query,
        keys,
        values,
        scale_table,
        query if lengths is None else lengths,
        query if appended is None else appended[0],
        query if appended is None else appended[1],
        partial,
        out,
        heads,
        positions,
        per_split,
        query.stride(0),
        query.stride(0) if appended is None else appended[0].stride(0),
        keys.stride(0),
        keys.stride(1),
        scale_table.stride(0),
        out.stride(0),
        1.0 / math.sqrt(head_dim),
        HEAD_DIM=head_dim,
        BLOCK=block,
        SPLITS=splits,
        SCALED=scales is not None,
        LENGTHS=lengths is not None,
        APPEND=appended is not None,
        num_warps=warps,
        num_stages=stages,
    )
    if splits > 1:
        _merge_splits[(rows * heads,)](
            partial,
            scale_table,
            out,
            heads,
            scale_table.stride(0),
            out.stride(0),
            HEAD_DIM=head_dim,
            SPLITS=splits,
            SPLITS_POW2=triton.next_power_of_2(splits),
            SCALED=scales is not None,
        )
    return out
