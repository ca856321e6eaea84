"""Every bad speech request gets OpenAI's error shape and the right status; a full server
answers 429 with Retry-After; metrics count what was spoken."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.conftest import RunningServer, serve_in_thread, tiny_settings

GOOD: dict[str, Any] = {"model": "tts-1", "input": "Hello there.", "voice": "alloy"}

CASES: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    # name, body changes, status, error code, param
    ("empty input", {"input": ""}, 400, "invalid_value", "input"),
    ("nothing to say", {"input": " ... !!"}, 400, "empty_input", "input"),
    ("only Chinese", {"input": "你好。"}, 400, "empty_input", "input"),
    ("input too long", {"input": "a" * 4097}, 400, "invalid_value", "input"),
    ("unknown voice", {"voice": "bob"}, 400, "invalid_value", "voice"),
    ("voice not a string", {"voice": 7}, 400, "invalid_value", "voice"),
    ("bad format", {"response_format": "ogg"}, 400, "invalid_value", "response_format"),
    ("speed too low", {"speed": 0.2}, 400, "invalid_value", "speed"),
    ("speed too high", {"speed": 4.5}, 400, "invalid_value", "speed"),
    ("speed not a number", {"speed": "fast"}, 400, "invalid_value", "speed"),
    ("bad stream format", {"stream_format": "chunks"}, 400, "invalid_value", "stream_format"),
    ("instructions too long", {"instructions": "x" * 4097}, 400, "invalid_value", "instructions"),
    ("missing model", {"model": None}, 400, "missing_required_parameter", "model"),
    ("missing input", {"input": None}, 400, "missing_required_parameter", "input"),
    ("missing voice", {"voice": None}, 400, "missing_required_parameter", "voice"),
    ("an STT model", {"model": "whisper-1"}, 404, "model_not_found", "model"),
    ("unknown model", {"model": "tts-2"}, 404, "model_not_found", "model"),
]


def body_with(changes: dict[str, Any]) -> dict[str, Any]:
    body = {**GOOD, **changes}
    return {key: value for key, value in body.items() if value is not None}


@pytest.mark.parametrize(
    ("changes", "status", "code", "param"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request_table(
    speech_server: RunningServer,
    changes: dict[str, Any],
    status: int,
    code: str,
    param: str | None,
) -> None:
    with speech_server.client() as client:
        response = client.post("/v1/audio/speech", json=body_with(changes))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_body_that_is_not_json(speech_server: RunningServer) -> None:
    with speech_server.client() as client:
        response = client.post(
            "/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_missing_key_is_401(speech_server: RunningServer) -> None:
    response = httpx.post(f"{speech_server.base_url}/v1/audio/speech", json=GOOD, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def samples(base_url: str, headers: dict[str, str]) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def test_full_server_answers_429_and_metrics_count_speech(speech_server: RunningServer) -> None:
    """One slot, no queue: while a stream holds the slot, the next request is refused."""
    settings = tiny_settings(
        stt_enabled=False, tts_model="kokoro", warmup=False, concurrency=1, queue_size=0
    )
    loaded = speech_server.runtime.tts
    assert loaded is not None
    text = "The slot is taken. It stays taken until this whole answer has been read."
    for server in serve_in_thread(settings, tts_engine_factory=lambda _: loaded):
        with (
            server.client() as client,
            client.stream("POST", "/v1/audio/speech", json={**GOOD, "input": text}) as held,
        ):
            assert held.status_code == 200
            refused = client.post("/v1/audio/speech", json=GOOD)
            body = b"".join(held.iter_bytes())
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        assert body
        metrics = samples(server.base_url, server.headers)
        assert metrics["voicefleet_tts_characters_total"] == len(text)
        assert metrics["voicefleet_tts_audio_seconds_total"] > 2
        assert metrics["voicefleet_tts_time_to_first_audio_seconds_count"] == 1
        assert metrics["voicefleet_tts_real_time_factor_count"] == 1
        assert metrics["voicefleet_queue_depth"] == 0
        assert metrics["voicefleet_requests_in_flight"] == 0
