"""The building blocks every stage shares, written for padded batches.

A batch holds chunks of different lengths, right-padded. Two rules keep padding from changing
any chunk's audio:
- every statistic (instance norm) is taken over a chunk's own frames only (`Span`);
- every convolution that looks at neighbours reads zeros past a chunk's end, as it would
  reading its own zero padding alone: normalisations return zeros there, and the few places
  that feed a convolution anything else multiply by the span's mask first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from voicefleet_runtime.tts.native.fused import INSTANCE_NORM_EPS, Tails
from voicefleet_runtime.tts.native.weights import KokoroWeights

LAYER_NORM_EPS = 1e-5
RESIDUAL_SCALE = math.sqrt(2.0)
"""A residual block's output is (residual + shortcut) / sqrt(2)."""


def to_device(values: NDArray[Any] | list[int], device: torch.device) -> torch.Tensor:
    """Host values on `device` without waiting for the device: a copy from pageable memory
    would first wait for every kernel queued so far (a host sync in the middle of a forward)."""
    tensor = torch.as_tensor(np.asarray(values))
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@dataclass(frozen=True)
class Span:
    """The valid frames of each chunk at one time resolution."""

    lengths: tuple[int, ...]  # on the host
    frames: torch.Tensor  # [B] the same lengths on the device (int64)
    mask: torch.Tensor  # [B, 1, T], 1.0 on a chunk's frames, 0.0 past its end
    counts: torch.Tensor  # [B, 1, 1], frames per chunk

    @classmethod
    def of(
        cls, lengths: list[int] | tuple[int, ...], device: torch.device, dtype: torch.dtype
    ) -> Span:
        return cls._build(tuple(lengths), to_device(list(lengths), device), dtype)

    @classmethod
    def _build(cls, lengths: tuple[int, ...], frames: torch.Tensor, dtype: torch.dtype) -> Span:
        steps = torch.arange(max(lengths), device=frames.device)
        mask = (steps[None, :] < frames[:, None]).to(dtype)[:, None, :]
        return cls(lengths, frames, mask, frames.to(dtype)[:, None, None])

    @property
    def size(self) -> int:
        return self.mask.shape[-1]

    @property
    def full(self) -> bool:
        """One length for all (a single chunk): masks change nothing and are skipped."""
        return min(self.lengths) == self.size

    def cast(self, dtype: torch.dtype) -> Span:
        return Span(self.lengths, self.frames, self.mask.to(dtype), self.counts.to(dtype))

    def scaled(self, factor: int, extra: int = 0) -> Span:
        """The same chunks at `factor` times the rate (plus `extra` frames), on the device."""
        lengths = tuple(n * factor + extra for n in self.lengths)
        return Span._build(lengths, self.frames * factor + extra, self.mask.dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.full else x * self.mask


def instance_moments(x: torch.Tensor, span: Span) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance per chunk and channel over the chunk's own frames, in float32 (a sum
    over thousands of frames overflows float16): [B, C, T] -> two [B, C, 1]."""
    if span.full and x.dtype == torch.float32:
        variance, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
        return mean, variance
    if span.full:
        mean = torch.sum(x, dim=-1, keepdim=True, dtype=torch.float32) / x.shape[-1]
        centered = x - mean.to(x.dtype)
        counts = torch.full_like(mean, x.shape[-1])
    else:
        masked = x * span.mask
        counts = span.counts.float()
        mean = torch.sum(masked, dim=-1, keepdim=True, dtype=torch.float32) / counts
        centered = torch.addcmul(masked, mean.to(x.dtype), span.mask, value=-1)
    norm = torch.linalg.vector_norm(centered, dim=-1, keepdim=True, dtype=torch.float32)
    return mean, norm * norm / counts


class AdaIN(nn.Module):
    """Instance norm (no affine), then a scale (1 + gamma) and shift (beta) projected from the
    style; zero past each chunk's end. Folded into one multiply-add per element:
    x * scale + shift, with scale = (1 + gamma) / std and shift = beta - mean * scale.
    With `snake` (alpha, 1 / alpha), Snake follows: y + sin(alpha y)^2 / alpha.

    `tails` None runs it op by op; fused.compiled_tails() runs each as fused kernels."""

    tails: Tails | None = None

    def __init__(self, weights: KokoroWeights, name: str) -> None:
        super().__init__()
        self.fc = weights.linear(f"{name}.fc")

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        span: Span,
        snake: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        projected: torch.Tensor = self.fc(style)
        gamma, beta = projected.float()[:, :, None].chunk(2, dim=1)
        if self.tails is not None:
            if snake is None:
                return self.tails.plain(x, gamma, beta, span.mask)
            return self.tails.snake(x, gamma, beta, span.mask, *snake)
        mean, variance = instance_moments(x, span)
        scale = (1 + gamma) * torch.rsqrt(variance + INSTANCE_NORM_EPS)
        shift = beta - mean * scale
        styled = span.apply(torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)))
        if snake is None:
            return styled
        alpha, inverse = snake
        return torch.addcmul(styled, torch.sin(styled * alpha).square_(), inverse)


class AdaLayerNorm(nn.Module):
    """Layer norm over channels (per frame), then the style's scale and shift: [B, T, C]."""

    def __init__(self, weights: KokoroWeights, name: str) -> None:
        super().__init__()
        self.fc = weights.linear(f"{name}.fc")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = self.fc(style)
        gamma, beta = projected[:, None, :].chunk(2, dim=-1)
        normed = nn.functional.layer_norm(x, (x.shape[-1],), eps=LAYER_NORM_EPS)
        return (1 + gamma) * normed + beta


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: tuple[int, ...]) -> torch.Tensor:
    """A batch-first LSTM over each chunk's own steps, [B, T, in] -> [B, T, out]; zero past ends.

    The batch is sorted longest first here, with the orders copied from pinned memory: with
    `enforce_sorted=False`, pack_padded_sequence copies its order to the device from pageable
    memory and pad_packed_sequence reads the inverse back, two host syncs per call, each of
    which leaves the host idle until the device has caught up.
    """
    if min(lengths) == x.shape[1]:
        output: torch.Tensor = lstm(x)[0]
        return output
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    inverse = [0] * len(order)
    for position, row in enumerate(order):
        inverse[row] = position
    ordered = x.index_select(0, to_device(order, x.device))
    packed = pack_padded_sequence(
        ordered, torch.tensor([lengths[row] for row in order]), batch_first=True
    )
    output, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])
    return output.index_select(0, to_device(inverse, x.device))


