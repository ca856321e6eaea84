"""POST /v1/audio/speech and GET /v1/audio/voices: OpenAI's speech API on Kokoro."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from voicefleet_runtime.api import INFERENCE_ERRORS, ErrorBody, runtime_of
from voicefleet_runtime.errors import ApiError
from voicefleet_runtime.routes import SPEECH_PATH, VOICES_PATH
from voicefleet_runtime.speech import (
    StreamFormat,
    cached_speech,
    speech_cache_key,
    speech_spec,
    start_speech,
    tts_engine_for,
)
from voicefleet_runtime.tts.encode import MEDIA_TYPES
from voicefleet_runtime.tts.formats import SpeechFormat

MAX_INPUT_CHARACTERS = 4096
"""OpenAI's limit on `input`."""

router = APIRouter()


class SpeechBody(BaseModel):
    model: str = Field(description="kokoro, or OpenAI's names for it: tts-1, tts-1-hd, ...")
    input: Annotated[str, Field(min_length=1, max_length=MAX_INPUT_CHARACTERS)]
    voice: str = Field(description="An OpenAI voice name (alloy, ...) or a Kokoro voice id.")
    response_format: SpeechFormat | None = Field(
        None, description="mp3, opus, aac, flac, wav or pcm; omitted: the server's default."
    )
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    instructions: Annotated[str | None, Field(max_length=MAX_INPUT_CHARACTERS)] = Field(
        None,
        description="Accepted for compatibility; Kokoro has no instruction-following, so it "
        "does not change the speech (see the README).",
    )
    stream_format: StreamFormat = "audio"


AUDIO_CONTENT: dict[str, Any] = {
    media_type: {} for media_type in {*MEDIA_TYPES.values(), "text/event-stream"}
}


@router.post(SPEECH_PATH, responses={200: {"content": AUDIO_CONTENT}, **INFERENCE_ERRORS})
async def create_speech(request: Request, body: SpeechBody) -> StreamingResponse:
    runtime = runtime_of(request)
    engine = tts_engine_for(runtime, body.model)
    response_format = body.response_format or runtime.settings.tts_default_format
    spec = speech_spec(
        engine, body.input, body.voice, body.speed, response_format, body.stream_format
    )
    key = speech_cache_key(engine, spec) if runtime.cache.enabled else None
    cached = await runtime.cache.lookup("tts", key) if key is not None else None
    if cached is not None:
        stream = cached_speech(runtime, spec, cached)
    else:
        stream = await start_speech(runtime, engine, spec, request.receive, key)
    if spec.stream_format == "sse":
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    return StreamingResponse(stream, media_type=MEDIA_TYPES[response_format])


class VoiceCard(BaseModel):
    id: str
    name: str
    kokoro_voice: str
    language: str
    gender: str


class VoiceList(BaseModel):
    object: str = "list"
    data: list[VoiceCard]


@router.get(VOICES_PATH, responses={code: {"model": ErrorBody} for code in (401, 404, 503)})
async def list_voices(request: Request) -> VoiceList:
    """Every name `voice` accepts: OpenAI's, then each Kokoro id."""
    runtime = runtime_of(request)
    if runtime.settings.tts_model is None:
        raise ApiError(404, "this server does not serve text-to-speech", code="model_not_found")
    engine = tts_engine_for(runtime, runtime.settings.tts_model)
    cards = []
    for name in engine.voices.names():
        voice = engine.voices.resolve(name)
        assert voice is not None
        cards.append(
            VoiceCard(
                id=name,
                name=name,
                kokoro_voice=voice.id,
                language=voice.language,
                gender=voice.gender,
            )
        )
    return VoiceList(data=cards)
