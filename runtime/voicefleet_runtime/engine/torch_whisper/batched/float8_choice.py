"""Where the decoder keeps its cross-attention keys and values as float8 (cache.py stores
them, decode_attention.py reads them)."""

from __future__ import annotations

import importlib.util
import logging

import torch

from voicefleet_runtime.engine.torch_whisper.batched.cache import FLOAT8
from voicefleet_runtime.failure import briefly

logger = logging.getLogger("voicefleet.runtime.batching")

FLOAT8_COMPUTE_CAPABILITY = (8, 9)
"""Ada and Hopper convert e4m3 in hardware; Triton refuses float8 below them."""


def float8_cross_for(mode: str, device: torch.device) -> bool:
    """Whether `device`'s cache stores cross keys and values as float8: auto means where the
    GPU reads them faster (CUDA, compute capability 8.9 or later) and the kernel runs; on is
    refused on a GPU where it cannot, and allowed on a CPU (where it only checks the numbers)."""
    if mode == "off":
        return False
    if device.type != "cuda":
        return mode == "on"
    capability = torch.cuda.get_device_capability(device)
    able = (
        capability >= FLOAT8_COMPUTE_CAPABILITY
        and importlib.util.find_spec("triton") is not None
        and kernel_runs(device)
    )
    if mode == "on" and not able:
        raise ValueError(
            "VOICEFLEET_BATCH_FLOAT8_CROSS_ATTENTION=on needs a GPU of compute capability 8.9 "
            f"or later where Triton builds its kernels; {device} has "
            f"{'.'.join(map(str, capability))} (the log says more): set it to auto"
        )
    return able


def kernel_runs(device: torch.device) -> bool:
    """Whether Triton builds and runs the decode-attention kernel on `device`: it compiles a
    launcher with the image's C compiler on first use, which a slim image may lack. Says why
    not, once, so that auto can fall back to the model's dtype instead of failing the load."""
    try:
        from voicefleet_runtime.engine.torch_whisper.batched import decode_attention

        keys = torch.zeros(1, 1, 16, 64, device=device, dtype=FLOAT8)
        scales = torch.ones(1, 1, 2, device=device)
        query = torch.zeros(1, 1, 64, device=device)
        decode_attention.attend(query, keys, keys, scales, processors=1)
    except Exception as error:  # Triton's failure, whatever its type
        logger.warning(
            "float8 cross-attention stays off on %s: its Triton kernel does not run there (%s)",
            device,
            briefly(error),
        )
        return False
    return True
