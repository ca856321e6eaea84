"""Which of our engines the GPU batching bench drives, behind one small interface.

The sequential `TorchWhisperEngine` is today's baseline. The continuous-batching engine
(`voicefleet_runtime.engine.torch_whisper.batched`, issue 8) is imported when the checkout
has it; without it the bench still runs, with the sequential engine in its rows, and says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from voicefleet_runtime.engine.base import DecodeOptions, Segment, TranscriptionInfo
from voicefleet_runtime.engine.models import ResolvedModel
from voicefleet_runtime.engine.torch_whisper import TorchWhisperEngine
from voicefleet_runtime.engine.torch_whisper.model import LARGE_V3_DIMENSIONS, WhisperDimensions

BATCHED_MODULE = "voicefleet_runtime.engine.torch_whisper.batched"
ENCODER_BATCH = 32
"""Windows per encoder pass in the batched engine: large enough to fill an H200."""
CACHE_GIB_PER_GPU = 60.0
"""KV-cache budget per GPU: 128 large-v3 slots need about 40 GiB (cross-attention dominates)."""
CPU_CACHE_GIB = 1.0


def batched_module() -> ModuleType | None:
    try:
        return importlib.import_module(BATCHED_MODULE)
    except ImportError:
        return None


def large_shape() -> WhisperDimensions:
    """Whisper large-v3's shape (1.55 B parameters)."""
    return LARGE_V3_DIMENSIONS


def tiny_shape() -> WhisperDimensions:
    """tiny.en's shape: the --quick stand-in for the large shape (tiny.en lends its tokens)."""
    return WhisperDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)


@dataclass
class OurEngine:
    """One of our engines and what the bench reads off it."""

    engine: Any
    """TorchWhisperEngine or BatchedWhisperEngine: both speak the SpeechEngine contract."""
    label: str
    encoder: nn.Module
    dimensions: WhisperDimensions
    encoder_batch: int
    batched: bool

    def transcribe(
        self, audio: NDArray[np.float32], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        info: TranscriptionInfo
        segments: Iterator[Segment]
        info, segments = self.engine.transcribe(audio, options)
        return info, segments

    def step_ms(self) -> float | None:
        """Mean decode step (one step of the whole batch) since the last reset."""
        return self._step_stat("step_ms")

    def step_gpu_ms(self) -> float | None:
        """Mean GPU time of a replayed decode step (CUDA events) since the last reset."""
        return self._step_stat("step_gpu_ms")

    def _step_stat(self, key: str) -> float | None:
        """The batched engine's figure, None for the sequential engine or before any step."""
        if not self.batched:
            return None
        return float(self.engine.stats()[key]) or None

    @property
    def float8_cross(self) -> bool:
        """Whether its decoder keeps cross-attention keys and values as float8."""
        return self.batched and bool(self.engine.loops[0].cache.float8_cross)

    def reset_stats(self) -> None:
        if self.batched:
            self.engine.reset_stats()

    def close(self) -> None:
        if self.batched:
            self.engine.close()


class EngineFactory:
    def __init__(self, device: str, precision: str, server_env: dict[str, str]) -> None:
        self.device = device
        self.precision = precision
        self._extra_env = server_env
        self._batched = batched_module()

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def label(self) -> str:
        """The path name of our in-process rows."""
        return "in-process" if self._batched is not None else "in-process (sequential)"

    @property
    def description(self) -> str:
        if self._batched is None:
            return "sequential TorchWhisperEngine (no batched engine in this checkout)"
        return f"continuous batching ({BATCHED_MODULE})"

    def _one_device(self) -> str:
        return "cuda:0" if self.cuda else "cpu"

    def sequential(self, model: ResolvedModel) -> OurEngine:
        engine = TorchWhisperEngine.load(model, "cuda" if self.cuda else "cpu", self.precision)
        whisper = engine._model
        return OurEngine(engine, "sequential (today)", whisper.encoder, whisper.dims, 1, False)

    def _config(
        self,
        max_sequences: int,
        forced_length: int = 0,
        float8: str = "auto",
        overlap: str = "auto",
    ) -> Any:
        assert self._batched is not None
        return self._batched.BatchingConfig(
            max_sequences=max_sequences,
            memory_gib=CACHE_GIB_PER_GPU if self.cuda else CPU_CACHE_GIB,
            encoder_batch=ENCODER_BATCH if self.cuda else 4,
            cuda_graphs=self.cuda,
            forced_length=forced_length,
            compile_encoder=self.cuda,  # as VOICEFLEET_BATCH_COMPILE_ENCODER=auto serves
            float8_cross_attention=float8,  # auto as served; off for the baseline rows
            overlap_steps=overlap,  # likewise
        )

    def _wrap(self, engine: Any, label: str) -> OurEngine:
        loop = engine.loops[0]
        # The encoder column times what the loop runs: compiled (an nn.Module too) or not.
        encoder = loop.encode if isinstance(loop.encode, nn.Module) else loop.model.encoder
        return OurEngine(engine, label, encoder, engine.dims, engine.config.encoder_batch, True)

    def batched(self, model: ResolvedModel, max_batch: int, float8: str = "auto") -> OurEngine:
        """Our engine for the in-process rows, on one GPU."""
        if self._batched is None:
            return replace(self.sequential(model), label=self.label)
        engine = self._batched.BatchedWhisperEngine.load(
            model, self._one_device(), self.precision, self._config(max_batch, 0, float8)
        )
        return self._wrap(engine, self.label)

    def random(
        self,
        dims: WhisperDimensions,
        tokenizer_model: ResolvedModel,
        forced_length: int,
        max_batch: int,
        gpus: int,
        precision: str,
        float8: str = "auto",
        overlap: str = "auto",
    ) -> OurEngine | None:
        """Random weights of shape `dims`, `forced_length` tokens a window; None without the
        batched engine (the sequential one cannot force a length)."""
        if self._batched is None:
            return None
        device = self._one_device() if gpus == 1 else "cuda"
        engine = self._batched.BatchedWhisperEngine.random(
            dims,
            tokenizer_model=tokenizer_model,
            device=device,
            precision=precision,
            config=self._config(max_batch, forced_length, float8, overlap),
            seed=0,
        )
        return self._wrap(engine, self.label)

    def server_env(self) -> dict[str, str]:
        """Settings of `voicefleet serve` for the HTTP rows (BATCHING_API.md's names)."""
        # VAD off: every clip is one window anyway, and faster-whisper's VAD needs
        # ctranslate2, which the device image cannot load.
        env = {"VOICEFLEET_BEAM_SIZE": "1", "VOICEFLEET_VAD": "off"}
        if self._batched is not None:
            env |= {
                "VOICEFLEET_CONTINUOUS_BATCHING": "on",
                "VOICEFLEET_BATCH_MAX_SEQUENCES": "128",
                "VOICEFLEET_BATCH_MEMORY_GIB": str(CACHE_GIB_PER_GPU if self.cuda else 1),
                "VOICEFLEET_CUDA_GRAPHS": "true" if self.cuda else "false",
            }
        return env | self._extra_env


def free_cuda_memory() -> None:
    """Give what a dropped engine held back, so the next rows' peaks are their own."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
