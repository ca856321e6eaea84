"""The response formats speech can be encoded in: a name list, free of the encoders' imports,
so that the settings (and the operator, which reads them) do not load PyAV and onnxruntime."""

from __future__ import annotations

from typing import Literal

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_FORMATS: tuple[SpeechFormat, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
