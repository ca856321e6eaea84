"""Our TTS speaks sentences with numbers, times, money and abbreviations; our STT (tiny.en, in
the same process) transcribes them back; the words must survive the round trip."""

from __future__ import annotations

import re

import httpx
import jiwer

from tests.runtime.conftest import RunningServer
from voicefleet_runtime.tts.normalize import normalize_text

SENTENCES = (
    ("The train leaves at 9:30 and arrives at 11:45.", "af_heart"),
    ("Dr. Brown bought 3 books for $12.50 on Jan. 5th.", "am_michael"),
    ("About 25% of the 1,200 students live on Main St. near the station.", "nova"),
    ("Mr. Lee ran 42 km in 3 hours, which is about 14 km per hour.", "onyx"),
)
MAX_WORD_ERROR_RATE = 0.05

_WHISPER_TIME = re.compile(r"(?<![$£€\d.])\b(\d{1,2})\.(\d{2})\b")


def spoken_words(text: str) -> str:
    """Both sides in the spoken-word domain: our normaliser says "$12.50" and "12 dollars and
    50 cents" alike."""
    words = re.sub(r"[^a-z0-9' ]+", " ", normalize_text(text).lower().replace("-", " "))
    return " ".join(words.split())


def heard_back(client: httpx.Client, sentence: str, voice: str) -> str:
    """What our STT hears of our TTS speaking `sentence`, in spoken words."""
    spoken = client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": sentence, "voice": voice, "response_format": "flac"},
    )
    assert spoken.status_code == 200, spoken.text
    heard = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.flac", spoken.content, "audio/flac")},
        data={"model": "whisper-1"},
    )
    assert heard.status_code == 200, heard.text
    # tiny.en writes a time as 9.30: read it as the 9:30 it heard
    return spoken_words(_WHISPER_TIME.sub(r"\1:\2", heard.json()["text"]))


def test_tts_then_stt_keeps_the_words(speech_server: RunningServer) -> None:
    references: list[str] = []
    hypotheses: list[str] = []
    with speech_server.client() as client:
        for sentence, voice in SENTENCES:
            references.append(spoken_words(sentence))
            hypotheses.append(heard_back(client, sentence, voice))
    error_rate = jiwer.wer(references, hypotheses)
    assert error_rate <= MAX_WORD_ERROR_RATE, list(zip(references, hypotheses, strict=True))


def test_one_process_lists_both_directions_models(speech_server: RunningServer) -> None:
    with speech_server.client() as client:
        models = {card["id"] for card in client.get("/v1/models").json()["data"]}
    assert {"tiny.en", "whisper-1", "kokoro", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= models


def test_voices_lists_openai_names_and_every_kokoro_voice(speech_server: RunningServer) -> None:
    with speech_server.client() as client:
        voices = client.get("/v1/audio/voices").json()["data"]
    by_id = {voice["id"]: voice for voice in voices}
    assert by_id["alloy"]["kokoro_voice"] == "af_alloy"
    assert by_id["fable"]["language"] == "en-GB"
    kokoro_ids = {voice["kokoro_voice"] for voice in voices}
    assert kokoro_ids <= set(by_id)
    assert len(kokoro_ids) == 28
