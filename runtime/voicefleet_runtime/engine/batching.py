"""When long audio goes through faster-whisper's BatchedInferencePipeline.

Batching decodes several VAD chunks of one file at once, each without the previous chunk's
text as a prompt. bench/batched_inference.py measured it on two CPU cores (beam 5, int8;
bench/results/batched_inference-cpu2.txt): on 168 s of English, 1.5 to 2 times the
sequential decoder's throughput for tiny.en and base, with transcripts as close to the read
text (tiny.en WER 0.067 against 0.059) or closer (base 0.059 against 0.169: the sequential
decoder repeated phrases). The one slower case was tiny.en, an English-only model, on the
60 s English-then-German clip, where batching decoded German the sequential run dropped. On
GPUs batching is what the pipeline is built for (not measured here). So `auto` batches on
every device this runtime knows; `off` is the escape hatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BatchedMode = Literal["auto", "on", "off"]

BATCHING_HELPS_ON = frozenset({"cpu", "cuda"})
"""Devices where batched long-audio decoding was found faster: what `auto` turns it on for."""


def batching_enabled(mode: BatchedMode, device: str) -> bool:
    """`device` is the resolved one (cpu or cuda), not `auto`."""
    if mode == "auto":
        return device in BATCHING_HELPS_ON
    return mode == "on"


@dataclass(frozen=True)
class BatchingPolicy:
    enabled: bool
    batch_size: int
    min_audio_seconds: float
    """0 turns batching off, as it always has for VOICEFLEET_BATCHED_MIN_AUDIO_SECONDS."""

    def applies_to(self, duration: float) -> bool:
        return self.enabled and self.min_audio_seconds > 0 and duration >= self.min_audio_seconds


def batching_policy(
    mode: BatchedMode, device: str, batch_size: int, min_audio_seconds: float
) -> BatchingPolicy:
    return BatchingPolicy(batching_enabled(mode, device), batch_size, min_audio_seconds)
