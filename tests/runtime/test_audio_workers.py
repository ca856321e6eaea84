"""Uploads decoded in worker processes: same audio, same refusals, and a dead worker replaced."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voicefleet_runtime.audio import decode_pcm16
from voicefleet_runtime.audio_workers import AudioDecoder, decode_process_count
from voicefleet_runtime.errors import ApiError


@pytest.fixture(scope="module")
def decoder() -> Iterator[AudioDecoder]:
    workers = AudioDecoder(1)
    yield workers
    workers.close()


def test_a_worker_process_decodes_what_the_thread_decodes(
    decoder: AudioDecoder, shared_audio: Path
) -> None:
    data = (shared_audio / "jfk.flac").read_bytes()
    in_process = decoder.decode_pcm16(data, 60.0, min_bytes_per_second=1000.0)
    in_thread = decode_pcm16(data, 60.0, min_bytes_per_second=1000.0)
    assert in_process.dtype == np.int16
    assert in_process.shape[0] > 10 * 16_000
    np.testing.assert_array_equal(in_process, in_thread)


def test_refusals_cross_the_process_boundary_with_their_status(
    decoder: AudioDecoder, shared_audio: Path
) -> None:
    with pytest.raises(ApiError) as not_audio:
        decoder.decode_pcm16(b"this is not audio at all" * 40, 60.0)
    assert (not_audio.value.status, not_audio.value.code) == (415, "unsupported_audio")
    with pytest.raises(ApiError) as too_long:
        decoder.decode_pcm16((shared_audio / "jfk.flac").read_bytes(), 5.0)
    assert (too_long.value.status, too_long.value.param) == (413, "file")


def test_a_killed_worker_is_replaced_and_the_next_upload_decodes(
    decoder: AudioDecoder, shared_audio: Path
) -> None:
    (victim,) = decoder.worker_pids()
    os.kill(victim, signal.SIGKILL)
    audio = decoder.decode_pcm16((shared_audio / "jfk.flac").read_bytes(), 60.0)
    assert audio.shape[0] > 10 * 16_000
    replacements = decoder.worker_pids()
    assert replacements
    assert victim not in replacements


def test_auto_uses_processes_only_for_an_engine_that_batches_requests() -> None:
    assert decode_process_count("auto", engine_batches=False) == 0
    assert decode_process_count("auto", engine_batches=True) >= 1
    assert decode_process_count(3, engine_batches=False) == 3
    assert decode_process_count(0, engine_batches=True) == 0
