"""The voices a server offers: Kokoro's own ids and OpenAI's names mapped onto them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.tts.voice_names import OPENAI_VOICES

STYLE_ROWS = 510
"""A voice file holds one 256-wide style vector per phoneme count (510 x 1 x 256 float32)."""
STYLE_WIDTH = 256

ACCENTS = {"a": "en-US", "b": "en-GB"}
GENDERS = {"f": "female", "m": "male"}


@dataclass(frozen=True)
class Voice:
    id: str
    styles: NDArray[np.float32]
    """(STYLE_ROWS, 1, STYLE_WIDTH)"""

    @property
    def language(self) -> str:
        return ACCENTS.get(self.id[:1], "unknown")

    @property
    def gender(self) -> str:
        return GENDERS.get(self.id[1:2], "unknown")

    def style_for(self, phoneme_count: int) -> NDArray[np.float32]:
        """Kokoro picks the style row by the number of phonemes in the chunk."""
        style: NDArray[np.float32] = self.styles[min(phoneme_count, STYLE_ROWS - 1)]
        return style


def load_voice(voice_id: str, path: Path) -> Voice:
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size != STYLE_ROWS * STYLE_WIDTH:
        raise ValueError(f"{path} holds {raw.size} floats, not {STYLE_ROWS} x {STYLE_WIDTH}")
    return Voice(voice_id, raw.reshape(STYLE_ROWS, 1, STYLE_WIDTH))


class VoiceCatalog:
    """Kokoro voices by id, and OpenAI's names for those that are loaded."""

    def __init__(self, voices: Iterable[Voice]) -> None:
        self.voices = {voice.id: voice for voice in voices}
        self.aliases = {
            name: voice_id for name, voice_id in OPENAI_VOICES.items() if voice_id in self.voices
        }

    def names(self) -> list[str]:
        """What a request may send as `voice`: OpenAI's names first, then Kokoro's ids."""
        return [*self.aliases, *self.voices]

    def resolve(self, name: str) -> Voice | None:
        return self.voices.get(self.aliases.get(name, name))
