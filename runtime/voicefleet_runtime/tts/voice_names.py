"""The voices' names, as data: Kokoro's English ids and OpenAI's names mapped onto them.

Apart from tts/voices.py (which loads the voices' numpy arrays) so that the operator, which
checks a VoiceService's voices at admission, never imports numpy.
"""

from __future__ import annotations

from collections.abc import Mapping

OPENAI_VOICES: Mapping[str, str] = {
    # Same names where Kokoro has them; the rest by gender and accent of OpenAI's voice.
    "alloy": "af_alloy",
    "ash": "am_michael",
    "ballad": "bm_george",
    "coral": "af_heart",
    "echo": "am_echo",
    "fable": "bm_fable",
    "nova": "af_nova",
    "onyx": "am_onyx",
    "sage": "af_sarah",
    "shimmer": "af_bella",
    "verse": "am_puck",
    "marin": "af_kore",
    "cedar": "am_liam",
}

ENGLISH_VOICES = (
    *(f"af_{n}" for n in ("alloy", "aoede", "bella", "heart", "jessica", "kore", "nicole")),
    *(f"af_{n}" for n in ("nova", "river", "sarah", "sky")),
    *(f"am_{n}" for n in ("adam", "echo", "eric", "fenrir", "liam", "michael", "onyx")),
    *(f"am_{n}" for n in ("puck", "santa")),
    *(f"bf_{n}" for n in ("alice", "emma", "isabella", "lily")),
    *(f"bm_{n}" for n in ("daniel", "fable", "george", "lewis")),
)
"""The 28 English voices of kokoro-js 1.2.1 that scripts/install_kokoro_assets.py installs."""
