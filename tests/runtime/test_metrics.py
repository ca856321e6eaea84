"""/metrics after real traffic: the documented series, labels and values; no GPU series here."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.conftest import RunningServer
from voicefleet_runtime import metric_names
from voicefleet_runtime.settings import RuntimeSettings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def samples(
    start_server: Callable[[RuntimeSettings], AbstractContextManager[RunningServer]],
    make_tiny_settings: Callable[..., RuntimeSettings],
    shared_audio: Path,
) -> Samples:
    """A fresh server (its own registry) after two transcriptions, one refusal and a 404."""
    settings = make_tiny_settings(concurrency=2, queue_size=3)
    with start_server(settings) as server, server.client() as client:
        audio = (shared_audio / "jfk.flac").read_bytes()
        for _ in range(2):
            ok = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": "tiny.en"},
            )
            assert ok.status_code == 200
        bad = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("x.bin", b"not audio")},
            data={"model": "tiny.en"},
        )
        assert bad.status_code == 415
        assert client.get("/no/such/path").status_code == 404
        return scrape(client)


def test_request_counters_by_endpoint_and_status(samples: Samples) -> None:
    endpoint = "/v1/audio/transcriptions"
    name = metric_names.REQUESTS_TOTAL
    assert value(samples, name, endpoint=endpoint, status="200") == 2
    assert value(samples, name, endpoint=endpoint, status="415") == 1
    assert value(samples, name, endpoint="other", status="404") == 1
    duration = metric_names.REQUEST_DURATION + "_count"
    assert value(samples, duration, endpoint=endpoint) == 3


def test_admission_gauges_are_back_to_idle(samples: Samples) -> None:
    assert value(samples, metric_names.QUEUE_DEPTH) == 0
    assert value(samples, metric_names.REQUESTS_IN_FLIGHT) == 0
    assert value(samples, metric_names.CONCURRENCY_LIMIT) == 2
    assert value(samples, metric_names.QUEUE_CAPACITY) == 3
    assert value(samples, metric_names.UPLOADS_IN_PROGRESS) == 0
    assert value(samples, metric_names.READY) == 1
    assert value(samples, metric_names.DRAINING) == 0


def test_inference_series_count_real_audio(samples: Samples) -> None:
    assert value(samples, metric_names.AUDIO_SECONDS) == pytest.approx(22.0, abs=0.1)
    # The 415 was refused from its container probe, before it took a place in the queue.
    assert value(samples, metric_names.QUEUE_WAIT + "_count") == 2
    assert value(samples, metric_names.REFUSALS_TOTAL, reason="unsupported_audio") == 1
    assert value(samples, metric_names.REAL_TIME_FACTOR + "_count") == 2
    assert 0 < value(samples, metric_names.REAL_TIME_FACTOR + "_sum") < 2
    assert value(samples, metric_names.BATCH_SIZE + "_sum") == 2  # short files: unbatched
    assert value(samples, metric_names.ENGINE_BUSY_SECONDS) > 0
    assert value(samples, metric_names.MODEL_LOAD_SECONDS) > 0
    info = {
        "model": "tiny.en",
        "backend": "faster-whisper",
        "device": "cpu",
        "compute_type": "int8",
    }
    assert value(samples, metric_names.MODEL_INFO, **info) == 1


def nvml_sees_a_gpu() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount()) > 0
    except pynvml.NVMLError:
        return False


def test_gpu_series_exist_exactly_when_nvml_sees_a_gpu(samples: Samples) -> None:
    gpu_series = {
        metric_names.GPU_UTILIZATION,
        metric_names.GPU_MEMORY_USED,
        metric_names.GPU_MEMORY_TOTAL,
    }
    exported = {name for name, _ in samples} & gpu_series
    assert exported == (gpu_series if nvml_sees_a_gpu() else set())
