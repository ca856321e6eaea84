"""What each engine runs, as data: the engines check it at start-up, the operator at admission.

Kept free of torch and CTranslate2 imports so the operator (and its CRD generator) can read
it. The precisions listed for a device are those every machine of that kind runs: CTranslate2
on a CPU runs float16/bfloat16 types only on some processors, so a fleet never relies on them.
A GPU's own limits (bfloat16 needs compute capability 8.0) depend on the card and are left to
the engine's start-up check.
"""

from __future__ import annotations

from collections.abc import Mapping

from voicefleet_runtime.engine.capabilities import EngineCapabilities
from voicefleet_runtime.settings import Engine, Precision

DeviceKind = str
"""cpu or cuda."""

ENGINE_PRECISIONS: Mapping[Engine, Mapping[DeviceKind, tuple[Precision, ...]]] = {
    "faster-whisper": {
        "cpu": ("auto", "float32", "int8", "int8_float32"),
        "cuda": (
            "auto",
            "float32",
            "float16",
            "bfloat16",
            "int8",
            "int8_float16",
            "int8_bfloat16",
            "int8_float32",
        ),
    },
    # The torch engine runs float weights only: no int8 of any kind.
    "torch": {
        "cpu": ("auto", "float32", "bfloat16"),
        "cuda": ("auto", "float32", "float16", "bfloat16"),
    },
}
"""Precisions (`auto` included) each engine runs on each device kind."""

AUTO_PRECISION: Mapping[Engine, Mapping[DeviceKind, Precision]] = {
    "faster-whisper": {"cuda": "float16", "cpu": "int8"},
    "torch": {"cuda": "float16", "cpu": "float32"},
}
"""What `precision: auto` means per engine and device: the usual fastest type without
visible accuracy loss."""

ENGINE_CAPABILITIES: Mapping[Engine, EngineCapabilities] = {
    "faster-whisper": EngineCapabilities(vad=True, word_timestamps=True),
    "torch": EngineCapabilities(vad=False, word_timestamps=False),
}
"""What each engine can do beyond plain decoding."""


def runs(engine: Engine, device: DeviceKind, precision: Precision) -> bool:
    """Whether `engine` runs `precision` on every `device` (cpu or cuda) machine."""
    return precision in ENGINE_PRECISIONS[engine][device]
