"""Where the decoder keeps its cross-attention keys and values as float8 (cache.py stores
them, decode_attention.py reads them), and with them runs the step's other Triton kernels
(residual_norm.py, token_choice.py, float8_quantize.py at admission)."""

from __future__ import annotations

import importlib.util
import logging

import torch
from torch import nn

from voicefleet_runtime.engine.torch_whisper.batched.cache import FLOAT8
from voicefleet_runtime.engine.torch_whisper.batched.step_tables import INPUT_COLUMNS, RuleTables
from voicefleet_runtime.engine.torch_whisper.tokens import DecodingVocabulary
from voicefleet_runtime.failure import briefly

logger = logging.getLogger("voicefleet.runtime.batching")

FLOAT8_COMPUTE_CAPABILITY = (8, 9)
"""Ada and Hopper convert e4m3 in hardware; Triton refuses float8 below them."""


def float8_cross_for(mode: str, device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
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
        and kernels_run(device, dtype)
    )
    if mode == "on" and not able:
        raise ValueError(
            "VOICEFLEET_BATCH_FLOAT8_CROSS_ATTENTION=on needs a GPU of compute capability 8.9 "
            f"or later where Triton builds its kernels; {device} has "
            f"{'.'.join(map(str, capability))} (the log says more): set it to auto"
        )
    return able


def kernels_run(device: torch.device, dtype: torch.dtype = torch.float32) -> bool:
    """Whether Triton builds and runs every kernel of the float8 path on `device`, on tensors
    of the model's `dtype`: it compiles a launcher with the image's C compiler on first use,
    which a slim image may lack, and one kernel could build where another does not. Says why
    not, once, so that auto can fall back to the model's dtype instead of failing a step."""
    try:
        launch_each_kernel(device, dtype)
    except Exception as error:  # Triton's failure, whatever its type
        logger.warning(
            "float8 cross-attention stays off on %s: its Triton kernels do not run there (%s)",
            device,
            briefly(error),
        )
        return False
    return True


def launch_each_kernel(device: torch.device, dtype: torch.dtype) -> None:
    """One launch of each kernel, on the smallest inputs each takes, as the step calls it."""
    from voicefleet_runtime.engine.torch_whisper.batched import (
        decode_attention,
        float8_quantize,
        residual_norm,
        token_choice,
    )

    def zeros(*shape: int, of: torch.dtype = dtype) -> torch.Tensor:
        return torch.zeros(*shape, device=device, dtype=of)

    keys, scales = zeros(1, 1, 16, 64, of=FLOAT8), torch.ones(1, 1, 2, device=device)
    float8_quantize.quantize_into(zeros(1, 1, 16, 64), keys, zeros(1, 1, of=torch.float32))
    query = zeros(1, 1, 64)
    decode_attention.attend(query, keys, keys, scales, processors=1)
    cache, lengths = zeros(1, 1, 16, 64), torch.ones(1, device=device, dtype=torch.long)
    decode_attention.attend(query, cache, cache, None, 1, lengths=lengths, appended=(query, query))
    norm = nn.LayerNorm(64, device=device, dtype=dtype)
    residual_norm.add_layer_norm(zeros(1, 64), zeros(1, 64), norm)
    rules = RuleTables(PROBE_VOCABULARY, 8, device)
    inputs = zeros(1, INPUT_COLUMNS, of=torch.long)
    temperatures = zeros(1, of=torch.float32)
    noise = torch.ones(1, 8, device=device)  # draws of Exp(1); unread at temperature 0
    token_choice.choose_tokens(zeros(1, 8), inputs, temperatures, noise, rules)


PROBE_VOCABULARY = DecodingVocabulary(
    eot=1,
    sot=2,
    sot_prev=3,
    transcribe=3,
    translate=3,
    no_timestamps=4,
    no_speech=5,
    timestamp_begin=6,
    language_ids={"en": 2},
    suppress_ids=(0,),
    suppress_ids_begin=(1,),
    alignment_heads=(),
)
"""Eight tokens, two of them timestamps: enough for the rules kernel to take every branch it
compiles."""
