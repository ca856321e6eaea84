"""The speech-to-text side of the result cache: the hook transcription.py calls."""

from __future__ import annotations

import asyncio

from fastapi import UploadFile

from voicefleet_runtime.cache.keys import DECODING_SETTINGS, file_sha256, transcription_key
from voicefleet_runtime.cache.transcripts import transcript_bytes, transcript_from_bytes
from voicefleet_runtime.engine.base import DecodeOptions, SpeechEngine
from voicefleet_runtime.formats import Transcript
from voicefleet_runtime.state import RuntimeState


async def transcription_cache_key(
    runtime: RuntimeState, engine: SpeechEngine, upload: UploadFile, options: DecodeOptions
) -> str | None:
    """None when the cache is off; hashing runs off the event loop and off the engine threads."""
    if not runtime.cache.enabled:
        return None
    digest = await asyncio.to_thread(file_sha256, upload.file)
    decoding = {name: getattr(runtime.settings, name) for name in DECODING_SETTINGS}
    return transcription_key(digest, engine.model_id, decoding, options)


async def cached_transcript(runtime: RuntimeState, key: str | None) -> Transcript | None:
    if key is None:
        return None
    value = await runtime.cache.lookup("stt", key)
    return None if value is None else transcript_from_bytes(value)


async def remember_transcript(
    runtime: RuntimeState, key: str | None, transcript: Transcript
) -> None:
    if key is not None:
        await runtime.cache.store(key, transcript_bytes(transcript))
