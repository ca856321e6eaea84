"""The work after each instance norm, as functions a compiler can fuse.

Eager, an AdaIN followed by Snake (y + sin(alpha y)^2 / alpha) is about ten kernels, each reading
and writing the whole activation: at 32 chunks they are half of the vocoder's device time and
many of its launches (bench/results/tts_gpu-h200.txt). Written as functions over tensors,
torch.compile turns each call into a reduction and one element-wise kernel. The eager layers
(layers.AdaIN) stay the reference; these compute the same function in float32 throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

INSTANCE_NORM_EPS = 1e-5


def adain_tail(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Instance norm over each chunk's own frames, scaled by (1 + gamma) and shifted by beta,
    zero past its end. x [B, C, T]; gamma, beta [B, C, 1] (float32); mask [B, 1, T]."""
    return _styled(x, gamma, beta, mask).to(x.dtype)


def adain_snake_tail(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mask: torch.Tensor,
    alpha: torch.Tensor,
    inverse: torch.Tensor,
) -> torch.Tensor:
    """`adain_tail`, then Snake with alpha and 1 / alpha ([1, C, 1])."""
    styled = _styled(x, gamma, beta, mask)
    return (styled + torch.sin(styled * alpha.float()).square() * inverse.float()).to(x.dtype)


def _styled(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    valid = mask.float()
    values = x.float() * valid
    frames = valid.sum(dim=-1, keepdim=True)  # exact, where a half-precision count is not
    mean = values.sum(dim=-1, keepdim=True) / frames
    centered = (values - mean) * valid
    variance = (centered * centered).sum(dim=-1, keepdim=True) / frames
    scale = (1 + gamma) * torch.rsqrt(variance + INSTANCE_NORM_EPS)
    return (values * scale + (beta - mean * scale)) * valid


@dataclass(frozen=True)
class Tails:
    """What an AdaIN runs after its style projection: plain, or followed by Snake."""

    plain: Callable[..., torch.Tensor]
    snake: Callable[..., torch.Tensor]


EAGER_TAILS = Tails(adain_tail, adain_snake_tail)


def compiled_tails() -> Tails:
    """Both tails compiled for any batch and length (dynamic shapes). Two functions, not one
    with a branch: each compiles once per dtype (and batch kind), under dynamo's recompile
    limit (8 per function), which one function with both branches reached."""
    return Tails(
        torch.compile(adain_tail, dynamic=True, fullgraph=True),
        torch.compile(adain_snake_tail, dynamic=True, fullgraph=True),
    )
