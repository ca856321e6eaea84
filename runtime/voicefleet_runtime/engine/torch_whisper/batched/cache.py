"""The decoder's preallocated key/value cache: one slot per active sequence, sized up front.

Slot `i` is row `i` of every batched decode step, so the active sequences always sit in
slots 0..n-1: when one leaves, the last one moves into its place (`move`). Self-attention
keys and values are written one position per step; cross-attention keys and values are
written once, when the window's audio is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voicefleet_runtime.engine.torch_whisper.model import WhisperDimensions

GIB = 1024**3


def bytes_per_slot(dims: WhisperDimensions, dtype: torch.dtype) -> int:
    """Self-attention (n_text_ctx positions) plus cross-attention (n_audio_ctx) keys and values."""
    element = torch.empty((), dtype=dtype).element_size()
    positions = dims.n_text_ctx + dims.n_audio_ctx
    return 2 * dims.n_text_layer * positions * dims.n_text_state * element


def slots_for_budget(
    dims: WhisperDimensions, dtype: torch.dtype, memory_gib: float, max_sequences: int
) -> int:
    """How many sequences fit the budget (at most `max_sequences`); ValueError if not one."""
    fit = int(memory_gib * GIB) // bytes_per_slot(dims, dtype)
    if fit < 1:
        need = bytes_per_slot(dims, dtype) / GIB
        raise ValueError(
            f"a batch memory budget of {memory_gib} GiB holds no decoder slot of this model "
            f"(one takes {need:.2f} GiB): raise VOICEFLEET_BATCH_MEMORY_GIB"
        )
    return min(fit, max_sequences)


@dataclass
class SlotCache:
    self_keys: torch.Tensor
    """(layers, slots, heads, n_text_ctx, head_dim)"""
    self_values: torch.Tensor
    cross_keys: torch.Tensor
    """(layers, slots, heads, n_audio_ctx, head_dim)"""
    cross_values: torch.Tensor

    @classmethod
    def allocate(
        cls, dims: WhisperDimensions, slots: int, device: torch.device, dtype: torch.dtype
    ) -> SlotCache:
        head_dim = dims.n_text_state // dims.n_text_head
        text = (dims.n_text_layer, slots, dims.n_text_head, dims.n_text_ctx, head_dim)
        audio = (dims.n_text_layer, slots, dims.n_text_head, dims.n_audio_ctx, head_dim)

        def zeros(shape: tuple[int, ...]) -> torch.Tensor:
            return torch.zeros(shape, device=device, dtype=dtype)

        return cls(zeros(text), zeros(text), zeros(audio), zeros(audio))

    @property
    def slots(self) -> int:
        return int(self.self_keys.shape[1])

    def move(self, source: int, target: int) -> None:
        """Copy slot `source` into `target` (the compaction when a sequence leaves)."""
        for tensor in (self.self_keys, self.self_values, self.cross_keys, self.cross_values):
            tensor[:, target].copy_(tensor[:, source])
