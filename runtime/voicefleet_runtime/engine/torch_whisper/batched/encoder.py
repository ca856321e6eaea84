"""The loop's encoder pass: the module as it is, or torch.compile'd; on a GPU, captured as
CUDA graphs (CapturedEncoder).

Compiled, the layer norms, GELUs, bias and residual adds around cuBLAS's products and the
attention kernel fuse: on the H200 the large-v3 shape's encoder went from 47-49% of the bf16
peak to 59% at 32 windows (bench/results/batching-notes.md). It compiles here, at load, once
per batch kind (one window, or several: dynamic shapes), so that no request pays for it;
where the compiler cannot build (no C compiler in the image, say) the loop keeps the module,
and says so once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from voicefleet_runtime.engine.torch_whisper.features import N_FRAMES_PER_CHUNK
from voicefleet_runtime.engine.torch_whisper.model import WhisperDimensions
from voicefleet_runtime.failure import briefly

logger = logging.getLogger("voicefleet.runtime.batching")

Encoder = Callable[[torch.Tensor], torch.Tensor]


def compiled_encoder(encoder: nn.Module, n_mels: int, dtype: torch.dtype) -> Encoder:
    """`encoder` compiled and run once per batch kind; the module itself if that fails."""
    device = next(encoder.parameters()).device
    compiled: Encoder = torch.compile(encoder, dynamic=True)
    try:
        with torch.inference_mode():
            for windows in (1, 2):
                compiled(torch.randn(windows, n_mels, N_FRAMES_PER_CHUNK, device=device).to(dtype))
    except Exception as error:  # the compiler's failure, whatever its type
        logger.warning("compiling the encoder failed (%s); running it op by op", briefly(error))
        return encoder
    return compiled


class CapturedEncoder:
    """The encoder pass as a CUDA graph, one per pass size from 1 to `max_windows` windows.

    A small model's pass is bound by its launches, not its arithmetic: tiny.en's eager encoder
    took 23% of the batching loop's thread on an H200 serving 64 clients, the biggest single
    share (bench/results/server_profile-h200.txt). Replayed, a pass costs the host one launch.
    Each size has its own graph, so no pass computes padding; the graphs share one memory pool
    and one output buffer, which the caller reads (projects) before the next pass, on the same
    stream."""

    def __init__(self, encode: Encoder, mel: torch.Tensor, audio: torch.Tensor) -> None:
        self._mel = mel
        self._audio = audio
        self._graphs: list[torch.cuda.CUDAGraph] = []
        device = mel.device
        stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for windows in range(1, len(mel) + 1):  # kernels chosen and loaded before capture
                encode(mel[:windows])
        torch.cuda.current_stream(device).wait_stream(stream)
        pool = torch.cuda.graph_pool_handle()
        for windows in range(1, len(mel) + 1):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(
                graph, pool=pool, stream=stream, capture_error_mode="thread_local"
            ):
                audio[:windows].copy_(encode(mel[:windows]))
            self._graphs.append(graph)

    @property
    def graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        windows = mel.shape[0]
        self._mel[:windows].copy_(mel)
        self._graphs[windows - 1].replay()
        return self._audio[:windows]


def captured_encoder(
    encode: Encoder,
    dims: WhisperDimensions,
    dtype: torch.dtype,
    device: torch.device,
    max_windows: int,
) -> Encoder:
    """`encode` as CapturedEncoder's graphs; `encode` itself, with a warning, where capturing
    fails (it has not on torch 2.11 with CUDA 13; the fallback keeps a new driver or compiler
    from failing the load)."""
    try:
        with torch.cuda.device(device), torch.inference_mode():
            mel = torch.zeros(
                max_windows, dims.n_mels, N_FRAMES_PER_CHUNK, dtype=dtype, device=device
            )
            audio = torch.empty(
                max_windows, dims.n_audio_ctx, dims.n_audio_state, dtype=dtype, device=device
            )
            return CapturedEncoder(encode, mel, audio)
    except Exception as error:  # a capture's failure, whatever its type
        logger.warning("capturing the encoder failed (%s); running it op by op", briefly(error))
        return encode
