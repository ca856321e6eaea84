"""Cut normalised text into the chunks Kokoro synthesises one at a time.

Sentences end at English and Chinese sentence punctuation (the normaliser has already turned
the wide forms into ASCII) and at line breaks. Each sentence becomes one or more chunks of at
most 510 phonemes (Kokoro's window); short sentences after the first are joined to the next
so the voice does not reset its prosody every few words. The first chunk stays alone: it is
what a streaming client hears first, so it should be as short as a sentence allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from voicefleet_runtime.tts.vocab import MAX_PHONEMES

SHORT_CHUNK_PHONEMES = 60
"""A chunk shorter than this is joined with the next sentence when they fit together."""

_SENTENCE_END = re.compile(r"(?<=[.!?;])[\"')\]]*\s+|\n+")
_DOTTED_ACRONYM = re.compile(r"(?:\b[A-Za-z]\.){2,}$")


@dataclass(frozen=True)
class Chunk:
    text: str
    phonemes: str


def split_sentences(text: str) -> list[str]:
    """Sentences, keeping their punctuation; A.M. or U.S. before a lower-case word stays in."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        before = text[start : match.start()]
        after = text[match.end() : match.end() + 1]
        if _DOTTED_ACRONYM.search(before) and after.islower():
            continue
        sentences.append(before)
        start = match.end()
    sentences.append(text[start:])
    return [sentence.strip() for sentence in sentences if _has_words(sentence)]


def _has_words(text: str) -> bool:
    return any(character.isalnum() for character in text)


def plan_chunks(text: str, phonemize: Callable[[str], list[str]]) -> Iterator[Chunk]:
    """Chunks in speaking order, phonemised lazily so the first is ready after one sentence."""
    pending: Chunk | None = None
    first = True
    for sentence in split_sentences(text):
        for phonemes in phonemize(sentence):
            piece = Chunk(sentence, phonemes)
            if first:
                first = False
                yield piece
                continue
            if pending is None:
                pending = piece
                continue
            if (
                len(pending.phonemes) < SHORT_CHUNK_PHONEMES
                and len(pending.phonemes) + 1 + len(phonemes) <= MAX_PHONEMES
            ):
                pending = Chunk(f"{pending.text} {sentence}", f"{pending.phonemes} {phonemes}")
                continue
            yield pending
            pending = piece
    if pending is not None:
        yield pending
