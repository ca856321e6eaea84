"""Content addresses: the same request content always maps to the same key, and any input
that can change the result is part of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import BinaryIO

from voicefleet_runtime.engine.base import DecodeOptions

KEY_VERSION = "v1"
"""Bump when what is stored under a key changes shape."""
HASH_BLOCK = 1 << 20


def _key(direction: str, parts: dict[str, object]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return f"voicefleet:{KEY_VERSION}:{direction}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def speech_key(
    model: str, voice: str, speed: float, response_format: str, normalized_text: str
) -> str:
    """TTS: model, voice, speed, format and the normalised text decide the audio."""
    return _key(
        "tts",
        {
            "model": model,
            "voice": voice,
            "speed": round(speed, 4),
            "format": response_format,
            "text": normalized_text,
        },
    )


def file_sha256(upload: BinaryIO) -> str:
    """The upload's digest, read in blocks; the file is left at its start for the decoder."""
    upload.seek(0)
    digest = hashlib.sha256()
    while block := upload.read(HASH_BLOCK):
        digest.update(block)
    upload.seek(0)
    return digest.hexdigest()


def transcription_key(
    audio_sha256: str, model: str, decoding: dict[str, object], options: DecodeOptions
) -> str:
    """STT: the audio's digest, the model, the server's decoding settings and the request's
    decode options decide the transcript."""
    return _key(
        "stt",
        {"audio": audio_sha256, "model": model, "decoding": decoding, "options": asdict(options)},
    )


DECODING_SETTINGS = (
    "engine",
    "precision",
    "beam_size",
    "vad",
    "vad_min_audio_seconds",
    "batched",
    "batch_size",
    "batched_min_audio_seconds",
)
"""Server settings that can change a transcript, so they are part of its key."""
