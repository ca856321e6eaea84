"""Map the `device` and `precision` settings to what CTranslate2 will actually run.

An unsupported combination (float16 on a CPU, cuda without a GPU) is a startup error: a
silent fallback would make a fleet run at a different speed and accuracy than configured.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass

from voicefleet_runtime.engine.support import AUTO_PRECISION

AUTO_COMPUTE_TYPE = AUTO_PRECISION["faster-whisper"]
"""What `precision: auto` means for CTranslate2, per device."""


class UnsupportedPrecisionError(ValueError):
    """The device cannot run the requested precision, or the device is not there."""


@dataclass(frozen=True)
class Placement:
    device: str
    """cpu or cuda."""
    compute_type: str
    """A CTranslate2 compute type."""


def _cuda_device_count() -> int:
    import ctranslate2

    count: int = ctranslate2.get_cuda_device_count()
    return count


def _supported_compute_types(device: str) -> Set[str]:
    import ctranslate2

    supported: set[str] = set(ctranslate2.get_supported_compute_types(device))
    return supported


def resolve_device(device: str, cuda_device_count: Callable[[], int] = _cuda_device_count) -> str:
    if device == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    if device == "cuda" and cuda_device_count() == 0:
        raise UnsupportedPrecisionError(
            "device cuda was requested but CTranslate2 sees no CUDA device "
            "(check the GPU request, the NVIDIA runtime and CUDA_VISIBLE_DEVICES)"
        )
    if device not in ("cpu", "cuda"):
        raise UnsupportedPrecisionError(f"unknown device {device!r}: use cpu, cuda or auto")
    return device


def resolve_placement(
    device: str,
    precision: str,
    cuda_device_count: Callable[[], int] = _cuda_device_count,
    supported_compute_types: Callable[[str], Set[str]] = _supported_compute_types,
) -> Placement:
    """The device and compute type to load with, or a clear error naming what is possible."""
    resolved_device = resolve_device(device, cuda_device_count)
    compute_type = AUTO_COMPUTE_TYPE[resolved_device] if precision == "auto" else precision
    supported = supported_compute_types(resolved_device)
    if compute_type not in supported:
        raise UnsupportedPrecisionError(
            f"precision {compute_type} is not supported on {resolved_device} here; "
            f"supported: {', '.join(sorted(supported))}"
        )
    return Placement(resolved_device, compute_type)
