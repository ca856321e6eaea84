"""The result cache: LRU order, TTL and byte budget on their own; then through HTTP for both
directions, shared between two servers by a real redis-server, and Redis going away."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.loopback import free_port
from tests.runtime.conftest import RunningServer, serve_in_thread, tiny_settings
from voicefleet_runtime.cache.memory import EvictionReason, MemoryCache
from voicefleet_runtime.settings import RuntimeSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lru_evicts_the_least_recently_used_within_the_byte_budget() -> None:
    evicted: list[EvictionReason] = []
    cache = MemoryCache(max_bytes=10, ttl_seconds=60, on_evict=evicted.append)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recent
    cache.put("c", b"cccc")  # 12 bytes > 10: b goes, not a
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (b"aaaa", None, b"cccc")
    assert cache.size_bytes == 8
    assert evicted == ["budget"]
    cache.put("huge", b"x" * 11)  # larger than the whole budget: not stored, nothing evicted
    assert cache.get("huge") is None
    assert len(cache) == 2


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    evicted: list[EvictionReason] = []
    cache = MemoryCache(max_bytes=100, ttl_seconds=5, on_evict=evicted.append, clock=clock)
    cache.put("k", b"value")
    clock.now = 4.9
    assert cache.get("k") == b"value"
    clock.now = 5.0
    assert cache.get("k") is None
    assert (evicted, cache.size_bytes) == (["expired"], 0)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Debian's redis-server on its own loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: scripts/setup.sh installs it (apt redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while (
        subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
        ).stdout.strip()
        != b"PONG"
    ):
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    try:
        yield url, process
    finally:
        process.kill()
        process.wait()


def counters(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.base_url}/metrics", headers=server.headers, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def cache_count(server: RunningServer, direction: str, result: str) -> float:
    key = ("voicefleet_cache_requests_total", (("direction", direction), ("result", result)))
    return counters(server).get(key, 0.0)


def cached_settings(**overrides: object) -> RuntimeSettings:
    return tiny_settings(
        tts_model="kokoro", warmup=False, cache_max_bytes=8 * 1024 * 1024, **overrides
    )


def speak(server: RunningServer, text: str) -> httpx.Response:
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "opus"}
    with server.client() as client:
        response = client.post("/v1/audio/speech", json=body)
    assert response.status_code == 200, response.text
    return response


def test_speech_and_transcripts_are_cached(
    speech_server: RunningServer, shared_audio: Path
) -> None:
    loaded = speech_server.runtime.tts
    assert loaded is not None
    for server in serve_in_thread(cached_settings(), tts_engine_factory=lambda _: loaded):
        first = speak(server, "Cached speech, said once.")
        # the same words spelled differently normalise to the same key
        second = speak(server, "Cached   speech, said once.")
        assert second.content == first.content
        assert (cache_count(server, "tts", "miss"), cache_count(server, "tts", "hit")) == (1, 1)

        audio = (shared_audio / "jfk.flac").read_bytes()
        with server.client() as client:
            texts = [
                client.post(
                    "/v1/audio/transcriptions",
                    files={"file": ("jfk.flac", audio)},
                    data={"model": "whisper-1", "response_format": response_format},
                ).json()["text"]
                for response_format in ("json", "json", "verbose_json")
            ]
        assert texts[0] == texts[1] == texts[2]
        # verbose_json needs segment timing, a different decode: its own entry
        assert (cache_count(server, "stt", "miss"), cache_count(server, "stt", "hit")) == (2, 1)
        assert counters(server)[("voicefleet_cache_bytes", ())] > len(first.content)


def test_redis_shares_results_and_its_loss_fails_no_request(
    speech_server: RunningServer, redis_url: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, redis_process = redis_url
    loaded = speech_server.runtime.tts
    assert loaded is not None
    settings = cached_settings(cache_redis_url=url)
    with ExitStack() as pods:
        first_pod, second_pod = (
            pods.enter_context(contextmanager(serve_in_thread)(settings, lambda _: loaded))
            for _ in range(2)
        )
        made = speak(first_pod, "Shared through Redis.")
        heard = speak(second_pod, "Shared through Redis.")  # not in its memory: from Redis
        assert heard.content == made.content
        assert cache_count(second_pod, "tts", "hit") == 1

        redis_process.kill()
        redis_process.wait()
        after = speak(second_pod, "Redis is gone, the speech is not.")
        assert after.content
        errors = counters(second_pod)[
            ("voicefleet_cache_backend_errors_total", (("backend", "redis"),))
        ]
        assert errors >= 1
        # the in-process cache still answers
        assert speak(second_pod, "Shared through Redis.").content == made.content
