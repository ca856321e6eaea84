"""Whisper's special tokens and text decoding, read from the model folder's files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from voicefleet_runtime.engine.base import plain_text_encoding

SECONDS_PER_TIMESTAMP = 0.02


class ModelFolderError(ValueError):
    """The model folder lacks a file or a token this engine needs."""


@dataclass(frozen=True)
class DecodingVocabulary:
    """Token ids that steer decoding; everything else comes from the tokenizer."""

    eot: int
    sot: int
    sot_prev: int
    transcribe: int
    translate: int
    no_timestamps: int
    no_speech: int
    timestamp_begin: int
    language_ids: dict[str, int]
    """Language code -> token id, empty for an English-only model."""
    suppress_ids: tuple[int, ...]
    suppress_ids_begin: tuple[int, ...]
    alignment_heads: tuple[tuple[int, int], ...]


class WhisperTokenizer:
    def __init__(self, tokenizer: Tokenizer, vocabulary: DecodingVocabulary) -> None:
        self._tokenizer = tokenizer
        self.vocabulary = vocabulary

    @classmethod
    def from_model_folder(cls, folder: Path, multilingual: bool) -> WhisperTokenizer:
        tokenizer_path = folder / "tokenizer.json"
        config_path = folder / "config.json"
        for required in (tokenizer_path, config_path):
            if not required.is_file():
                raise ModelFolderError(f"the torch engine needs {required}, which is missing")
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        plain_text_encoding(tokenizer)
        config = json.loads(config_path.read_text())

        def token_id(*candidates: str) -> int:
            for text in candidates:
                found = tokenizer.token_to_id(text)
                if found is not None:
                    return int(found)
            raise ModelFolderError(f"{tokenizer_path} has none of the tokens {candidates}")

        language_ids: dict[str, int] = {}
        if multilingual:
            for language_token in config.get("lang_ids", []):
                text = tokenizer.id_to_token(int(language_token))
                if text is None or not (text.startswith("<|") and text.endswith("|>")):
                    raise ModelFolderError(f"lang id {language_token} is not a language token")
                language_ids[text[2:-2]] = int(language_token)
        no_timestamps = token_id("<|notimestamps|>")
        vocabulary = DecodingVocabulary(
            eot=token_id("<|endoftext|>"),
            sot=token_id("<|startoftranscript|>"),
            sot_prev=token_id("<|startofprev|>"),
            transcribe=token_id("<|transcribe|>"),
            translate=token_id("<|translate|>"),
            no_timestamps=no_timestamps,
            no_speech=token_id("<|nospeech|>", "<|nocaptions|>"),
            # Timestamp tokens follow <|notimestamps|>; some tokenizer files omit them.
            timestamp_begin=no_timestamps + 1,
            language_ids=language_ids,
            suppress_ids=tuple(int(i) for i in config.get("suppress_ids", [])),
            suppress_ids_begin=tuple(int(i) for i in config.get("suppress_ids_begin", [])),
            alignment_heads=tuple(
                (int(layer), int(head)) for layer, head in config.get("alignment_heads", [])
            ),
        )
        return cls(tokenizer, vocabulary)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, tokens: list[int] | tuple[int, ...]) -> str:
        """Text of the ordinary tokens; special and timestamp tokens are dropped."""
        text_tokens = [token for token in tokens if token < self.vocabulary.eot]
        return str(self._tokenizer.decode(text_tokens, skip_special_tokens=False))

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        vocabulary = self.vocabulary
        if not vocabulary.language_ids:
            return [vocabulary.sot]
        language_token = vocabulary.language_ids[language or "en"]
        task_token = vocabulary.translate if task == "translate" else vocabulary.transcribe
        return [vocabulary.sot, language_token, task_token]
