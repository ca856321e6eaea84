"""Phoneme strings to Kokoro token ids."""

from __future__ import annotations

from collections.abc import Mapping

PAD_ID = 0
"""Kokoro wraps every chunk in the pad token, at both ends."""

MAX_PHONEMES = 510
"""Kokoro's context is 512 tokens: 510 phonemes plus the two pads."""


def token_ids(phonemes: str, vocab: Mapping[str, int]) -> list[int]:
    """The chunk's ids between pads; symbols outside the vocabulary are dropped."""
    ids = [vocab[symbol] for symbol in phonemes if symbol in vocab]
    if len(ids) > MAX_PHONEMES:
        raise ValueError(f"{len(ids)} phonemes do not fit Kokoro's window of {MAX_PHONEMES}")
    return [PAD_ID, *ids, PAD_ID]
