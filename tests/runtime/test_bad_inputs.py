"""Bad requests get the right status and an OpenAI-shaped error, and the server stays healthy."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_REFERENCE

FOUR_MIB = 4 * 1024 * 1024


@dataclass(frozen=True)
class BadRequest:
    name: str
    status: int
    code: str | None
    param: str | None = None
    file: Callable[[Path], bytes] | None = None
    field_name: str = "file"
    data: dict[str, object] = field(default_factory=lambda: {"model": "tiny.en"})
    headers: dict[str, str] | None = None
    endpoint: str = "/v1/audio/transcriptions"


def jfk(audio: Path) -> bytes:
    return (audio / "jfk.flac").read_bytes()


def random_bytes(_: Path) -> bytes:
    return random.Random(7).randbytes(50_000)


CASES = [
    BadRequest("empty file", 400, "empty_audio", "file", file=lambda _: b""),
    BadRequest("random bytes", 415, "unsupported_audio", "file", file=random_bytes),
    BadRequest("a text file", 415, "unsupported_audio", "file", file=lambda _: b"hello\n" * 500),
    BadRequest(
        "truncated flac", 400, "invalid_audio", "file", file=lambda a: jfk(a)[: len(jfk(a)) // 2]
    ),
    BadRequest(
        "huge upload", 413, "file_too_large", file=lambda a: jfk(a) * (FOUR_MIB // len(jfk(a)) + 1)
    ),
    BadRequest(
        "audio over the length limit",
        413,
        "audio_too_long",
        "file",
        file=lambda a: (a / "multilingual.mp3").read_bytes(),
    ),
    BadRequest(
        "wrong file field name", 400, "missing_required_parameter", "file", file=jfk,
        field_name="audio",
    ),
    BadRequest(
        "wrong model field name", 400, "missing_required_parameter", "model", file=jfk,
        data={"engine": "tiny.en"},
    ),
    BadRequest(
        "negative temperature", 400, "invalid_value", "temperature", file=jfk,
        data={"model": "tiny.en", "temperature": "-0.5"},
    ),
    BadRequest(
        "temperature not a number", 400, "invalid_value", "temperature", file=jfk,
        data={"model": "tiny.en", "temperature": "warm"},
    ),
    BadRequest(
        "unknown response format", 400, "invalid_value", "response_format", file=jfk,
        data={"model": "tiny.en", "response_format": "xml"},
    ),
    BadRequest(
        "unknown timestamp granularity", 400, "invalid_value", "timestamp_granularities[].0",
        file=jfk, data={"model": "tiny.en", "timestamp_granularities[]": "sentence"},
    ),
    BadRequest(
        "unknown model", 404, "model_not_found", "model", file=jfk,
        data={"model": "large-v9"},
    ),
    BadRequest(
        "language the model lacks", 400, "unsupported_request", "language", file=jfk,
        data={"model": "tiny.en", "language": "de"},
    ),
    BadRequest(
        "translation on an English-only model", 400, "unsupported_request", "model", file=jfk,
        endpoint="/v1/audio/translations",
    ),
    BadRequest(
        "bad token", 401, "invalid_api_key", file=jfk,
        headers={"Authorization": "Bearer not-the-key"},
    ),
    BadRequest("no token", 401, "invalid_api_key", file=jfk, headers={}),
    BadRequest("basic auth instead of bearer", 401, "invalid_api_key", file=jfk,
               headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    BadRequest("unknown path", 404, "not_found", endpoint="/v1/audio/nowhere", file=jfk),
    BadRequest("speech on a server without TTS", 404, "model_not_found",
               endpoint="/v1/audio/speech", file=jfk),
]  # fmt: skip


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, str] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def client(tiny_server: object, tiny_client: httpx.Client) -> Iterator[httpx.Client]:
    yield tiny_client
    # After the whole table the server still answers probes and transcribes correctly.
    assert tiny_client.get("/readyz").status_code == 200


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_request_is_refused_in_openai_shape(
    client: httpx.Client, shared_audio: Path, case: BadRequest
) -> None:
    files = {case.field_name: ("upload.bin", case.file(shared_audio))} if case.file else None
    headers = None if case.headers is None else {"Authorization": "", **case.headers}
    if case.headers == {}:
        response = httpx.post(
            f"{client.base_url}{case.endpoint}", files=files, data=case.data, timeout=60
        )
    else:
        response = client.post(case.endpoint, files=files, data=case.data, headers=headers)
    error = assert_openai_error(response, case.status, case.code)
    if case.param is not None:
        assert error["param"] == case.param
    if case.status == 401:
        assert "not-the-key" not in response.text
    assert client.get("/readyz").status_code == 200


def test_chunked_upload_over_the_limit_is_cut_off(client: httpx.Client, shared_audio: Path) -> None:
    """No Content-Length to trust: the server counts what arrives and refuses past the limit.

    httpx writes the whole body before it reads the answer, so the client-side byte count
    says nothing about the server; the status and error code do.
    """
    boundary = "voicefleetboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ntiny.en\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\n'
        "Content-Type: audio/flac\r\n\r\n"
    ).encode()
    chunk = jfk(shared_audio)
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield head
        while sent < 16 * 1024 * 1024:
            sent += len(chunk)
            yield chunk

    response = client.post(
        "/v1/audio/transcriptions",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in response.request.headers
    assert_openai_error(response, 413, "file_too_large")


def test_wrong_method_is_openai_shaped(client: httpx.Client) -> None:
    assert_openai_error(client.get("/v1/audio/transcriptions"), 405, "method_not_allowed")


def test_server_transcribes_after_the_table(
    client: httpx.Client, shared_audio: Path, wer: Callable[[str, str], float]
) -> None:
    response = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("jfk.flac", jfk(shared_audio))},
        data={"model": "tiny.en"},
    )
    assert response.status_code == 200
    assert wer(JFK_REFERENCE, response.json()["text"]) <= 0.1
