"""A request as the batching loop sees it: its windows, its per-sequence options, its results.

The request's own thread waits on it (for the detected language, for each window's result
in order); the loop thread fills it. All state changes happen under the request's condition.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import DecodeOptions
from voicefleet_runtime.engine.torch_whisper.decoding import WindowDecoding
from voicefleet_runtime.engine.torch_whisper.engine import FallbackPolicy

_request_ids = itertools.count()


class RequestCancelled(Exception):
    """The request was closed (its client left) before this result was ready."""


@dataclass
class WindowJob:
    """One window of ≤30 s of one request: what the encoder takes and the decoder decodes."""

    request: RequestHandle
    index: int
    start_frame: int
    """Where the window starts in the request's audio, in mel frames (10 ms)."""
    frames: int
    """Mel frames of audio in the window (the rest of the 3000 is padding)."""
    features: torch.Tensor
    """(n_mels, 3000) log-mel frames, in the model's dtype."""
    temperature_index: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class WindowOutcome:
    decoding: WindowDecoding
    alignment: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    """When the request wants word timestamps: the alignment heads' cross-attention
    (heads, text tokens + 1, audio positions) and each text token's probability."""


@dataclass
class RequestHandle:
    options: DecodeOptions
    initial_tokens_before_sot: list[int]
    """<|startofprev|> and prompt tokens, or nothing."""
    language: str | None
    """Known up front (given, or an English-only model), or None until window 0 detects it."""
    language_probability: float = 1.0
    windows: list[WindowJob] = field(default_factory=list)
    id: int = field(default_factory=lambda: next(_request_ids))
    results: dict[int, WindowOutcome] = field(default_factory=dict)
    policy: FallbackPolicy | None = None
    """Quality thresholds of this request, when it set its own (None: the engine's)."""
    settled: int = 0
    """Windows whose final result was delivered."""
    cancelled: bool = False
    error: BaseException | None = None
    condition: threading.Condition = field(default_factory=threading.Condition)

    def resolve_language(self, language: str, probability: float) -> None:
        with self.condition:
            self.language, self.language_probability = language, probability
            self.condition.notify_all()

    def deliver(self, index: int, outcome: WindowOutcome) -> None:
        with self.condition:
            self.results[index] = outcome
            self.settled += 1
            self.condition.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.condition:
            self.error = error
            self.condition.notify_all()

    def _raise_if_over(self) -> None:
        if self.error is not None:
            raise self.error
        if self.cancelled:
            raise RequestCancelled(f"request {self.id} was cancelled")

    def wait_language(self) -> tuple[str, float]:
        with self.condition:
            while self.language is None:
                self._raise_if_over()
                self.condition.wait()
            return self.language, self.language_probability

    def wait_result(self, index: int) -> WindowOutcome:
        with self.condition:
            while index not in self.results:
                self._raise_if_over()
                self.condition.wait()
            return self.results.pop(index)

    @property
    def finished(self) -> bool:
        """Over for the loop: cancelled, failed, or every window settled."""
        return self.cancelled or self.error is not None or self.settled == len(self.windows)
