"""Run one request through admission, decoding and the engine; stream or collect segments."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import numpy as np
from fastapi import Request, UploadFile
from numpy.typing import NDArray

from voicefleet_runtime.access_log import AUDIO_SECONDS_KEY
from voicefleet_runtime.audio import decode_audio
from voicefleet_runtime.engine.base import (
    SAMPLE_RATE,
    DecodeOptions,
    EngineError,
    Segment,
    SpeechEngine,
    TranscriptionInfo,
)
from voicefleet_runtime.errors import ApiError
from voicefleet_runtime.formats import Transcript
from voicefleet_runtime.state import RuntimeState

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""OpenAI's meaning of temperature 0: start greedy, raise it when a decode looks degenerate."""

_END = object()


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str | None
    """None: the legacy endpoint, which has no model field."""
    options: DecodeOptions


def temperature_ladder(temperature: float) -> tuple[float, ...]:
    return FALLBACK_TEMPERATURES if temperature == 0 else (temperature,)


def engine_for(runtime: RuntimeState, model: str | None) -> SpeechEngine:
    engine = runtime.engine
    if engine is None:
        raise ApiError(503, "the model is still loading; retry shortly", code="model_not_ready")
    if model is not None and model not in runtime.model_names():
        raise ApiError(
            404,
            f"the model {model!r} does not exist here; this server serves "
            f"{', '.join(runtime.model_names())}",
            code="model_not_found",
            param="model",
        )
    return engine


def _with_vad(runtime: RuntimeState, options: DecodeOptions, duration: float) -> DecodeOptions:
    mode = runtime.settings.vad
    vad = mode == "on" or (mode == "auto" and duration >= runtime.settings.vad_min_audio_seconds)
    return replace(options, vad_filter=vad, beam_size=runtime.settings.beam_size)


def _engine_error(exc: EngineError) -> ApiError:
    return ApiError(400, str(exc), code="unsupported_request", param=exc.param)


def _collect(
    engine: SpeechEngine, audio: NDArray[np.float32], options: DecodeOptions
) -> tuple[TranscriptionInfo, tuple[Segment, ...]]:
    info, segments = engine.transcribe(audio, options)
    return info, tuple(segments)


async def _decode(
    runtime: RuntimeState, request: Request, upload: UploadFile
) -> tuple[NDArray[np.float32], float]:
    """The audio and its length in seconds, decoded in an engine thread (inside the slot)."""
    data = await upload.read()
    loop = asyncio.get_running_loop()
    audio = await loop.run_in_executor(
        runtime.executor, decode_audio, data, runtime.settings.max_audio_seconds
    )
    duration = audio.shape[0] / SAMPLE_RATE
    setattr(request.state, AUDIO_SECONDS_KEY, duration)
    return audio, duration


async def transcribe_upload(
    runtime: RuntimeState, request: Request, upload: UploadFile, spec: TranscriptionRequest
) -> Transcript:
    engine = engine_for(runtime, spec.model)
    loop = asyncio.get_running_loop()
    async with runtime.admission.slot() as waited:
        runtime.metrics.queue_wait.observe(waited)
        audio, duration = await _decode(runtime, request, upload)
        options = _with_vad(runtime, spec.options, duration)
        started = time.monotonic()
        try:
            info, segments = await loop.run_in_executor(
                runtime.executor, _collect, engine, audio, options
            )
        except EngineError as exc:
            raise _engine_error(exc) from exc
        runtime.metrics.observe_inference(
            info.duration, time.monotonic() - started, info.batch_size
        )
    return Transcript(task=spec.options.task, info=info, segments=segments)


def _sse(event: dict[str, str]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def stream_upload(
    runtime: RuntimeState, request: Request, upload: UploadFile, spec: TranscriptionRequest
) -> AsyncIterator[bytes]:
    """Start decoding now (so bad input is still an HTTP error) and return the SSE events."""
    engine = engine_for(runtime, spec.model)
    loop = asyncio.get_running_loop()
    stack = AsyncExitStack()
    waited = await stack.enter_async_context(runtime.admission.slot())
    try:
        runtime.metrics.queue_wait.observe(waited)
        audio, duration = await _decode(runtime, request, upload)
        options = _with_vad(runtime, spec.options, duration)
        started = time.monotonic()
        try:
            info, segments = await loop.run_in_executor(
                runtime.executor, engine.transcribe, audio, options
            )
        except EngineError as exc:
            raise _engine_error(exc) from exc
    except BaseException:
        await stack.aclose()
        raise
    return _events(runtime, stack, info, segments, started)


async def _events(
    runtime: RuntimeState,
    stack: AsyncExitStack,
    info: TranscriptionInfo,
    segments: Iterator[Segment],
    started: float,
) -> AsyncIterator[bytes]:
    """Each segment is decoded in the engine's thread as the client reads the previous one."""
    loop = asyncio.get_running_loop()
    texts: list[str] = []
    async with stack:
        while True:
            segment = await loop.run_in_executor(runtime.executor, next, segments, _END)
            if segment is _END:
                break
            assert isinstance(segment, Segment)
            texts.append(segment.text)
            yield _sse({"type": "transcript.text.delta", "delta": segment.text})
        runtime.metrics.observe_inference(
            info.duration, time.monotonic() - started, info.batch_size
        )
        yield _sse({"type": "transcript.text.done", "text": "".join(texts).strip()})