class StyledResidualBlock(nn.Module):
    """AdaIN -> LeakyReLU -> [x2 upsample] -> conv -> AdaIN -> LeakyReLU -> conv, plus a
    (1x1-projected, upsampled) shortcut; used by the F0/N predictor and the decoder."""

    def __init__(self, weights: KokoroWeights, name: str, upsample: bool = False) -> None:
        super().__init__()
        self.norm1 = AdaIN(weights, f"{name}.norm1")
        self.norm2 = AdaIN(weights, f"{name}.norm2")
        self.conv1 = weights.conv(f"{name}.conv1")
        self.conv2 = weights.conv(f"{name}.conv2")
        self.shortcut = (
            weights.conv(f"{name}.conv1x1") if f"{name}.conv1x1" in weights.convs else None
        )
        self.pool = weights.conv(f"{name}.pool") if upsample else None

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, span: Span, out_span: Span
    ) -> torch.Tensor:
        residual = nn.functional.leaky_relu(self.norm1(x, style, span), 0.2)
        shortcut = x
        if self.pool is not None:
            residual = out_span.apply(self.pool(residual))
            shortcut = torch.repeat_interleave(x, 2, dim=-1)
        residual = nn.functional.leaky_relu(self.norm2(self.conv1(residual), style, out_span), 0.2)
        output: torch.Tensor = self.conv2(residual)
        if self.shortcut is not None:
            shortcut = self.shortcut(shortcut)
        return (output + shortcut) / RESIDUAL_SCALE
