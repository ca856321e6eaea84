"""The official openai client against the multilingual base model: transcribe and translate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import JFK_REFERENCE
from tests.runtime.conftest import API_KEY, RunningServer, serve_in_thread
from voicefleet_runtime.settings import RuntimeSettings


@pytest.fixture(scope="module")
def base_server() -> Iterator[RunningServer]:
    settings = RuntimeSettings(
        model="base", device="cpu", cpu_threads=2, beam_size=1, api_key=API_KEY, warmup=True
    )
    yield from serve_in_thread(settings)


@pytest.fixture(scope="module")
def client(base_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_server.base_url}/v1", api_key=API_KEY, max_retries=0)


def test_openai_client_transcribes_jfk(
    client: openai.OpenAI, shared_audio: Path, wer: Callable[[str, str], float]
) -> None:
    with (shared_audio / "jfk.flac").open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert wer(JFK_REFERENCE, result.text) <= 0.1


def test_openai_client_verbose_json_with_words(
    client: openai.OpenAI, shared_audio: Path, wer: Callable[[str, str], float]
) -> None:
    with (shared_audio / "jfk.flac").open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="base",
            file=audio,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.1)
    assert result.words is not None
    assert result.segments is not None
    assert wer(JFK_REFERENCE, " ".join(word.word for word in result.words)) <= 0.1


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_openai_client_translates_german_speech(client: openai.OpenAI, shared_audio: Path) -> None:
    with (shared_audio / "multilingual.mp3").open("rb") as audio:
        result = client.audio.translations.create(model="whisper-1", file=audio)
    text = result.text.lower()
    # The recording is the MIT licence read in English, then in German: a translation is
    # English throughout, so the licence's key words appear and German function words don't.
    assert "permission" in text
    assert "software" in text
    german = {"und", "der", "die", "das", "nicht", "oder"}
    assert not german & set(text.replace(",", " ").replace(".", " ").split())


def test_openai_client_sees_a_missing_model_as_not_found(
    client: openai.OpenAI, shared_audio: Path
) -> None:
    with (
        (shared_audio / "jfk.flac").open("rb") as audio,
        pytest.raises(openai.NotFoundError) as error,
    ):
        client.audio.transcriptions.create(model="large-v3", file=audio)
    assert error.value.code == "model_not_found"


def test_openai_client_lists_models(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["base", "whisper-1"]
