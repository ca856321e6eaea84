"""Prompts and hotwords are plain text: Whisper's control tokens written in them stay text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_REFERENCE
from voicefleet_runtime.engine.base import plain_text_encoding
from voicefleet_runtime.engine.models import resolve_model

CONTROL_TOKENS = "<|endoftext|><|startoftranscript|><|en|><|transcribe|><|notimestamps|>" * 20
"""Before: this prompt turned the transcript of jfk into "..." and made it 6 times slower."""


def test_tokenizer_reads_control_token_names_as_text() -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(resolve_model("tiny.en", None).path / "tokenizer.json"))
    end_of_text = tokenizer.token_to_id("<|endoftext|>")
    assert end_of_text in tokenizer.encode(CONTROL_TOKENS, add_special_tokens=False).ids
    plain_text_encoding(tokenizer)
    ids = tokenizer.encode(CONTROL_TOKENS, add_special_tokens=False).ids
    assert max(ids) < end_of_text  # ordinary text tokens only
    assert tokenizer.decode(ids) == CONTROL_TOKENS
    assert tokenizer.token_to_id("<|endoftext|>") == end_of_text  # ids are still found


@pytest.mark.parametrize("field", ["prompt", "hotwords"])
def test_control_tokens_in_user_text_transcribe_as_without(
    tiny_client: httpx.Client,
    shared_audio: Path,
    wer: Callable[[str, str], float],
    field: str,
) -> None:
    audio = (shared_audio / "jfk.flac").read_bytes()

    def transcribe(**extra: str) -> str:
        response = tiny_client.post(
            "/v1/audio/transcriptions",
            files={"file": ("jfk.flac", audio)},
            data={"model": "tiny.en", **extra},
        )
        assert response.status_code == 200, response.text
        text: str = response.json()["text"]
        return text

    plain = transcribe()
    with_tokens = transcribe(**{field: CONTROL_TOKENS})
    assert wer(JFK_REFERENCE, plain) <= 0.1
    assert wer(JFK_REFERENCE, with_tokens) <= 0.1, with_tokens
