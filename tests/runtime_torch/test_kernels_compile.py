"""Every Triton kernel of the decode step compiles for the GPUs that run it, here, without one.

The interpreter tests (test_decode_attention.py, test_residual_norm.py, test_token_choice.py)
check what the kernels compute, with numpy; they do not lower them. Triton's compiler does
not need a GPU to build for one: this compiles each kernel, in the variants the step launches,
to PTX and through ptxas for compute capability 8.9 (L4, L40S) and 9.0 (H100, H200), the GPUs
where float8 cross-attention turns on (float8_choice.py). A kernel that only the interpreter
accepts (a construct the compiler rejects, or a float8 conversion one architecture lacks)
fails here instead of on a customer's first request.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from voicefleet_runtime.engine.torch_whisper.batched import (
    decode_attention,
    float8_quantize,
    residual_norm,
    token_choice,
)

pytestmark = pytest.mark.slow

ATTENTION = {
    **{name: "*bf16" for name in ("query_ptr", "new_keys_ptr", "new_values_ptr", "out_ptr")},
    "scales_ptr": "*fp32",
    "lengths_ptr": "*i64",
    "partial_ptr": "*fp32",
    **{
        name: "i32"
        for name in (
            "heads",
            "positions",
            "positions_per_split",
            "query_row_stride",
            "new_row_stride",
            "kv_row_stride",
            "kv_head_stride",
            "scales_row_stride",
            "out_row_stride",
        )
    },
    "softmax_scale": "fp32",
}
CROSS = {**ATTENTION, "keys_ptr": "*fp8e4nv", "values_ptr": "*fp8e4nv"}
SELF = {**ATTENTION, "keys_ptr": "*bf16", "values_ptr": "*bf16"}
MERGE = {
    "partial_ptr": "*fp32",
    "scales_ptr": "*fp32",
    "out_ptr": "*bf16",
    "heads": "i32",
    "scales_row_stride": "i32",
    "out_row_stride": "i32",
}
QUANTIZE = {
    "source_ptr": "*bf16",
    "target_ptr": "*fp8e4nv",
    "scales_ptr": "*fp32",
    **{
        name: "i32"
        for name in (
            "positions",
            "source_window_stride",
            "source_head_stride",
            "source_position_stride",
            "target_window_stride",
            "target_head_stride",
            "scales_window_stride",
            "scales_head_stride",
        )
    },
    "largest": "fp32",
}
ADD_NORM = {
    **{
        name: "*bf16"
        for name in (
            "residual_ptr",
            "update_ptr",
            "weight_ptr",
            "bias_ptr",
            "sum_ptr",
            "normed_ptr",
        )
    },
    "width": "i32",
    "residual_row_stride": "i32",
    "update_row_stride": "i32",
    "eps": "fp32",
}
CHOICE = {
    "logits_ptr": "*bf16",
    "flags_ptr": "*i8",
    "language_ids_ptr": "*i64",
    "inputs_ptr": "*i64",
    "temperatures_ptr": "*fp32",
    "noise_ptr": "*fp32",
    "out_ptr": "*fp32",
    **{
        name: "i32"
        for name in (
            "logits_row_stride",
            "vocabulary",
            "languages",
            "noise_row_stride",
            "timestamp_begin",
            "eot",
            "no_speech",
            "max_initial_timestamp",
        )
    },
}
ATTENTION_FLAGS = ("SCALED", "LENGTHS", "APPEND")

# (name, kernel, argument types, compile-time constants, warps): the variants the step runs.
KERNELS = [
    (
        "cross-attention, one split",
        decode_attention._partial_attention,
        CROSS,
        {"HEAD_DIM": 64, "BLOCK": 256, "SPLITS": 1, "SCALED": True, "LENGTHS": False},
        4,
    ),
    (
        "cross-attention, four splits",
        decode_attention._partial_attention,
        CROSS,
        {"HEAD_DIM": 64, "BLOCK": 256, "SPLITS": 4, "SCALED": True, "LENGTHS": False},
        4,
    ),
    (
        "self-attention, newest key appended",
        decode_attention._partial_attention,
        SELF,
        {"HEAD_DIM": 64, "BLOCK": 32, "SPLITS": 2, "SCALED": False, "LENGTHS": True},
        1,
    ),
    (
        "splits merged",
        decode_attention._merge_splits,
        MERGE,
        {"HEAD_DIM": 64, "SPLITS": 3, "SPLITS_POW2": 4, "SCALED": True},
        4,
    ),
    ("float8 quantisation", float8_quantize._quantize_heads, QUANTIZE, {"HEAD_DIM": 64}, 4),
    ("residual add and layer norm", residual_norm._add_layer_norm, ADD_NORM, {"BLOCK": 2048}, 4),
    (
        "token rules, multilingual",
        token_choice._choose_tokens,
        CHOICE,
        {"BLOCK": token_choice.BLOCK, "LANGUAGE_BLOCK": 128},
        token_choice.WARPS,
    ),
    (
        "token rules, English-only",
        token_choice._choose_tokens,
        CHOICE,
        {"BLOCK": token_choice.BLOCK, "LANGUAGE_BLOCK": 0},
        token_choice.WARPS,
    ),
]


def constants_for(kernel: triton.JITFunction, given: Mapping[str, object]) -> dict[str, object]:
    """`given`, and the attention kernel's APPEND flag (on exactly where lengths are)."""
    constants = dict(given)
    if kernel is decode_attention._partial_attention:
        constants["APPEND"] = constants["LENGTHS"]
    if kernel is float8_quantize._quantize_heads:
        constants["BLOCK"] = float8_quantize.BLOCK
    return constants


@pytest.mark.parametrize("capability", [89, 90])
@pytest.mark.parametrize(
    ("name", "kernel", "types", "constants", "warps"), KERNELS, ids=[k[0] for k in KERNELS]
)
def test_the_kernel_compiles_for_the_gpus_that_run_it(
    capability: int,
    name: str,
    kernel: triton.JITFunction,
    types: Mapping[str, str],
    constants: Mapping[str, object],
    warps: int,
) -> None:
    constants = constants_for(kernel, constants)
    signature = {
        argument: "constexpr" if argument in constants else types[argument]
        for argument in kernel.arg_names
    }
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", capability, 32), options={"num_warps": warps}
    )
    assert compiled.asm["cubin"], name  # ptxas turned the PTX into machine code
