"""Which torch device and dtype the torch engine runs with; refuses what it cannot do."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from voicefleet_runtime.engine.support import AUTO_PRECISION, ENGINE_PRECISIONS

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SUPPORTED = {
    device: tuple(p for p in precisions if p != "auto")
    for device, precisions in ENGINE_PRECISIONS["torch"].items()
}
_AUTO = AUTO_PRECISION["torch"]


@dataclass(frozen=True)
class TorchPlacement:
    device: str
    precision: str

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]


def resolve_torch_placement(device: str, precision: str) -> TorchPlacement:
    """Map the settings to a device and dtype, or raise ValueError saying what is possible."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in _SUPPORTED:
        raise ValueError(f"unknown device {device!r} for the torch engine: use cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device cuda was requested but torch sees no CUDA device (is this a CPU-only torch "
            "build, or is the GPU missing from the pod?)"
        )
    if precision.startswith("int8"):
        raise ValueError(
            f"precision {precision} is not supported by the torch engine, which runs float "
            "weights only; use the faster-whisper engine for int8 quantization"
        )
    chosen = _AUTO[device] if precision == "auto" else precision
    if chosen not in _SUPPORTED[device]:
        raise ValueError(
            f"precision {chosen} is not supported by the torch engine on {device}; "
            f"supported there: {', '.join(_SUPPORTED[device])}"
        )
    return TorchPlacement(device, chosen)
