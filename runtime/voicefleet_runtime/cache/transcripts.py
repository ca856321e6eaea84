"""Transcripts as cache values: JSON, never pickle (a shared Redis must not be able to run
code in the server)."""

from __future__ import annotations

import json
from dataclasses import asdict

from voicefleet_runtime.engine.base import Segment, TranscriptionInfo, Word
from voicefleet_runtime.formats import Transcript


def transcript_bytes(transcript: Transcript) -> bytes:
    return json.dumps(
        {
            "task": transcript.task,
            "info": asdict(transcript.info),
            "segments": [asdict(segment) for segment in transcript.segments],
        }
    ).encode()


def transcript_from_bytes(data: bytes) -> Transcript:
    body = json.loads(data)
    segments = tuple(
        Segment(
            **{
                **segment,
                "tokens": tuple(segment["tokens"]),
                "words": tuple(Word(**word) for word in segment["words"]),
            }
        )
        for segment in body["segments"]
    )
    return Transcript(task=body["task"], info=TranscriptionInfo(**body["info"]), segments=segments)
