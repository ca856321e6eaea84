"""What every Kokoro backend shares: its sample rate, its speed range and its interface.

The backends live apart (onnx_model.py, native/backend.py) and are imported only when chosen, so
a process that never speaks never imports onnxruntime or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

SAMPLE_RATE = 24_000
MODEL_SPEED_RANGE = (0.5, 2.0)
"""Speeds the model itself renders well; beyond them the rest is a time-stretch (speed.py)."""


@dataclass(frozen=True)
class BackendInfo:
    """What `voicefleet_model_info` says about a backend."""

    backend: str
    device: str
    compute_type: str


class KokoroModel(Protocol):
    """A Kokoro backend: onnxruntime on CPU (onnx_model.py) or native torch (native/)."""

    @property
    def placement(self) -> str:
        """Where it runs, for the logs."""
        ...

    @property
    def info(self) -> BackendInfo: ...

    def synthesize(
        self, token_ids: list[int], style: NDArray[np.float32], speed: float
    ) -> NDArray[np.float32]: ...

    def warm_up(self, requests: list[tuple[list[int], NDArray[np.float32]]]) -> None:
        """Speak these (token ids, style) chunks at the model's own speed, before serving."""
        ...

    def close(self) -> None:
        """Finish what is running and release workers (the server's shutdown)."""
        ...
