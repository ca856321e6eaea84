"""What an engine can do beyond plain decoding, as data.

Apart from engine/base.py (the engine contract, which needs numpy) so that engine/support.py,
which the operator reads at admission, loads neither numpy nor the server's error mapping
(FastAPI): the operator process never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do beyond plain decoding; the server asks before it sends options."""

    vad: bool
    """Voice activity detection (`DecodeOptions.vad_filter`)."""
    word_timestamps: bool
    """Per-word timings (`DecodeOptions.word_timestamps`)."""
