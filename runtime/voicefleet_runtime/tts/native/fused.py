"""The work after each instance norm, as one function a compiler can fuse.

Eager, an AdaIN followed by Snake (y + sin(alpha y)^2 / alpha) is about ten kernels, each reading
and writing the whole activation: at 32 chunks they are half of the vocoder's device time and
many of its launches (bench/results/tts_gpu-h200.txt). Written as one function over tensors,
torch.compile turns each into a reduction and one element-wise kernel. The eager layers
(layers.AdaIN) stay the reference; this computes the same function in float32 throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

INSTANCE_NORM_EPS = 1e-5

Tail = Callable[..., torch.Tensor]


def adain_tail(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mask: torch.Tensor,
    alpha: torch.Tensor | None = None,
    inverse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Instance norm over each chunk's own frames, scaled by (1 + gamma) and shifted by beta,
    zero past its end; then Snake when `alpha` is given. x [B, C, T]; gamma, beta [B, C, 1]
    (float32); mask [B, 1, T]; alpha, inverse [1, C, 1]."""
    values = x.float() * mask.float()
    frames = mask.float().sum(dim=-1, keepdim=True)  # exact, where a half-precision count is not
    mean = values.sum(dim=-1, keepdim=True) / frames
    centered = (values - mean) * mask.float()
    variance = (centered * centered).sum(dim=-1, keepdim=True) / frames
    scale = (1 + gamma) * torch.rsqrt(variance + INSTANCE_NORM_EPS)
    styled = (values * scale + (beta - mean * scale)) * mask.float()
    if alpha is not None and inverse is not None:
        styled = styled + torch.sin(styled * alpha.float()).square() * inverse.float()
    return styled.to(x.dtype)


@cache
def compiled_tail() -> Tail:
    """`adain_tail` compiled once per process, for any batch and length (dynamic shapes)."""
    compiled: Tail = torch.compile(adain_tail, dynamic=True, fullgraph=True)
    return compiled
