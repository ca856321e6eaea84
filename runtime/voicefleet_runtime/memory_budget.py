"""How much memory one runtime process may use, from its settings: what a pod limit is set from.

Whatever a request costs, the runtime bounds it (uploads spool to disk past 1 MiB, decoding
stops at the duration and work limits, queued requests hold no decoded audio), so the process
peak is the sum of a few terms, each measured here on tiny.en and base on a 2-core CPU:

- the runtime itself: Python, FFmpeg, CTranslate2 (and torch for the torch engine);
- the model: its weights, twice over on a CPU (CTranslate2 converts them while loading), once
  on a GPU (the host copy while loading) plus the CUDA context;
- per running request (`concurrency` of them): the decoded audio, 64 KB per second, plus what
  the engine derives from it. faster-whisper's sequential decoder computes the features of the
  whole file at once (0.75 MB per audio second at its peak: 1.3 GB for 30 minutes), so that is
  what long files cost unless they go through the batched pipeline (features per 30 s chunk,
  0.13 MB per second); the torch engine's features cost 0.38 MB per second on a CPU. On a GPU
  it computes them on the device, and the host keeps only a long request's windows waiting
  their turn (0.1 MB per second at most, below);
- per upload in progress or request queued: at most 1 MiB in memory (Starlette spools the rest
  to the /tmp volume);
- with the torch engine on a GPU (continuous batching), the processes that decode uploads
  (audio_workers.py): each one's interpreter and FFmpeg (80 MiB measured: 78 MB resident,
  39 MB of it its own), plus the audio it decodes twice over while it is sent back (the
  uploads queued for it, two of 25 MiB at most by default, fit in that);
- with several API processes (api_processes.py), each one (95-97 MB resident measured after
  requests on tiny.en), each admitting up to the limits on its own, and a running request's
  decoded audio held twice: in its API process and in the engine process.

The operator sets the runtime container's default memory request and limit from `total_mib`.
This module is pure (no imports beyond the standard library) so the operator can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIB = 1024 * 1024
RUNTIME_MIB = {"faster-whisper": 320, "torch": 900}
"""Resident size of an idle runtime process before its model, by engine."""
CUDA_CONTEXT_MIB = 1024
DECODED_AUDIO_BYTES_PER_SECOND = 16_000 * 4
FEATURE_BYTES_PER_SECOND = {
    "faster-whisper": 768 * 1024,
    "faster-whisper-batched": 128 * 1024,
    "torch": 384 * 1024,
    # Host memory only: with VAD every two windows still advance at least 30 s (windows.py),
    # and a window is 3000 frames of at most 128 mels in at most float32.
    "torch-gpu": 2 * 128 * 100 * 4,
}
"""The engine's peak host working memory per audio second of a request (features and their
STFT, or on a GPU the windows that wait on the host)."""
DECODER_WORKING_MIB = 32
"""FFmpeg's decoder and resampler state and one frame, per running request."""
SPOOLED_UPLOAD_MIB = 1
DECODE_PROCESS_MIB = 80
API_PROCESS_MIB = 100
HEADROOM = 1.25
"""Allocator fragmentation and what the measurements missed."""


@dataclass(frozen=True)
class MemoryBudget:
    runtime_mib: int
    model_mib: int
    per_request_mib: int
    concurrency: int
    uploads_mib: int
    decode_processes_mib: int = 0
    api_processes_mib: int = 0

    @property
    def total_mib(self) -> int:
        used = (
            self.runtime_mib
            + self.model_mib
            + self.per_request_mib * self.concurrency
            + self.uploads_mib
            + self.decode_processes_mib
            + self.api_processes_mib
        )
        return math.ceil(used * HEADROOM / 64) * 64

    def describe(self) -> str:
        return (
            f"{self.total_mib} MiB = ({self.runtime_mib} runtime + {self.model_mib} model + "
            f"{self.concurrency} x {self.per_request_mib} per request + {self.uploads_mib} "
            f"uploads + {self.decode_processes_mib} decoding processes + "
            f"{self.api_processes_mib} API processes) x {HEADROOM} headroom"
        )


def per_request_mib(
    engine: str, max_audio_seconds: float, batched_min_audio_seconds: float | None, gpu: bool
) -> int:
    """The peak of one running request in host memory. `batched_min_audio_seconds` None: long
    audio is not batched (the torch engine, or faster-whisper with batching off)."""
    audio = max_audio_seconds * DECODED_AUDIO_BYTES_PER_SECOND
    if engine == "torch":
        features = max_audio_seconds * FEATURE_BYTES_PER_SECOND["torch-gpu" if gpu else "torch"]
    elif batched_min_audio_seconds is None or batched_min_audio_seconds <= 0:
        features = max_audio_seconds * FEATURE_BYTES_PER_SECOND["faster-whisper"]
    else:
        sequential = min(max_audio_seconds, batched_min_audio_seconds)
        features = max(
            sequential * FEATURE_BYTES_PER_SECOND["faster-whisper"],
            max_audio_seconds * FEATURE_BYTES_PER_SECOND["faster-whisper-batched"],
        )
    return DECODER_WORKING_MIB + math.ceil((audio + features) / MIB)


def memory_budget(
    *,
    engine: str,
    gpu: bool,
    model_weights_mib: float,
    concurrency: int,
    queue_size: int,
    max_uploads_in_progress: int,
    max_audio_seconds: float,
    batched_min_audio_seconds: float | None,
    decode_processes: int = 0,
    api_processes: int = 1,
) -> MemoryBudget:
    """`decode_processes`: the upload-decoding processes the server starts (audio_workers.py);
    `api_processes`: VOICEFLEET_API_PROCESSES, each applying the admission limits."""
    model = model_weights_mib + CUDA_CONTEXT_MIB if gpu else 2 * model_weights_mib
    audio_mib = max_audio_seconds * DECODED_AUDIO_BYTES_PER_SECOND / MIB
    decoding = decode_processes * math.ceil(DECODE_PROCESS_MIB + 2 * audio_mib)
    request = per_request_mib(engine, max_audio_seconds, batched_min_audio_seconds, gpu)
    split = api_processes > 1
    return MemoryBudget(
        runtime_mib=RUNTIME_MIB.get(engine, max(RUNTIME_MIB.values())),
        model_mib=math.ceil(model),
        per_request_mib=request + math.ceil(audio_mib) if split else request,
        concurrency=concurrency * api_processes,
        uploads_mib=(max_uploads_in_progress + queue_size) * SPOOLED_UPLOAD_MIB * api_processes,
        decode_processes_mib=decoding,
        api_processes_mib=API_PROCESS_MIB * api_processes if split else 0,
    )
