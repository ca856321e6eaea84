"""tiny.en over HTTP on the real recordings: accuracy, every response format, streaming."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_REFERENCE

WerFn = Callable[[str, str], float]
SRT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def seconds(groups: tuple[str, ...]) -> tuple[float, float]:
    h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in groups)
    return h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000


def post_audio(client: httpx.Client, path: Path, **fields: object) -> httpx.Response:
    data = {"model": "tiny.en", **fields}
    return client.post(
        "/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())}, data=data
    )


def test_jfk_json_is_near_perfect(
    tiny_client: httpx.Client, shared_audio: Path, wer: WerFn
) -> None:
    response = post_audio(tiny_client, shared_audio / "jfk.flac")
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"text"}
    assert wer(JFK_REFERENCE, response.json()["text"]) <= 0.1


def test_verbose_json_has_openai_segments_and_words(
    tiny_client: httpx.Client, shared_audio: Path, wer: WerFn
) -> None:
    response = post_audio(
        tiny_client,
        shared_audio / "jfk.flac",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == pytest.approx(11.0, abs=0.1)
    assert wer(JFK_REFERENCE, body["text"]) <= 0.1
    segment_keys = {
        "id", "seek", "start", "end", "text", "tokens", "temperature",
        "avg_logprob", "compression_ratio", "no_speech_prob",
    }  # fmt: skip
    assert body["segments"]
    for index, segment in enumerate(body["segments"]):
        assert set(segment) == segment_keys
        assert segment["id"] == index
        assert 0 <= segment["start"] < segment["end"] <= body["duration"] + 0.5
        assert all(isinstance(token, int) for token in segment["tokens"])
    words = body["words"]
    assert wer(JFK_REFERENCE, " ".join(w["word"] for w in words)) <= 0.1
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(w["start"] <= w["end"] <= body["duration"] + 0.5 for w in words)


def test_verbose_json_without_word_granularity_has_no_words(
    tiny_client: httpx.Client, shared_audio: Path
) -> None:
    body = post_audio(tiny_client, shared_audio / "jfk.flac", response_format="verbose_json").json()
    assert "words" not in body
    assert body["segments"]


def test_text_format_is_plain_text(
    tiny_client: httpx.Client, shared_audio: Path, wer: WerFn
) -> None:
    response = post_audio(tiny_client, shared_audio / "jfk.flac", response_format="text")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert wer(JFK_REFERENCE, response.text) <= 0.1


@pytest.mark.parametrize(("response_format", "timing"), [("srt", SRT_TIMING), ("vtt", VTT_TIMING)])
def test_subtitle_formats_have_parsable_timings(
    tiny_client: httpx.Client,
    shared_audio: Path,
    wer: WerFn,
    response_format: str,
    timing: re.Pattern[str],
) -> None:
    response = post_audio(tiny_client, shared_audio / "jfk.flac", response_format=response_format)
    assert response.status_code == 200
    lines = response.text.splitlines()
    if response_format == "vtt":
        assert lines[0] == "WEBVTT"
    cues = [seconds(match.groups()) for line in lines if (match := timing.match(line))]
    assert cues, response.text
    assert all(start < end <= 11.5 for start, end in cues)
    assert [start for start, _ in cues] == sorted(start for start, _ in cues)
    if response_format == "srt":
        numbers = [int(line) for line in lines if line.isdigit()]
        assert numbers == list(range(1, len(cues) + 1))
    spoken = [
        line
        for line in lines
        if line and line != "WEBVTT" and not timing.match(line) and not line.isdigit()
    ]
    assert wer(JFK_REFERENCE, " ".join(spoken)) <= 0.1


def test_stream_sends_deltas_then_done(
    tiny_client: httpx.Client, shared_audio: Path, wer: WerFn
) -> None:
    audio = shared_audio / "jfk.flac"
    with tiny_client.stream(
        "POST",
        "/v1/audio/transcriptions",
        files={"file": (audio.name, audio.read_bytes())},
        data={"model": "whisper-1", "stream": "true"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]
    deltas = [event for event in events if event["type"] == "transcript.text.delta"]
    assert deltas
    assert events[-1]["type"] == "transcript.text.done"
    assert len(events) == len(deltas) + 1
    assert "".join(d["delta"] for d in deltas).strip() == events[-1]["text"]
    assert wer(JFK_REFERENCE, events[-1]["text"]) <= 0.1


@pytest.mark.parametrize("variant", ["wav", "ogg", "webm", "m4a", "mp3"])
def test_audio_formats_decode(
    tiny_client: httpx.Client, audio_variants: dict[str, Path], wer: WerFn, variant: str
) -> None:
    response = post_audio(tiny_client, audio_variants[variant], response_format="verbose_json")
    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(11.0, abs=0.2)
    assert wer(JFK_REFERENCE, response.json()["text"]) <= 0.15


def test_stereo_is_mixed_to_mono(tiny_client: httpx.Client, shared_audio: Path) -> None:
    response = post_audio(
        tiny_client, shared_audio / "stereo_diarization.wav", response_format="verbose_json"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(5.0, abs=0.1)
    assert "curtain" in body["text"].lower()


def test_prompt_steers_spelling(tiny_client: httpx.Client, shared_audio: Path) -> None:
    plain = post_audio(tiny_client, shared_audio / "hotwords.mp3").json()["text"]
    prompted = post_audio(tiny_client, shared_audio / "hotwords.mp3", prompt="ComfyUI").json()
    assert "ComfyUI" not in plain
    assert "ComfyUI" in prompted["text"]


def test_legacy_transcribe_endpoint(
    tiny_client: httpx.Client, shared_audio: Path, wer: WerFn
) -> None:
    audio = shared_audio / "jfk.flac"
    response = tiny_client.post("/transcribe", files={"audio": (audio.name, audio.read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"text", "language", "duration"}
    assert body["language"] == "en"
    assert body["duration"] == pytest.approx(11.0, abs=0.1)
    assert wer(JFK_REFERENCE, body["text"]) <= 0.1


def test_models_lists_the_loaded_model_and_aliases(tiny_client: httpx.Client) -> None:
    body = tiny_client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [card["id"] for card in body["data"]] == ["tiny.en", "whisper-1"]
    assert all(card["object"] == "model" for card in body["data"])
    assert tiny_client.get("/v1/models/whisper-1").json()["id"] == "whisper-1"


def test_probes_answer_without_a_key(tiny_client: httpx.Client) -> None:
    bare = httpx.Client(base_url=str(tiny_client.base_url))
    assert bare.get("/healthz").status_code == 200
    assert bare.get("/readyz").json()["status"] == "ready"
    assert bare.get("/metrics").status_code == 200
