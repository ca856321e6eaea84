"""Both metric sources against real runtime processes, and a real Prometheus scraping them."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from faster_whisper import decode_audio

from tests.autoscaler.runtime_fleet import RuntimeProcess
from tests.loopback import free_port
from voicefleet_operator.autoscaler.policy import Observation, PodState, Policy, decide
from voicefleet_operator.autoscaler.sources.pods import ScrapeTarget, scrape_pods, scrape_target
from voicefleet_operator.autoscaler.sources.prometheus import PrometheusSource, query_pods
from voicefleet_operator.autoscaler.timer import prometheus_source
from voicefleet_operator.builders.metrics_queries import (
    VOICESERVICE_SERIES_LABEL,
    default_queries,
    pod_matchers,
)
from voicefleet_operator.crd.models import parse_voiceservice

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
LABELLED = default_queries(pod_matchers("speech", "voice"))
"""The queries the operator sends for VoiceService speech/voice: pods matched by label."""


def targets(fleet: list[RuntimeProcess]) -> list[ScrapeTarget]:
    pods = [
        {
            "metadata": {"name": s.pod, "annotations": {"prometheus.io/port": str(s.port)}},
            "status": {"podIP": "127.0.0.1"},
        }
        for s in fleet
    ]
    found = [scrape_target(pod) for pod in pods]
    assert all(t is not None for t in found)
    return [t for t in found if t is not None]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def transcribe(
    http: httpx.AsyncClient,
    server: RuntimeProcess,
    audio: bytes,
    filename: str = "multilingual.mp3",
) -> int:
    response = await http.post(
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": (filename, audio)},
        data={"model": "whisper-1"},
        timeout=300,
    )
    return response.status_code


def long_speech_wav(recording: Path, repeats: int) -> bytes:
    """The recording played `repeats` times as 16 kHz WAV: requests long enough that a queue
    behind them holds still for several seconds, whatever the machine's speed."""
    pcm = np.tile(decode_audio(str(recording), sampling_rate=16_000), repeats)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def test_scrape_target_uses_each_pods_own_port() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "a", "annotations": {}},
        "spec": {"containers": [{"ports": [{"containerPort": 9123}]}]},
        "status": {"podIP": "10.0.0.7"},
    }
    assert scrape_target(pod) == ScrapeTarget("a", "http://10.0.0.7:9123/metrics")
    pod["metadata"]["annotations"] = {"prometheus.io/port": "8001"}
    assert scrape_target(pod) == ScrapeTarget("a", "http://10.0.0.7:8001/metrics")
    assert scrape_target({"metadata": {"name": "b"}, "status": {}}) is None


async def test_pods_source_reads_real_runtimes_and_reports_a_dead_pod_as_unknown(
    runtime_fleet: list[RuntimeProcess], client: httpx.AsyncClient
) -> None:
    dead = ScrapeTarget("gone", f"http://127.0.0.1:{free_port()}/metrics")
    samples = await scrape_pods(client, [*targets(runtime_fleet), dead], timeout_seconds=2)
    by_pod = {s.pod: s for s in samples}
    assert not by_pod["gone"].ok
    assert by_pod["gone"].error == "ConnectError"
    for server in runtime_fleet:
        sample = by_pod[server.pod]
        assert sample.ok, sample.error
        assert sample.concurrency == 1
        assert sample.busy_seconds_total is not None
        assert sample.jobs_total is not None
        assert sample.gpu_utilization is None  # no NVIDIA GPU here


async def test_pods_source_sees_real_queue_depth(
    runtime_fleet: list[RuntimeProcess], client: httpx.AsyncClient, shared_audio: Path
) -> None:
    audio = (shared_audio / "multilingual.mp3").read_bytes()
    server = runtime_fleet[0]
    [target] = targets([server])
    before = (await scrape_pods(client, [target]))[0]
    requests = [asyncio.create_task(transcribe(client, server, audio)) for _ in range(3)]
    seen_queue = 0.0
    while not all(r.done() for r in requests):
        sample = (await scrape_pods(client, [target]))[0]
        assert sample.ok, sample.error
        seen_queue = max(seen_queue, sample.queued)
        await asyncio.sleep(0.2)
    assert [r.result() for r in requests] == [200, 200, 200]
    after = (await scrape_pods(client, [target]))[0]
    assert seen_queue >= 1  # one slot, three requests: two waited
    assert after.jobs_total is not None
    assert before.jobs_total is not None
    assert after.jobs_total - before.jobs_total == 3
    assert after.busy_seconds_total is not None
    assert before.busy_seconds_total is not None
    assert after.busy_seconds_total > before.busy_seconds_total


