"""What the GPU batching bench measures besides throughput: peak rate, encoder FLOPs, memory."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from voicefleet_runtime.engine.torch_whisper.model import WhisperDimensions

WINDOW_FRAMES = 3000
"""Log-mel frames of one 30 s window; the encoder halves them (conv2's stride)."""
FFN_MULTIPLIER = 4
GIB = 2**30


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(run: object, device: torch.device, repeats: int) -> float:
    """Mean seconds of `run()` over `repeats`, after warm-ups, synchronised on `device`."""
    assert callable(run)
    for _ in range(2):
        run()
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    _synchronise(device)
    return (time.perf_counter() - started) / repeats


def gpu_ms(work: Callable[[], object], repeats: int = 20) -> float:
    """Mean GPU milliseconds of `work()` over `repeats`, after warm-ups, by CUDA events."""
    for _ in range(3):
        work()
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        work()
    end.record()
    torch.cuda.synchronize()
    return float(start.elapsed_time(end)) / repeats


def bf16_peak_tflops(device: str, size: int = 8192) -> float:
    """TFLOP/s of a size^3 bf16 matmul on random data (the ceiling the encoder is quoted
    against; METHOD.md: never zeros, which run faster)."""
    target = torch.device("cuda", 0) if device.startswith("cuda") else torch.device("cpu")
    generator = torch.Generator(device=target).manual_seed(0)
    a = torch.randn(size, size, device=target, dtype=torch.bfloat16, generator=generator)
    b = torch.randn(size, size, device=target, dtype=torch.bfloat16, generator=generator)
    seconds = _seconds(lambda: a @ b, target, 10 if target.type == "cuda" else 2)
    return 2 * size**3 / seconds / 1e12


def encoder_flops(dims: WhisperDimensions) -> float:
    """Floating-point operations of one 30 s window through the encoder (matmuls and convs;
    norms and activations are a rounding error)."""
    width, positions = dims.n_audio_state, dims.n_audio_ctx
    convolutions = 2 * 3 * (WINDOW_FRAMES * dims.n_mels * width + positions * width * width)
    projections = 2 * positions * width * width * (3 + 1 + 2 * FFN_MULTIPLIER)
    attention = 2 * 2 * positions * positions * width
    return float(convolutions + dims.n_audio_layer * (projections + attention))


def time_encoder(encoder: nn.Module, dims: WhisperDimensions, batch: int, device: str) -> float:
    """Seconds per window of `encoder` at `batch` windows per pass, on random log-mels."""
    parameter = next(encoder.parameters())
    generator = torch.Generator(device=parameter.device).manual_seed(0)
    mel = torch.randn(
        batch, dims.n_mels, WINDOW_FRAMES, generator=generator, device=parameter.device
    ).to(parameter.dtype)
    with torch.inference_mode():
        seconds = _seconds(
            lambda: encoder(mel), parameter.device, 5 if parameter.device.type == "cuda" else 1
        )
    return seconds / batch


class GpuMemory:
    """Peak memory this process allocated on its GPUs since the last reset, in GiB."""

    def __init__(self, device: str) -> None:
        self._cuda = device.startswith("cuda") and torch.cuda.is_available()

    def reset(self) -> None:
        if self._cuda:
            for index in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(index)

    def peak_gib(self) -> float | None:
        if not self._cuda:
            return None
        return (
            sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / GIB
        )
