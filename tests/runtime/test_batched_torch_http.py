"""The batched torch engine behind real HTTP: mixed concurrent requests, metrics, SIGTERM.

Requests of every shape (formats, streaming, words, the legacy endpoint) arrive at once and
share the decode batch; each must get its own, complete answer. Then a real `voicefleet
serve` process is stopped with SIGTERM while several requests are inside the batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import JFK_REFERENCE
from tests.loopback import free_port, serve_on_loopback, wait_for
from tests.runtime.conftest import RunningServer
from tests.runtime.test_shutdown import gauges
from voicefleet_runtime import metric_names
from voicefleet_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.slow

StartServer = Callable[[RuntimeSettings], AbstractContextManager[RunningServer]]
CLIENTS = 6
GRACE_SECONDS = 120


@pytest.fixture(scope="module")
def batched_server(
    start_server: StartServer, make_tiny_settings: Callable[..., RuntimeSettings]
) -> Iterator[RunningServer]:
    settings = make_tiny_settings(
        engine="torch",
        continuous_batching="on",
        concurrency=CLIENTS,
        batch_max_sequences=8,
        batch_memory_gib=1.0,
        decode_processes=2,  # as on a GPU node: uploads decode beside the batching loop
    )
    with start_server(settings) as server:
        yield server


def test_mixed_concurrent_requests_each_get_their_own_answer(
    batched_server: RunningServer, shared_audio: Path, wer: Callable[[str, str], float]
) -> None:
    jfk = (shared_audio / "jfk.flac").read_bytes()
    hotwords = (shared_audio / "hotwords.mp3").read_bytes()
    transcriptions = "/v1/audio/transcriptions"
    calls: dict[str, tuple[str, dict[str, object], bytes, str]] = {
        "json": (transcriptions, {"response_format": "json"}, jfk, "file"),
        "srt": (transcriptions, {"response_format": "srt"}, jfk, "file"),
        "words": (
            transcriptions,
            {"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
            jfk,
            "file",
        ),
        "stream": (transcriptions, {"stream": "true"}, jfk, "file"),
        "text": (transcriptions, {"response_format": "text"}, hotwords, "file"),
        "legacy": ("/transcribe", {}, jfk, "audio"),
    }

    def call(name: str) -> tuple[str, httpx.Response]:
        path, fields, audio, field = calls[name]
        data = fields if path == "/transcribe" else {"model": "tiny.en", **fields}
        with batched_server.client() as client:
            return name, client.post(path, files={field: ("clip", audio)}, data=data)

    assert len(batched_server.runtime.audio_decoder.worker_pids()) == 2
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = dict(pool.map(call, calls))
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)

    assert wer(JFK_REFERENCE, answers["json"].json()["text"]) <= 0.15
    assert wer(JFK_REFERENCE, answers["legacy"].json()["text"]) <= 0.15
    assert answers["legacy"].json()["language"] == "en"
    srt = answers["srt"].text
    assert srt.startswith("1\n00:00:00,000 --> ")
    assert "country" in srt
    verbose = answers["words"].json()
    assert wer(JFK_REFERENCE, verbose["text"]) <= 0.15
    words = verbose["words"]
    assert len(words) >= 20
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    for segment in verbose["segments"]:
        inside = [w for w in words if segment["start"] <= w["start"] < segment["end"]]
        assert inside, segment
    events = [
        json.loads(line[len("data: ") :])
        for line in answers["stream"].text.splitlines()
        if line.startswith("data: ")
    ]
    deltas = [e["delta"] for e in events if e["type"] == "transcript.text.delta"]
    assert len(deltas) >= 2
    assert events[-1]["type"] == "transcript.text.done"
    assert wer(JFK_REFERENCE, events[-1]["text"]) <= 0.15
    assert answers["text"].text.strip()

    samples = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(batched_server.client().get("/metrics").text)
        for sample in family.samples
    }
    assert samples[(metric_names.DECODE_TOKENS, None)] > 0
    steps = samples[(metric_names.DECODE_BATCH_SIZE + "_count", None)]
    alone = samples[(metric_names.DECODE_BATCH_SIZE + "_bucket", "1")]
    assert steps > alone  # some steps decoded several requests' windows at once
    assert samples[(metric_names.BATCH_ACTIVE_SEQUENCES, None)] == 0
    assert samples[(metric_names.QUEUE_DEPTH, None)] == 0


@pytest.fixture
def batched_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "VOICEFLEET_ENGINE": "torch",
        "VOICEFLEET_CONTINUOUS_BATCHING": "on",
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_CPU_THREADS": "2",
        "VOICEFLEET_CONCURRENCY": "3",
        "VOICEFLEET_QUEUE_SIZE": "2",
        "VOICEFLEET_BATCH_MEMORY_GIB": "1",
        "VOICEFLEET_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    with serve_on_loopback(port, env, tmp_path / "server.log", "--model", "tiny.en") as process:
        yield process, f"http://127.0.0.1:{port}"


def test_sigterm_drains_every_request_in_the_batch(
    batched_process: tuple[subprocess.Popen[bytes], str], shared_audio: Path
) -> None:
    process, base_url = batched_process
    audio = (shared_audio / "jfk.flac").read_bytes()

    def transcribe() -> httpx.Response:
        return httpx.post(
            f"{base_url}/v1/audio/transcriptions",
            files={"file": ("speech.flac", audio)},
            data={"model": "tiny.en"},
            timeout=GRACE_SECONDS,
        )

    with ThreadPoolExecutor(3) as pool:
        accepted = [pool.submit(transcribe) for _ in range(3)]
        wait_for(
            lambda: gauges(base_url).get(metric_names.BATCH_ACTIVE_SEQUENCES, 0) >= 3,
            60,
            "several requests' windows in the batch at once",
        )
        process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: httpx.get(f"{base_url}/readyz", timeout=2).status_code == 503,
            10,
            "/readyz to fail after SIGTERM",
        )
        for future in accepted:
            response = future.result(timeout=GRACE_SECONDS)
            assert response.status_code == 200, response.text
            assert "country" in response.json()["text"].lower()
    assert process.wait(timeout=GRACE_SECONDS) == 0
