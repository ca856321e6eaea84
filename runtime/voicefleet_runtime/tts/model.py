"""Kokoro-82M on onnxruntime (CPU), with explicit thread settings.

On a shared, loaded machine onnxruntime's default spin-waiting threads made two threads slower
than one: the thread counts are set, and spinning is off, so an idle slot costs no CPU.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

SAMPLE_RATE = 24_000
MODEL_SPEED_RANGE = (0.5, 2.0)
"""Speeds the model itself renders well; beyond them the rest is a time-stretch (speed.py)."""


class KokoroModel(Protocol):
    """A Kokoro backend: onnxruntime on CPU (here) or torch (torch_model.py)."""

    @property
    def placement(self) -> str:
        """Where it runs, for the logs."""
        ...

    def synthesize(
        self, token_ids: list[int], style: NDArray[np.float32], speed: float
    ) -> NDArray[np.float32]: ...


class KokoroOnnx:
    def __init__(self, model: bytes, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._local = threading.local()
        self.threads = threads

    @property
    def placement(self) -> str:
        return f"onnxruntime CPU, {self.threads} thread(s)"

    def input_shapes(self) -> dict[str, list[object]]:
        """The graph's inputs and their shapes (the batch axis is fixed at 1)."""
        return {item.name: list(item.shape) for item in self._session.get_inputs()}

    def synthesize(
        self, token_ids: list[int], style: NDArray[np.float32], speed: float
    ) -> NDArray[np.float32]:
        """One chunk (pads included) to 24 kHz mono float32; safe from several threads."""
        low, high = MODEL_SPEED_RANGE
        outputs = self._session.run(
            None,
            {
                "tokens": np.asarray([token_ids], dtype=np.int64),
                "style": np.asarray(style, dtype=np.float32).reshape(1, -1),
                "speed": np.asarray([min(max(speed, low), high)], dtype=np.float32),
            },
        )
        audio: NDArray[np.float32] = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        return audio
