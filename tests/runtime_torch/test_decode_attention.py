"""The decode step's Triton kernels: attention over float8 cross-attention keys and values (on
tiny.en's real keys and values for jfk.flac) and over the self-attention cache up to each
row's length, storing each row's newest key and value; the float8 quantisation at admission.

The kernels run in Triton's interpreter (triton_interpreter.py), checked against torch on the
same inputs. Their speed is the device's business (bench/float8_cross_attention.py,
bench/float8_admission.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch.nn import functional

from tests.runtime_torch.triton_interpreter import run_case, run_python
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.batched.cache import (
    FLOAT8_MAX,
    dequantize_float8,
    quantize_float8,
    slots_for_budget,
)
from voicefleet_runtime.engine.torch_whisper.batched.float8_choice import (
    float8_cross_for,
    kernels_run,
)
from voicefleet_runtime.engine.torch_whisper.features import LogMelExtractor, pad_or_trim_frames
from voicefleet_runtime.engine.torch_whisper.model import LARGE_V3_DIMENSIONS, DecoderLayer

pytestmark = pytest.mark.slow

KERNEL_RUN = """
import sys, torch
from voicefleet_runtime.engine.torch_whisper.batched import decode_attention
case = torch.load(sys.argv[1])
tuning = decode_attention.Tuning(*case["tuning"]) if case["tuning"] else decode_attention.TUNING
out = decode_attention.attend(
    case["query"], case["keys"], case["values"], case["scales"], case["processors"], tuning,
    case["lengths"], case["appended"],
)
torch.save({"out": out, "keys": case["keys"], "values": case["values"],
    "splits": decode_attention.splits_for(
    *case["keys"].shape[:3], case["processors"], tuning.block, tuning.programs_per_processor
)}, sys.argv[2])
"""


def run_kernel(case: Mapping[str, object], folder: Path) -> dict[str, Any]:
    """decode_attention.attend on `case` in Triton's interpreter, in a child process."""
    return run_case(KERNEL_RUN, {"tuning": None, "lengths": None, "appended": None, **case}, folder)


