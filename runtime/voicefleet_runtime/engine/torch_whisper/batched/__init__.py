"""Continuous batching for the torch Whisper engine: many requests, one GPU batch."""

from voicefleet_runtime.engine.torch_whisper.batched.engine import (
    BatchedSegments,
    BatchedWhisperEngine,
    BatchingConfig,
)

__all__ = ["BatchedSegments", "BatchedWhisperEngine", "BatchingConfig"]
