"""The PyTorch engine behind the real HTTP server: what it can do works, what it can't is a 400."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_REFERENCE
from tests.runtime.conftest import RunningServer
from voicefleet_runtime.engine.loader import load_engine
from voicefleet_runtime.settings import RuntimeSettings

StartServer = Callable[[RuntimeSettings], AbstractContextManager[RunningServer]]


@pytest.fixture(scope="module")
def torch_client(
    start_server: StartServer, make_tiny_settings: Callable[..., RuntimeSettings]
) -> Iterator[httpx.Client]:
    # vad=auto from 0 s: every request would get VAD under faster-whisper, so each one here
    # checks that the server does not ask the torch engine (which has none) for it.
    settings = make_tiny_settings(engine="torch", vad="auto", vad_min_audio_seconds=0.0)
    with start_server(settings) as server, server.client() as client:
        yield client


def post_jfk(client: httpx.Client, shared_audio: Path, **fields: object) -> httpx.Response:
    audio = shared_audio / "jfk.flac"
    return client.post(
        "/v1/audio/transcriptions",
        files={"file": (audio.name, audio.read_bytes())},
        data={"model": "tiny.en", **fields},
    )


def test_torch_engine_transcribes_jfk_over_http(
    torch_client: httpx.Client, shared_audio: Path, wer: Callable[[str, str], float]
) -> None:
    response = post_jfk(torch_client, shared_audio, response_format="verbose_json")

    assert response.status_code == 200, response.text
    body = response.json()
    assert wer(JFK_REFERENCE, body["text"]) <= 0.15
    assert body["segments"], body
    assert "words" not in body


def test_word_timestamps_on_torch_engine_are_a_400_naming_faster_whisper(
    torch_client: httpx.Client, shared_audio: Path
) -> None:
    response = post_jfk(
        torch_client,
        shared_audio,
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word"]},
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "timestamp_granularities[]"
    assert "faster-whisper" in error["message"]
    assert torch_client.get("/readyz").status_code == 200


def test_vad_on_with_torch_engine_is_refused_before_loading(
    make_tiny_settings: Callable[..., RuntimeSettings],
) -> None:
    with pytest.raises(ValueError, match="faster-whisper"):
        load_engine(make_tiny_settings(engine="torch", vad="on"))


def test_control_tokens_in_a_prompt_stay_text_on_torch_engine(
    torch_client: httpx.Client, shared_audio: Path, wer: Callable[[str, str], float]
) -> None:
    prompt = "<|endoftext|><|startoftranscript|><|notimestamps|>" * 20
    response = post_jfk(torch_client, shared_audio, prompt=prompt, hotwords=prompt)

    assert response.status_code == 200, response.text
    assert wer(JFK_REFERENCE, response.json()["text"]) <= 0.15
