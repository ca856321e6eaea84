"""The loop's encoder pass: the module as it is, or torch.compile'd.

Compiled, the layer norms, GELUs, bias and residual adds around cuBLAS's products and the
attention kernel fuse: on the H200 the large-v3 shape's encoder went from 47-49% of the bf16
peak to 59% at 32 windows (bench/results/batching-notes.md). It compiles here, at load, once
per batch kind (one window, or several: dynamic shapes), so that no request pays for it;
where the compiler cannot build (no C compiler in the image, say) the loop keeps the module,
and says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from voicefleet_runtime.engine.torch_whisper.features import N_FRAMES_PER_CHUNK
from voicefleet_runtime.failure import briefly

logger = logging.getLogger("voicefleet.runtime.batching")

Encoder = Callable[[torch.Tensor], torch.Tensor]


def compiled_encoder(encoder: nn.Module, n_mels: int, dtype: torch.dtype) -> Encoder:
    """`encoder` compiled and run once per batch kind; the module itself if that fails."""
    device = next(encoder.parameters()).device
    compiled: Encoder = torch.compile(encoder, dynamic=True)
    try:
        with torch.inference_mode():
            for windows in (1, 2):
                compiled(torch.randn(windows, n_mels, N_FRAMES_PER_CHUNK, device=device).to(dtype))
    except Exception as error:  # the compiler's failure, whatever its type
        logger.warning("compiling the encoder failed (%s); running it op by op", briefly(error))
        return encoder
    return compiled
