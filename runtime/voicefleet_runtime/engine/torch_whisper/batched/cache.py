"""The decoder's preallocated key/value cache: one slot per active sequence, sized up front.

Slot `i` is row `i` of every batched decode step, so the active sequences always sit in
slots 0..n-1: when one leaves, the last one moves into its place (`move`). Self-attention
keys and values are written one position per step; cross-attention keys and values are
written once, when the window's audio is encoded.

Cross-attention keys and values may be stored as float8 (e4m3), one scale per slot, head and
tensor: at batch 64 they are most of the bytes a decode step reads (decode_attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voicefleet_runtime.engine.torch_whisper.model import WhisperDimensions

GIB = 1024**3
FLOAT8 = torch.float8_e4m3fn
FLOAT8_MAX = 448.0
"""The largest finite e4m3 value: each (slot, head)'s largest magnitude is scaled to it."""


def bytes_per_slot(dims: WhisperDimensions, dtype: torch.dtype, float8_cross: bool = False) -> int:
    """Self-attention (n_text_ctx positions) plus cross-attention (n_audio_ctx) keys and values."""
    element = torch.empty((), dtype=dtype).element_size()
    cross_element = 1 if float8_cross else element
    per_position = 2 * dims.n_text_layer * dims.n_text_state
    return per_position * (dims.n_text_ctx * element + dims.n_audio_ctx * cross_element)


def slots_for_budget(
    dims: WhisperDimensions,
    dtype: torch.dtype,
    memory_gib: float,
    max_sequences: int,
    float8_cross: bool = False,
) -> int:
    """How many sequences fit the budget (at most `max_sequences`); ValueError if not one."""
    one = bytes_per_slot(dims, dtype, float8_cross)
    fit = int(memory_gib * GIB) // one
    if fit < 1:
        raise ValueError(
            f"a batch memory budget of {memory_gib} GiB holds no decoder slot of this model "
            f"(one takes {one / GIB:.2f} GiB): raise VOICEFLEET_BATCH_MEMORY_GIB"
        )
    return min(fit, max_sequences)


def quantize_float8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x as float8, scale) with x ~ float8 * scale; one scale per (..., head): x is
    (..., heads, positions, head_dim)."""
    peak = x.abs().amax(dim=(-2, -1)).float()
    scale = (peak / FLOAT8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    scaled = x.float() / scale[..., None, None]
    # Rounding can nudge the peak past 448, which e4m3 would turn into NaN.
    return scaled.clamp(-FLOAT8_MAX, FLOAT8_MAX).to(FLOAT8), scale


def dequantize_float8(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (x.float() * scale[..., None, None]).to(dtype)


@dataclass
class SlotCache:
    self_keys: torch.Tensor
    """(layers, slots, heads, n_text_ctx, head_dim)"""
    self_values: torch.Tensor
    cross_keys: torch.Tensor
    """(layers, slots, heads, n_audio_ctx, head_dim), float8 or the model's dtype"""
    cross_values: torch.Tensor
    cross_scales: torch.Tensor | None = None
    """(layers, slots, heads, 2) float32 when cross keys and values are float8: the keys'
    scale, then the values'."""

    @classmethod
    def allocate(
        cls,
        dims: WhisperDimensions,
        slots: int,
        device: torch.device,
        dtype: torch.dtype,
        float8_cross: bool = False,
    ) -> SlotCache:
        head_dim = dims.n_text_state // dims.n_text_head
        text = (dims.n_text_layer, slots, dims.n_text_head, dims.n_text_ctx, head_dim)
        audio = (dims.n_text_layer, slots, dims.n_text_head, dims.n_audio_ctx, head_dim)
        cross_dtype = FLOAT8 if float8_cross else dtype

        def zeros(shape: tuple[int, ...], of: torch.dtype = dtype) -> torch.Tensor:
            return torch.zeros(shape, device=device, dtype=of)

        scales = (
            torch.ones((*audio[:3], 2), device=device, dtype=torch.float32)
            if float8_cross
            else None
        )
        return cls(
            zeros(text), zeros(text), zeros(audio, cross_dtype), zeros(audio, cross_dtype), scales
        )

    @property
    def slots(self) -> int:
        return int(self.self_keys.shape[1])

    @property
    def float8_cross(self) -> bool:
        return self.cross_scales is not None

    def write_cross(self, layer: int, first: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store the cross-attention keys and values (windows, heads, positions, head_dim) of
        windows that take slots first, first + 1, ..."""
        end = first + keys.shape[0]
        if self.cross_scales is None:
            self.cross_keys[layer, first:end].copy_(keys)
            self.cross_values[layer, first:end].copy_(values)
            return
        for target, source, column in ((self.cross_keys, keys, 0), (self.cross_values, values, 1)):
            scales = self.cross_scales[layer, first:end, :, column]
            if source.is_cuda:
                # One kernel instead of seven passes (float8_quantize.py); same numbers.
                from voicefleet_runtime.engine.torch_whisper.batched import float8_quantize

                float8_quantize.quantize_into(source, target[layer, first:end], scales)
                continue
            stored, scale = quantize_float8(source)
            target[layer, first:end].copy_(stored)
            scales.copy_(scale)

    def cross_of_slot(self, layer: int, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One slot's cross-attention keys and values, (1, heads, positions, head_dim), in the
        self-attention's dtype (for the word-timestamp pass, which runs the plain model)."""
        keys = self.cross_keys[layer, slot : slot + 1]
        values = self.cross_values[layer, slot : slot + 1]
        if self.cross_scales is None:
            return keys, values
        scales = self.cross_scales[layer, slot : slot + 1]
        dtype = self.self_keys.dtype
        return (
            dequantize_float8(keys, scales[..., 0], dtype),
            dequantize_float8(values, scales[..., 1], dtype),
        )

    def move(self, source: int, target: int) -> None:
        """Copy slot `source` into `target` (the compaction when a sequence leaves)."""
        tensors = [self.self_keys, self.self_values, self.cross_keys, self.cross_values]
        if self.cross_scales is not None:
            tensors.append(self.cross_scales)
        for tensor in tensors:
            tensor[:, target].copy_(tensor[:, source])
