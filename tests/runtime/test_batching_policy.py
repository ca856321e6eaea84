"""Which decoder long audio takes: batched under auto on cpu and cuda, sequential when off.

bench/batched_inference.py is the evidence for the cpu default; these tests pin the policy and
show that the server really takes the path the policy names, on real audio.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import JFK_REFERENCE
from tests.runtime.conftest import RunningServer
from voicefleet_runtime.engine.batching import BatchedMode, batching_enabled, batching_policy
from voicefleet_runtime.metric_names import BATCH_SIZE
from voicefleet_runtime.settings import RuntimeSettings

StartServer = Callable[[RuntimeSettings], AbstractContextManager[RunningServer]]
MULTILINGUAL_OPENING = "permission is hereby granted free of charge to any person obtaining a copy"


@pytest.mark.parametrize(
    ("mode", "device", "expected"),
    [
        ("auto", "cuda", True),
        ("auto", "cpu", True),
        ("on", "cpu", True),
        ("on", "cuda", True),
        ("off", "cuda", False),
        ("off", "cpu", False),
    ],
)
def test_batching_follows_mode_and_device(mode: BatchedMode, device: str, expected: bool) -> None:
    assert batching_enabled(mode, device) is expected


def test_policy_batches_only_audio_at_least_the_threshold() -> None:
    on_gpu = batching_policy("auto", "cuda", batch_size=8, min_audio_seconds=60.0)
    assert not on_gpu.applies_to(59.9)
    assert on_gpu.applies_to(60.0)
    assert not batching_policy("auto", "cuda", 8, min_audio_seconds=0).applies_to(600.0)
    assert not batching_policy("off", "cuda", 8, min_audio_seconds=60.0).applies_to(600.0)


def test_batched_setting_reads_its_env_and_defaults_to_auto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RuntimeSettings().batched == "auto"
    monkeypatch.setenv("VOICEFLEET_BATCHED", "on")
    monkeypatch.setenv("VOICEFLEET_BATCHED_MIN_AUDIO_SECONDS", "45")
    settings = RuntimeSettings()
    assert (settings.batched, settings.batched_min_audio_seconds) == ("on", 45.0)
    monkeypatch.setenv("VOICEFLEET_BATCHED", "sometimes")
    with pytest.raises(ValueError, match="batched"):
        RuntimeSettings()


def batch_sizes_observed(client: httpx.Client) -> tuple[float, float]:
    """(sum, count) of the batch-size histogram on /metrics."""
    response = client.get("/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        if family.name == BATCH_SIZE:
            values = {sample.name: sample.value for sample in family.samples}
            return values[f"{BATCH_SIZE}_sum"], values[f"{BATCH_SIZE}_count"]
    raise AssertionError(f"{BATCH_SIZE} is not on /metrics")


def transcribe(client: httpx.Client, path: Path) -> str:
    response = client.post(
        "/v1/audio/transcriptions",
        files={"file": (path.name, path.read_bytes())},
        data={"model": "tiny.en"},
    )
    assert response.status_code == 200, response.text
    text: str = response.json()["text"]
    return text


def test_cpu_server_batches_the_long_clip_under_auto(
    start_server: StartServer,
    make_tiny_settings: Callable[..., RuntimeSettings],
    shared_audio: Path,
    wer: Callable[[str, str], float],
) -> None:
    settings = make_tiny_settings(
        batched="auto", batch_size=4, batched_min_audio_seconds=30.0, max_audio_seconds=120.0
    )
    with start_server(settings) as server, server.client() as client:
        before = batch_sizes_observed(client)
        text = transcribe(client, shared_audio / "multilingual.mp3")
        after = batch_sizes_observed(client)
    assert (after[0] - before[0], after[1] - before[1]) == (4.0, 1.0)
    opening = " ".join(text.split()[: len(MULTILINGUAL_OPENING.split())])
    assert wer(MULTILINGUAL_OPENING, opening) <= 0.2, text


def test_batched_off_decodes_long_audio_sequentially(
    start_server: StartServer,
    make_tiny_settings: Callable[..., RuntimeSettings],
    shared_audio: Path,
    wer: Callable[[str, str], float],
) -> None:
    settings = make_tiny_settings(batched="off", batched_min_audio_seconds=10.0)
    with start_server(settings) as server, server.client() as client:
        before = batch_sizes_observed(client)
        text = transcribe(client, shared_audio / "jfk.flac")  # 11 s: long by this threshold
        after = batch_sizes_observed(client)
    assert wer(JFK_REFERENCE, text) <= 0.1
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


def test_batched_captions_keep_whispers_segment_timing(
    start_server: StartServer,
    make_tiny_settings: Callable[..., RuntimeSettings],
    shared_audio: Path,
) -> None:
    # Without timestamps the batched pipeline returns one segment per speech chunk (up to
    # 30 s), which makes useless captions: timed formats must ask for Whisper's timing.
    settings = make_tiny_settings(
        batched="auto", batch_size=4, batched_min_audio_seconds=30.0, max_audio_seconds=120.0
    )
    with start_server(settings) as server, server.client() as client:
        before = batch_sizes_observed(client)
        response = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("multilingual.mp3", (shared_audio / "multilingual.mp3").read_bytes())},
            data={"model": "tiny.en", "response_format": "verbose_json"},
        )
        after = batch_sizes_observed(client)
    assert response.status_code == 200, response.text
    assert after[0] - before[0] == 4.0  # it did go through the batched pipeline
    segments = response.json()["segments"]
    lengths = [segment["end"] - segment["start"] for segment in segments]
    assert len(segments) > 6, lengths
    assert max(lengths) < 15.0, lengths
    starts = [segment["start"] for segment in segments]
    assert starts == sorted(starts)