@pytest.fixture(scope="module")
def prometheus(
    runtime_fleet: list[RuntimeProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus on loopback scraping the runtimes every second, labelled by pod."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "voicefleet",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{s.port}"],
                        # As the ServiceMonitor's podTargetLabels copy the pod label.
                        "labels": {
                            "pod": s.pod,
                            "namespace": "speech",
                            VOICESERVICE_SERIES_LABEL: "voice",
                        },
                    }
                    for s in runtime_fleet
                ],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (folder / "prometheus.log").read_text()
            try:
                response = httpx.get(f"{url}/api/v1/query", params={"query": "up"}, timeout=2)
            except httpx.TransportError:
                response = None
            # While its TSDB opens, Prometheus answers 503 "Service Unavailable" in plain text.
            if response is not None and response.status_code == 200:
                results = response.json()["data"]["result"]
                if len([r for r in results if r["value"][1] == "1"]) == len(runtime_fleet):
                    break
            assert time.monotonic() < deadline, "Prometheus did not scrape all runtimes"
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_prometheus_source_gives_the_same_decision_as_the_pods_source(
    runtime_fleet: list[RuntimeProcess],
    prometheus: str,
    client: httpx.AsyncClient,
    shared_audio: Path,
) -> None:
    audio = long_speech_wav(shared_audio / "multilingual.mp3", repeats=3)
    names = [s.pod for s in runtime_fleet]
    source = PrometheusSource(url=prometheus, queries=LABELLED)
    policy = Policy(min_replicas=1, max_replicas=10, target_queue_depth_per_replica=1.0)
    pods = [PodState(name, "ready", 0.0) for name in names]
    # Keep the first runtime busy with a standing queue, so both sources have load to see.
    requests = [
        asyncio.create_task(transcribe(client, runtime_fleet[0], audio, "speech.wav"))
        for _ in range(4)
    ]
    compared = 0
    try:
        while not all(r.done() for r in requests) and compared < 2:
            first = await scrape_pods(client, targets(runtime_fleet))
            await asyncio.sleep(1.3)  # more than one scrape interval of Prometheus
            from_prometheus = await query_pods(client, source, names)
            second = await scrape_pods(client, targets(runtime_fleet))
            if [(s.queued, s.running) for s in first] != [(s.queued, s.running) for s in second]:
                continue  # the load moved while we looked: no stable moment to compare
            load = {s.pod: (s.queued, s.running, s.concurrency) for s in second}
            assert {s.pod: (s.queued, s.running, s.concurrency) for s in from_prometheus} == load
            now = 100.0
            by_pods = decide(policy, [Observation(now, 3, second)], pods, now)
            by_prometheus = decide(policy, [Observation(now, 3, from_prometheus)], pods, now)
            assert by_pods.desired == by_prometheus.desired
            assert by_pods.reason == by_prometheus.reason
            compared += 1
    finally:
        statuses = await asyncio.gather(*requests)
    assert statuses == [200] * 4
    assert compared >= 1, "the load never held still for a comparison"


async def test_prometheus_source_fails_pods_when_the_query_fails(
    prometheus: str, client: httpx.AsyncClient
) -> None:
    broken = PrometheusSource(url=prometheus, queries=replace(LABELLED, queued="sum(("))
    samples = await query_pods(client, broken, ["voice-0", "voice-1"])
    assert [s.ok for s in samples] == [False, False]
    assert all("queued query" in (s.error or "") for s in samples)
    unknown = PrometheusSource(url=prometheus, queries=LABELLED)
    [sample] = await query_pods(client, unknown, ["not-scraped"])
    assert not sample.ok
    assert sample.error == "no series in Prometheus"


async def test_the_builtin_autoscaler_reads_the_specs_queue_depth_query(
    runtime_fleet: list[RuntimeProcess], prometheus: str, client: httpx.AsyncClient
) -> None:
    """metrics.prometheus.queueDepthQuery reaches the builtin autoscaler's source (7 more
    waiting requests per pod than the runtimes report: only the spec's query says so)."""
    custom = (
        "max by (pod) (voicefleet_queue_depth"
        f'{{namespace="speech",{VOICESERVICE_SERIES_LABEL}="voice"}}) + 7'
    )
    vs = parse_voiceservice(
        {
            "metadata": {"name": "voice", "namespace": "speech"},
            "spec": {
                "model": {"name": "tiny.en"},
                "autoscaling": {
                    "metrics": {
                        "source": "prometheus",
                        "prometheus": {"url": prometheus, "queueDepthQuery": custom},
                    }
                },
            },
        }
    )
    source = prometheus_source(vs)
    assert source is not None
    samples = await query_pods(client, source, [s.pod for s in runtime_fleet])
    assert [s.ok for s in samples] == [True] * len(runtime_fleet)
    assert all(s.queued is not None and s.queued >= 7 for s in samples)
    [idle] = await query_pods(
        client, PrometheusSource(url=prometheus, queries=LABELLED), ["voice-0"]
    )
    assert idle.queued is not None
    assert idle.queued < 7
