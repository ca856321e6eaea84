"""Unsupported devices and precisions fail at load with a message that says what to do."""

from __future__ import annotations

import pytest
import torch

from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.precision import resolve_torch_placement


def test_auto_on_cpu_is_float32() -> None:
    placement = resolve_torch_placement("cpu", "auto")
    assert (placement.device, placement.dtype) == ("cpu", torch.float32)


def test_bfloat16_on_cpu_is_allowed() -> None:
    assert resolve_torch_placement("cpu", "bfloat16").dtype == torch.bfloat16


@pytest.mark.parametrize("precision", ["int8", "int8_float16", "int8_float32"])
def test_int8_points_to_faster_whisper(tiny_en_model: ResolvedModel, precision: str) -> None:
    with pytest.raises(ValueError, match="faster-whisper"):
        TorchWhisperEngine.load(tiny_en_model, "cpu", precision, 1)


def test_float16_on_cpu_is_refused(tiny_en_model: ResolvedModel) -> None:
    with pytest.raises(ValueError, match=r"float16 is not supported .* on cpu"):
        TorchWhisperEngine.load(tiny_en_model, "cpu", "float16", 1)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        resolve_torch_placement("tpu", "auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_torch_placement("cuda", "auto")
    assert resolve_torch_placement("auto", "auto").device == "cpu"
