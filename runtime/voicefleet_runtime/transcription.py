"""Run one request through admission, decoding and the engine; stream or collect segments.

Order of a request, each step refusing before the next costs more:
1. every parameter is checked against the loaded engine (model, language, task, formats);
2. the upload, already complete (gate.py bounded it), is probed: container metadata only;
3. only then is it admitted (a place in the engine queue, 429 when full, 503 when draining);
4. the engine thread decodes it under the duration and work limits and runs the engine.
A client that leaves while queued gives its place back; while its audio is decoded or
transcribed, the engine stops at the next segment (one window) and the segment iterator is
closed, which is how an engine learns to stop work for it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import BinaryIO, TypeVar

import anyio
from fastapi import Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from voicefleet_runtime.access_log import AUDIO_SECONDS_KEY
from voicefleet_runtime.admission import ClientGoneError
from voicefleet_runtime.audio import probe_audio
from voicefleet_runtime.cache.stt import (
    cached_transcript,
    remember_transcript,
    transcription_cache_key,
)
from voicefleet_runtime.client_watch import ClientWatch, client_gone_error, watching
from voicefleet_runtime.engine.base import (
    SAMPLE_RATE,
    DecodeOptions,
    EngineError,
    Segment,
    SpeechEngine,
    TranscriptionInfo,
    close_segments,
    transcribe_pcm16,
)
from voicefleet_runtime.errors import ApiError, quote_input
from voicefleet_runtime.formats import Transcript
from voicefleet_runtime.state import RuntimeState

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""OpenAI's meaning of temperature 0: start greedy, raise it when a decode looks degenerate."""

_END = object()
T = TypeVar("T")


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
            f"the model {quote_input(model)} does not exist here; this server serves "
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
    try:
        engine.check(options)
    except EngineError as exc:
        raise _engine_error(exc) from exc


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


@dataclass(frozen=True)
class EngineJob:
    """One admitted request's work in the engine thread: decode, then run the engine."""

    runtime: RuntimeState
    request_state: object
    upload: BinaryIO
    engine: SpeechEngine
    options: DecodeOptions
    client_gone: threading.Event

    def start(self) -> EngineRun:
        """Decode the upload and hand it to the engine, all in one engine-thread job.

        One job per request, not one per step: each hop back to the event loop costs a
        wake-up and a GIL hand-over, and reading a spooled upload here skips AnyIO's thread
        pool. It runs inside the admission slot, so queued requests hold compressed bytes,
        never decoded PCM.
        """
        settings = self.runtime.settings
        try:
            pcm = self.runtime.audio_decoder.decode_pcm16(
                self.upload,
                settings.max_audio_seconds,
                min_bytes_per_second=settings.min_upload_bytes_per_audio_second,
            )
        except ApiError as refusal:
            self.runtime.count_refusal(refusal.code or "audio")
            raise
        if self.client_gone.is_set():
            raise ClientGoneError
        duration = pcm.shape[0] / SAMPLE_RATE
        setattr(self.request_state, AUDIO_SECONDS_KEY, duration)
        options = _with_vad(self.runtime, self.engine, self.options, duration)
        started = time.monotonic()
        info, segments = transcribe_pcm16(self.engine, pcm, options)
        return EngineRun(info, segments, started)

    def collect(self) -> tuple[TranscriptionInfo, tuple[Segment, ...], float]:
        """The whole transcript and the engine's seconds, in the same engine-thread job;
        stops at the next segment once the client is gone."""
        run = self.start()
        collected: list[Segment] = []
        try:
            for segment in run.segments:
                if self.client_gone.is_set():
                    raise ClientGoneError
                collected.append(segment)
        finally:
            close_segments(run.segments)
        return run.info, tuple(collected), time.monotonic() - run.started


async def _in_engine_thread(runtime: RuntimeState, work: Callable[[], T]) -> T:
    try:
        return await asyncio.get_running_loop().run_in_executor(runtime.executor, work)
    except EngineError as exc:
        raise _engine_error(exc) from exc
    except ClientGoneError:
        raise client_gone_error(runtime, "running") from None


async def _probe(runtime: RuntimeState, upload: UploadFile) -> None:
    """Container metadata only, before the request takes a place in the queue."""
    settings = runtime.settings
    try:
        await run_in_threadpool(
            probe_audio,
            upload.file,
            settings.max_audio_seconds,
            min_bytes_per_second=settings.min_upload_bytes_per_audio_second,
        )
    except ApiError as refusal:
        runtime.count_refusal(refusal.code or "audio")
        raise


