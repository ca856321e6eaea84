"""More requests than slots plus waiting places: the rest get 429, the accepted all succeed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.conftest import JFK_REFERENCE
from tests.runtime.conftest import RunningServer
from voicefleet_runtime.settings import RuntimeSettings

BURST = 8


async def burst(base_url: str, headers: dict[str, str], audio: bytes) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as client:
        start = asyncio.Event()

        async def one() -> httpx.Response:
            await start.wait()
            return await client.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": "tiny.en"},
            )

        tasks = [asyncio.create_task(one()) for _ in range(BURST)]
        start.set()
        return await asyncio.gather(*tasks)


def test_overload_gets_429_with_retry_after_and_accepted_requests_succeed(
    start_server: Callable[[RuntimeSettings], AbstractContextManager[RunningServer]],
    make_tiny_settings: Callable[..., RuntimeSettings],
    shared_audio: Path,
    wer: Callable[[str, str], float],
) -> None:
    settings = make_tiny_settings(concurrency=1, queue_size=1)
    with start_server(settings) as server:
        audio = (shared_audio / "jfk.flac").read_bytes()
        responses = asyncio.run(burst(server.base_url, server.headers, audio))

        refused = [r for r in responses if r.status_code == 429]
        served = [r for r in responses if r.status_code != 429]
        assert refused, "a burst of 8 on 1 slot + 1 waiting place must overflow"
        assert len(served) >= 2
        for response in served:
            assert response.status_code == 200, response.text
            assert wer(JFK_REFERENCE, response.json()["text"]) <= 0.1
        for response in refused:
            assert int(response.headers["Retry-After"]) >= 1
            error = response.json()["error"]
            assert error["code"] == "queue_full"
            assert error["type"] == "rate_limit_error"
        # Once the burst is over the server has room again.
        with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as client:
            after = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": "tiny.en"},
            )
            assert after.status_code == 200
