"""Run one request through admission, decoding and the engine; stream or collect segments."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import BinaryIO

from fastapi import Request, UploadFile

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
    """The loaded engine, when `model` names it (None: the legacy endpoint, no model field)."""
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


def check_supported(engine: SpeechEngine, options: DecodeOptions) -> None:
    """Refuse what the loaded engine cannot do before the upload is decoded (400)."""
    if options.word_timestamps and not engine.capabilities.word_timestamps:
        raise ApiError(
            400,
            f"word timestamps need the faster-whisper engine; this server runs the "
            f"{engine.backend} engine, which gives segment timestamps only "
            "(drop timestamp_granularities[]=word or use a faster-whisper server)",
            code="unsupported_value",
            param="timestamp_granularities[]",
        )


def _with_vad(
    runtime: RuntimeState, engine: SpeechEngine, options: DecodeOptions, duration: float
) -> DecodeOptions:
    """VAD per the settings, for engines that have it (vad=on without it fails at startup)."""
    mode = runtime.settings.vad
    wanted = mode == "on" or (mode == "auto" and duration >= runtime.settings.vad_min_audio_seconds)
    vad = wanted and engine.capabilities.vad
    return replace(options, vad_filter=vad, beam_size=runtime.settings.beam_size)


def _engine_error(exc: EngineError) -> ApiError:
    return ApiError(400, str(exc), code="unsupported_request", param=exc.param)


@dataclass(frozen=True)
class EngineRun:
    info: TranscriptionInfo
    segments: Iterator[Segment]
    started: float
    """time.monotonic() when the engine got the audio (decoding excluded)."""


def _decode_and_start(
    runtime: RuntimeState,
    request_state: object,
    upload: BinaryIO,
    engine: SpeechEngine,
    options: DecodeOptions,
) -> EngineRun:
    """Read, decode and hand the upload to the engine, all in one engine-thread job.

    One job per request, not one per step: each hop back to the event loop costs a wake-up
    and a GIL hand-over, and reading a spooled upload here skips AnyIO's thread pool. It runs
    inside the admission slot, so queued requests hold compressed bytes, never decoded PCM.
    """
    audio = decode_audio(upload.read(), runtime.settings.max_audio_seconds)
    duration = audio.shape[0] / SAMPLE_RATE
    setattr(request_state, AUDIO_SECONDS_KEY, duration)
    options = _with_vad(runtime, engine, options, duration)
    started = time.monotonic()
    info, segments = engine.transcribe(audio, options)
    return EngineRun(info, segments, started)


def _decode_and_collect(
    runtime: RuntimeState,
    request_state: object,
    upload: BinaryIO,
    engine: SpeechEngine,
    options: DecodeOptions,
) -> tuple[TranscriptionInfo, tuple[Segment, ...], float]:
    """The whole transcript and the engine's seconds, in the same engine-thread job."""
    run = _decode_and_start(runtime, request_state, upload, engine, options)
    segments = tuple(run.segments)
    return run.info, segments, time.monotonic() - run.started


async def transcribe_upload(
    runtime: RuntimeState, request: Request, upload: UploadFile, spec: TranscriptionRequest
) -> Transcript:
    engine = engine_for(runtime, spec.model)
    check_supported(engine, spec.options)
    loop = asyncio.get_running_loop()
    async with runtime.admission.slot() as waited:
        runtime.metrics.queue_wait.observe(waited)
        try:
            info, segments, engine_seconds = await loop.run_in_executor(
                runtime.executor,
                _decode_and_collect,
                runtime,
                request.state,
                upload.file,
                engine,
                spec.options,
            )
        except EngineError as exc:
            raise _engine_error(exc) from exc
        runtime.metrics.observe_inference(info.duration, engine_seconds, info.batch_size)
    return Transcript(task=spec.options.task, info=info, segments=segments)


def _sse(event: dict[str, str]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def stream_upload(
    runtime: RuntimeState, request: Request, upload: UploadFile, spec: TranscriptionRequest
) -> AsyncIterator[bytes]:
    """Start decoding now (so bad input is still an HTTP error) and return the SSE events."""
    engine = engine_for(runtime, spec.model)
    check_supported(engine, spec.options)
    loop = asyncio.get_running_loop()
    stack = AsyncExitStack()
    waited = await stack.enter_async_context(runtime.admission.slot())
    try:
        runtime.metrics.queue_wait.observe(waited)
        try:
            run = await loop.run_in_executor(
                runtime.executor,
                _decode_and_start,
                runtime,
                request.state,
                upload.file,
                engine,
                spec.options,
            )
        except EngineError as exc:
            raise _engine_error(exc) from exc
    except BaseException:
        await stack.aclose()
        raise
    return _events(runtime, stack, run.info, run.segments, run.started)


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