async def transcribe_upload(
    runtime: RuntimeState, request: Request, upload: UploadFile, spec: TranscriptionRequest
) -> Transcript:
    engine = engine_for(runtime, spec.model)
    check_supported(engine, spec.options)
    await _probe(runtime, upload)
    cache_key = await transcription_cache_key(runtime, engine, upload, spec.options)
    if (cached := await cached_transcript(runtime, cache_key)) is not None:
        return cached
    async with watching(request.receive) as watch:
        job = EngineJob(runtime, request.state, upload.file, engine, spec.options, watch.gone)
        try:
            async with runtime.admission.admitted(watch.left) as waited:
                runtime.metrics.queue_wait.observe(waited)
                info, segments, engine_seconds = await _in_engine_thread(runtime, job.collect)
                runtime.metrics.observe_inference(info.duration, engine_seconds, info.batch_size)
        except ClientGoneError:
            raise client_gone_error(runtime, "queued") from None
    transcript = Transcript(task=spec.options.task, info=info, segments=segments)
    await remember_transcript(runtime, cache_key, transcript)
    return transcript


def _sse(event: dict[str, str]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


class EngineStream:
    """A started transcription whose segments the response pulls one engine job at a time.

    It owns the admission place. `close()` (idempotent) stops the engine at the next segment,
    closes the segment iterator and gives the place back; the response calls it whatever
    happens, even when its body never started (a client gone before the first chunk)."""

    def __init__(
        self, runtime: RuntimeState, admission: AsyncExitStack, run: EngineRun, watch: ClientWatch
    ) -> None:
        self._runtime = runtime
        self._admission = admission
        self._run = run
        self._watch = watch
        self._step: Future[object] | None = None
        self._finished = False
        self._closed = False

    def _next(self) -> object:
        if self._watch.gone.is_set():
            return _END
        return next(self._run.segments, _END)

    async def events(self) -> AsyncIterator[bytes]:
        """Each segment is decoded in the engine's thread as the client reads the previous one."""
        texts: list[str] = []
        while True:
            self._step = self._runtime.executor.submit(self._next)
            segment = await asyncio.wrap_future(self._step)
            if segment is _END:
                break
            assert isinstance(segment, Segment)
            texts.append(segment.text)
            yield _sse({"type": "transcript.text.delta", "delta": segment.text})
        self._finished = not self._watch.gone.is_set()
        run = self._run
        self._runtime.metrics.observe_inference(
            run.info.duration, time.monotonic() - run.started, run.info.batch_size
        )
        yield _sse({"type": "transcript.text.done", "text": "".join(texts).strip()})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if not self._finished:
                self._watch.mark_gone()
                self._runtime.metrics.client_disconnects.labels(stage="streaming").inc()
            if self._step is not None and not self._step.done():
                await asyncio.wrap_future(self._step)  # at most one segment (one window)
            await asyncio.get_running_loop().run_in_executor(
                self._runtime.executor, close_segments, self._run.segments
            )
            await self._admission.aclose()


class EngineStreamResponse(StreamingResponse):
    """Server-sent events whose engine work and admission place end with the response."""

    def __init__(self, stream: EngineStream) -> None:
        super().__init__(
            stream.events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.close()


async def stream_upload(
    runtime: RuntimeState, request: Request, upload: UploadFile, spec: TranscriptionRequest
) -> EngineStreamResponse:
    """Admit and start decoding now (so bad input is still an HTTP error), then stream."""
    engine = engine_for(runtime, spec.model)
    check_supported(engine, spec.options)
    await _probe(runtime, upload)
    admission = AsyncExitStack()
    async with watching(request.receive) as watch:
        job = EngineJob(runtime, request.state, upload.file, engine, spec.options, watch.gone)
        try:
            waited = await admission.enter_async_context(runtime.admission.admitted(watch.left))
        except ClientGoneError:
            raise client_gone_error(runtime, "queued") from None
        try:
            runtime.metrics.queue_wait.observe(waited)
            run = await _in_engine_thread(runtime, job.start)
        except BaseException:
            await admission.aclose()
            raise
    # From here the response watches the client (Starlette cancels the body on disconnect).
    return EngineStreamResponse(EngineStream(runtime, admission, run, ClientWatch()))
