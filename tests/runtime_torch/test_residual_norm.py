"""The decode step's fused residual add and layer norm (batched/residual_norm.py), in
Triton's interpreter, against torch's add and nn.LayerNorm with tiny.en's real norms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.runtime_torch.triton_interpreter import run_case
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.model import DecoderLayer

pytestmark = pytest.mark.slow

ADD_NORM_RUN = """
import sys, torch
from voicefleet_runtime.engine.torch_whisper.batched.residual_norm import add_layer_norm
case = torch.load(sys.argv[1])
norm = torch.nn.LayerNorm(case["weight"].shape[0], eps=case["eps"])
norm.load_state_dict({"weight": case["weight"], "bias": case["bias"]})
total, normed = add_layer_norm(case["residual"], case["update"], norm)
torch.save({"total": total, "normed": normed}, sys.argv[2])
"""


def test_the_fused_kernel_adds_and_normalises_as_torch_does(
    tiny_en_engine: TorchWhisperEngine, tmp_path: Path
) -> None:
    """Rows of a fused projection's slice (a row stride wider than the width), as the step
    passes them; width 384 is not a power of two, so the kernel's tail is masked."""
    layer: DecoderLayer = tiny_en_engine._model.decoder.layers[1]  # type: ignore[assignment]
    norm = layer.attention.layer_norm
    width = norm.normalized_shape[0]
    generator = torch.Generator().manual_seed(4)
    residual = torch.randn(5, width, generator=generator) * 3 + 1
    update = torch.randn(5, 3 * width, generator=generator)[:, width : 2 * width]
    case = {
        "residual": residual,
        "update": update,
        "weight": norm.weight.detach(),
        "bias": norm.bias.detach(),
        "eps": norm.eps,
    }
    result = run_case(ADD_NORM_RUN, case, tmp_path)
    total = residual + update
    assert torch.equal(result["total"], total)
    with torch.inference_mode():
        expected = norm(total)
    torch.testing.assert_close(result["normed"], expected, rtol=1e-5, atol=1e-5)
