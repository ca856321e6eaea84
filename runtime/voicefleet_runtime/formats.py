"""Render a finished transcription in OpenAI's response formats: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from voicefleet_runtime.engine.base import Segment, TranscriptionInfo
from voicefleet_runtime.language_names import language_name

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["segment", "word"]


@dataclass(frozen=True)
class Transcript:
    task: str
    info: TranscriptionInfo
    segments: tuple[Segment, ...]

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments).strip()


def _timestamp(seconds: float, decimal_marker: str) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def render_srt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{index}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for index, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def render_vtt(segments: Sequence[Segment]) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _segment_json(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "seek": round(segment.start * 100),
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def render_verbose_json(
    transcript: Transcript, granularities: Sequence[Granularity]
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": language_name(transcript.info.language),
        "duration": round(transcript.info.duration, 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [_segment_json(segment) for segment in transcript.segments]
    if "word" in granularities:
        body["words"] = [
            {"word": word.word.strip(), "start": round(word.start, 3), "end": round(word.end, 3)}
            for segment in transcript.segments
            for word in segment.words
        ]
    return body


def render(
    transcript: Transcript, response_format: ResponseFormat, granularities: Sequence[Granularity]
) -> tuple[str | dict[str, Any], str]:
    """The body and its media type."""
    if response_format == "text":
        return transcript.text + "\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        return render_srt(transcript.segments), "application/x-subrip; charset=utf-8"
    if response_format == "vtt":
        return render_vtt(transcript.segments), "text/vtt; charset=utf-8"
    if response_format == "verbose_json":
        return render_verbose_json(transcript, granularities), "application/json"
    return {"text": transcript.text}, "application/json"
