"""The HTTP routes: OpenAI's audio API, the legacy /transcribe, models, probes and metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from voicefleet_runtime.engine.base import DecodeOptions
from voicefleet_runtime.errors import ApiError, draining_error, error_response
from voicefleet_runtime.formats import Granularity, ResponseFormat, Transcript, render
from voicefleet_runtime.language_names import language_code
from voicefleet_runtime.routes import (
    HEALTH_PATH,
    LEGACY_TRANSCRIBE_PATH,
    METRICS_PATH,
    MODELS_PATH,
    READY_PATH,
    TRANSCRIPTIONS_PATH,
    TRANSLATIONS_PATH,
)
from voicefleet_runtime.state import RuntimeState
from voicefleet_runtime.transcription import (
    TranscriptionRequest,
    engine_for,
    stream_upload,
    temperature_ladder,
    transcribe_upload,
)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


INFERENCE_ERRORS = _documented(400, 401, 404, 408, 413, 415, 429, 503)

MAX_TEXT_CHARS = 4096
"""Prompt and hotwords: Whisper reads at most 223 tokens of either; longer text is a 400."""
MAX_NAME_CHARS = 256
"""Model names and languages: longer than any real one."""

TIMED_FORMATS = frozenset({"srt", "vtt", "verbose_json"})
"""Response formats that show segment times, so long audio must keep Whisper's timing."""

Temperature = Annotated[float, Form(ge=0.0, le=1.0)]
ModelName = Annotated[
    str,
    Form(description="The loaded model's name or an alias (whisper-1).", max_length=MAX_NAME_CHARS),
]
Language = Annotated[
    str | None,
    Form(description="ISO 639-1 code; omit to detect it.", max_length=MAX_NAME_CHARS),
]
Prompt = Annotated[
    str | None,
    Form(
        description="Text that steers spelling and style; read as plain text.",
        max_length=MAX_TEXT_CHARS,
    ),
]
Hotwords = Annotated[
    str | None,
    Form(
        description="Words to favour (a voicefleet extension, not in OpenAI's API); plain text.",
        max_length=MAX_TEXT_CHARS,
    ),
]

# An inference form has one file and a dozen short fields; more is refused with 400 while
# the body is parsed, before anything is kept (Starlette's defaults: 1000 fields of 1 MB).
router = APIRouter(form_limits={"max_fields": 32, "max_files": 1, "max_part_size": 64 * 1024})


def runtime_of(request: Request) -> RuntimeState:
    runtime: RuntimeState = request.app.state.runtime
    return runtime


def _options(
    task: str,
    language: str | None,
    prompt: str | None,
    temperature: float,
    word_timestamps: bool,
    hotwords: str | None = None,
    *,
    segment_timestamps: bool = True,
) -> DecodeOptions:
    return DecodeOptions(
        task="translate" if task == "translate" else "transcribe",
        language=language_code(language) if language else None,
        prompt=prompt or None,
        temperature=temperature_ladder(temperature),
        word_timestamps=word_timestamps,
        segment_timestamps=segment_timestamps,
        hotwords=hotwords or None,
    )


def _respond(
    transcript: Transcript, response_format: ResponseFormat, granularities: list[Granularity]
) -> Response:
    body, media_type = render(transcript, response_format, granularities)
    if isinstance(body, str):
        return PlainTextResponse(body, media_type=media_type)
    return JSONResponse(body)


@router.post(
    TRANSCRIPTIONS_PATH,
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}, **INFERENCE_ERRORS},
)
async def create_transcription(
    request: Request,
    file: Annotated[UploadFile, File(description="The audio, in any format FFmpeg decodes.")],
    model: ModelName,
    language: Language = None,
    prompt: Prompt = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Temperature = 0.0,
    timestamp_granularities: Annotated[
        list[Granularity] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    stream: Annotated[bool, Form()] = False,
    hotwords: Hotwords = None,
) -> Response:
    runtime = runtime_of(request)
    granularities = list(timestamp_granularities or [])
    words = response_format == "verbose_json" and "word" in granularities
    timed = stream or response_format in TIMED_FORMATS
    spec = TranscriptionRequest(
        model,
        _options(
            "transcribe", language, prompt, temperature, words, hotwords, segment_timestamps=timed
        ),
    )
    if stream:
        return await stream_upload(runtime, request, file, spec)
    transcript = await transcribe_upload(runtime, request, file, spec)
    return _respond(transcript, response_format, granularities)


@router.post(
    TRANSLATIONS_PATH,
    responses={200: {"content": {"text/plain": {}}}, **INFERENCE_ERRORS},
)
async def create_translation(
    request: Request,
    file: Annotated[UploadFile, File(description="The audio, in any format FFmpeg decodes.")],
    model: ModelName,
    prompt: Prompt = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Temperature = 0.0,
) -> Response:
    runtime = runtime_of(request)
    timed = response_format in TIMED_FORMATS
    spec = TranscriptionRequest(
        model,
        _options("translate", None, prompt, temperature, False, segment_timestamps=timed),
    )
    transcript = await transcribe_upload(runtime, request, file, spec)
    return _respond(transcript, response_format, [])


class LegacyTranscription(BaseModel):
    text: str
    language: str
    duration: float


@router.post(LEGACY_TRANSCRIBE_PATH, responses=INFERENCE_ERRORS)
async def legacy_transcribe(
    request: Request,
    audio: Annotated[UploadFile, File(description="The audio, in any format FFmpeg decodes.")],
    language: Language = None,
) -> LegacyTranscription:
    """For clients of the services this fleet replaces; the task comes from the settings."""
    runtime = runtime_of(request)
    spec = TranscriptionRequest(
        None,
        _options(runtime.settings.task, language, None, 0.0, False, segment_timestamps=False),
    )
    transcript = await transcribe_upload(runtime, request, audio, spec)
    return LegacyTranscription(
        text=transcript.text,
        language=transcript.info.language,
        duration=round(transcript.info.duration, 3),
    )


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "voicefleet"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


@router.get(MODELS_PATH, responses=_documented(401, 503))
async def list_models(request: Request) -> ModelList:
    runtime = runtime_of(request)
    return ModelList(
        data=[ModelCard(id=name, created=runtime.loaded_at) for name in runtime.all_model_names()]
    )


@router.get(MODELS_PATH + "/{model_id}", responses=_documented(401, 404, 503))
async def retrieve_model(request: Request, model_id: str) -> ModelCard:
    runtime = runtime_of(request)
    if model_id not in runtime.tts_model_names():
        engine_for(runtime, model_id)
    return ModelCard(id=model_id, created=runtime.loaded_at)


@router.get(HEALTH_PATH, responses=_documented(503))
async def healthz(request: Request) -> dict[str, str]:
    """Liveness: the process serves HTTP; only a failed model load makes it unhealthy."""
    runtime = runtime_of(request)
    if runtime.load_error is not None:
        raise ApiError(503, "the model failed to load; see the server log", code="load_failed")
    return {"status": "ok"}


@router.get(READY_PATH, responses=_documented(503))
async def readyz(request: Request) -> Response:
    """Readiness: model loaded and warmed up, and not draining."""
    runtime = runtime_of(request)
    if runtime.admission.draining:
        return error_response(draining_error())
    if not runtime.ready:
        return error_response(ApiError(503, "the model is still loading", code="model_not_ready"))
    return JSONResponse({"status": "ready", "model": runtime.all_model_names()[0]})


@router.get(METRICS_PATH, response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