@pytest.fixture(scope="module")
def jfk_cross(
    tiny_en_engine: TorchWhisperEngine, jfk_audio: NDArray[np.float32]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """tiny.en's cross-attention keys and values for jfk, per decoder layer: (1, heads,
    1500, 64) each, float32."""
    model = tiny_en_engine._model
    with torch.inference_mode():
        features = LogMelExtractor(model.dims.n_mels, torch.device("cpu"))(jfk_audio)
        audio = model.encoder(pad_or_trim_frames(features)[None].float())
        layers: list[DecoderLayer] = list(model.decoder.layers)  # type: ignore[arg-type]
        return [layer.attention.project_audio(audio) for layer in layers]


def test_quantised_keys_and_values_stay_within_e4m3_rounding(
    jfk_cross: list[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    for keys, values in jfk_cross:
        for tensor in (keys, values):
            stored, scale = quantize_float8(tensor)
            assert stored.dtype == torch.float8_e4m3fn
            assert scale.shape == tensor.shape[:2]
            assert stored.float().abs().amax() == FLOAT8_MAX  # each head's peak uses the range
            back = dequantize_float8(stored, scale, torch.float32)
            # e4m3 keeps 3 mantissa bits (half a step: 1/16 of a value); below 2^-6 of the
            # range its steps are fixed at 2^-9 of the scale.
            bound = tensor.abs() / 16 + scale[..., None, None] * 2**-10
            assert bool(((back - tensor).abs() <= bound * 1.0001).all())


def test_attention_over_the_float8_cache_is_close_to_full_precision(
    jfk_cross: list[tuple[torch.Tensor, torch.Tensor]],
) -> None:
    generator = torch.Generator().manual_seed(0)
    for keys, values in jfk_cross:
        query = torch.randn(1, keys.shape[1], 1, keys.shape[-1], generator=generator)
        exact = functional.scaled_dot_product_attention(query, keys, values)
        k8, key_scale = quantize_float8(keys)
        v8, value_scale = quantize_float8(values)
        approximate = functional.scaled_dot_product_attention(
            query,
            dequantize_float8(k8, key_scale, torch.float32),
            dequantize_float8(v8, value_scale, torch.float32),
        )
        relative = (approximate - exact).norm() / exact.norm()
        assert relative < 0.05, relative


@pytest.mark.parametrize(
    ("rows", "positions", "processors"),
    [
        (3, 1500, 1),  # one program per (row, head): the kernel writes the output itself
        (2, 1500, 64),  # split along the positions, merged by the second kernel
        (2, 37, 64),  # fewer positions than a block: the masked tail
    ],
)
def test_the_triton_kernel_matches_attention_over_the_dequantised_cache(
    jfk_cross: list[tuple[torch.Tensor, torch.Tensor]],
    tmp_path: Path,
    rows: int,
    positions: int,
    processors: int,
) -> None:
    # Rows from different layers, so each row has its own keys, values and scales.
    keys = torch.cat([jfk_cross[i][0] for i in range(rows)])[:, :, :positions].contiguous()
    values = torch.cat([jfk_cross[i][1] for i in range(rows)])[:, :, :positions].contiguous()
    k8, key_scale = quantize_float8(keys)
    v8, value_scale = quantize_float8(values)
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(rows, keys.shape[1], keys.shape[-1], generator=generator)
    case = {
        "query": query,
        "keys": k8,
        "values": v8,
        "scales": torch.stack([key_scale, value_scale], dim=-1).contiguous(),
        "processors": processors,
    }
    result = run_kernel(case, tmp_path)
    expected = functional.scaled_dot_product_attention(
        query[:, :, None],
        dequantize_float8(k8, key_scale, torch.float32),
        dequantize_float8(v8, value_scale, torch.float32),
    )[:, :, 0]
    assert (result["splits"] > 1) == (processors > 1 and positions > 256)
    torch.testing.assert_close(result["out"], expected, rtol=1e-4, atol=1e-5)


def test_the_kernel_reads_the_self_attention_cache_up_to_each_rows_length(
    tmp_path: Path,
) -> None:
    """The self-attention cache as the step slices it (a context bucket of a longer cache, so
    heads are not contiguous), rows at different positions, split into programs that may hold
    no position of a short row: as SDPA with the step's mask."""
    generator = torch.Generator().manual_seed(2)
    rows, heads, head_dim, context = 5, 6, 64, 128
    cache_keys = torch.randn(rows, heads, 448, head_dim, generator=generator)
    cache_values = torch.randn(rows, heads, 448, head_dim, generator=generator)
    keys, values = cache_keys[:, :, :context], cache_values[:, :, :context]
    positions = torch.tensor([0, 5, 63, 64, 127])
    query = torch.randn(rows, heads, head_dim, generator=generator)
    case = {
        "query": query,
        "keys": keys,
        "values": values,
        "scales": None,
        "processors": 64,
        "tuning": (32, 2, 4),  # blocks of 32 positions: four splits a row
        "lengths": positions + 1,
    }
    result = run_kernel(case, tmp_path)
    assert result["splits"] == 4
    visible = (torch.arange(context)[None, :] <= positions[:, None])[:, None, None, :]
    expected = functional.scaled_dot_product_attention(
        query[:, :, None], keys, values, attn_mask=visible
    )[:, :, 0]
    torch.testing.assert_close(result["out"], expected, rtol=1e-4, atol=1e-5)


QUANTIZE_RUN = """
import sys, torch
from voicefleet_runtime.engine.torch_whisper.batched.float8_quantize import quantize_into
case = torch.load(sys.argv[1])
cache, scales = case["cache"], case["scales"]
quantize_into(case["source"], cache[1:3], scales[1:3, :, 1])
torch.save({"cache": cache, "scales": scales}, sys.argv[2])
"""


def test_the_quantisation_kernel_writes_what_quantize_float8_computes(
    jfk_cross: list[tuple[torch.Tensor, torch.Tensor]], tmp_path: Path
) -> None:
    """Two windows' keys laid out as the projection leaves them (heads interleaved along each
    position), written into slots 1 and 2 of a four-slot cache and the values' column of its
    scales: the same values and scales as quantize_float8, and nothing else touched."""
    heads = jfk_cross[0][0].shape[1]
    projected = torch.stack(
        [keys[0].transpose(0, 1).reshape(1500, -1) for keys, _ in jfk_cross[:2]]
    )
    source = projected.view(2, 1500, heads, -1).transpose(1, 2)
    assert not source.is_contiguous()
    case = {
        "source": source,
        "cache": torch.zeros(4, *source.shape[1:], dtype=torch.float8_e4m3fn),
        "scales": torch.zeros(4, heads, 2),
    }
    result = run_case(QUANTIZE_RUN, case, tmp_path)
    stored, scale = quantize_float8(source)
    # The same numbers (as numbers: the interpreter writes a rounded -0 as +0).
    written = result["cache"].float()
    assert torch.equal(written[1:3], stored.float())
    assert not written[[0, 3]].any()
    assert torch.equal(result["scales"][1:3, :, 1], scale)
    assert not result["scales"][:, :, 0].any()
    assert not result["scales"][[0, 3]].any()


def test_the_kernel_stores_each_rows_newest_key_and_value_as_it_attends(
    tmp_path: Path,
) -> None:
    """The step's self-attention: each row's newest key and value come from the projection
    (laid out as the fused query-key-value output leaves them). The kernel writes them at the
    row's position, with the split that holds that position, and attends to them: the cache
    and the output are those of writing first and then attending with SDPA's mask."""
    generator = torch.Generator().manual_seed(3)
    rows, heads, head_dim, context = 5, 6, 64, 128
    cache_keys = torch.randn(rows, heads, 448, head_dim, generator=generator)
    cache_values = torch.randn(rows, heads, 448, head_dim, generator=generator)
    positions = torch.tensor([0, 5, 63, 64, 127])  # no earlier key; a split's last; next's first
    fused = torch.randn(rows, 1, 3 * heads * head_dim, generator=generator)
    query, key, value = (part.view(rows, heads, head_dim) for part in fused.chunk(3, dim=-1))
    case = {
        "query": query,
        "keys": cache_keys[:, :, :context],
        "values": cache_values[:, :, :context],
        "scales": None,
        "processors": 64,
        "tuning": (32, 2, 4),
        "lengths": positions + 1,
        "appended": (key, value),
    }
    result = run_kernel(case, tmp_path)
    assert result["splits"] == 4
    written_keys, written_values = cache_keys.clone(), cache_values.clone()
    written_keys[torch.arange(rows), :, positions] = key
    written_values[torch.arange(rows), :, positions] = value
    assert torch.equal(result["keys"], written_keys[:, :, :context])
    assert torch.equal(result["values"], written_values[:, :, :context])
    visible = (torch.arange(context)[None, :] <= positions[:, None])[:, None, None, :]
    expected = functional.scaled_dot_product_attention(
        query[:, :, None],
        written_keys[:, :, :context],
        written_values[:, :, :context],
        attn_mask=visible,
    )[:, :, 0]
    torch.testing.assert_close(result["out"], expected, rtol=1e-4, atol=1e-5)


def test_a_device_where_the_kernel_cannot_run_keeps_the_model_dtype(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CPU, outside Triton's interpreter, is such a device: the check says why, once. In
    the interpreter the same check's launch runs, so what it launches is a valid call."""
    with caplog.at_level("WARNING", logger="voicefleet.runtime.batching"):
        assert not kernels_run(torch.device("cpu"))
    assert "float8 cross-attention stays off on cpu" in caplog.text
    check = (
        "import torch\n"
        "from voicefleet_runtime.engine.torch_whisper.batched.float8_choice import kernels_run\n"
        "assert kernels_run(torch.device('cpu'))\n"
    )
    run_python(check)


def test_float8_is_chosen_where_it_pays_and_fits_more_sequences() -> None:
    cpu = torch.device("cpu")
    assert not float8_cross_for("auto", cpu)  # a CPU reads float8 no faster
    assert float8_cross_for("on", cpu)  # allowed there, to check the numbers
    assert not float8_cross_for("off", cpu)
    dims, budget = LARGE_V3_DIMENSIONS, 8.0
    full = slots_for_budget(dims, torch.bfloat16, budget, 1024)
    float8 = slots_for_budget(dims, torch.bfloat16, budget, 1024, float8_cross=True)
    # Cross-attention is 1500 of a slot's 1948 positions: halving it fits ~1.6x the slots.
    assert float8 >= 1.5 * full
