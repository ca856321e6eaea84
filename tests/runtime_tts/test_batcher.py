"""The TTS micro-batcher: chunks of concurrent requests gathered in arrival order, bounded,
errors delivered to each caller, and a close that finishes what is queued."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.loopback import wait_for
from voicefleet_runtime.tts.batcher import BatcherClosedError, MicroBatcher

GENEROUS = 30.0
"""Seconds within which a stuck batcher fails the test (never a timing claim)."""


class HeldModel:
    """A stand-in for the model: records each batch and holds the first until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def run(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            assert self.release.wait(GENEROUS)
        if any(item < 0 for item in items):
            raise ValueError("negative chunk")
        return [item * 10 for item in items]


def wait_until(condition: Callable[[], object]) -> None:
    wait_for(condition, GENEROUS, "the batcher (stuck?)")


def first_batch_held(
    pool: ThreadPoolExecutor, batcher: MicroBatcher[int, int], model: HeldModel
) -> Future[int]:
    """Chunk 1, submitted and running in a batch the model holds until released."""
    first = pool.submit(batcher.submit, 1)
    wait_until(lambda: model.batches)
    return first


def submit_all(
    pool: ThreadPoolExecutor, batcher: MicroBatcher[int, int], items: list[int]
) -> list[Future[int]]:
    """Submit one by one, each queued before the next, so arrival order is known."""
    futures = []
    for item in items:
        queued = batcher.waiting
        futures.append(pool.submit(batcher.submit, item))
        wait_until(lambda: batcher.waiting > queued)  # noqa: B023 (runs before the next turn)
    return futures


def test_waiting_chunks_run_together_oldest_first_and_bounded() -> None:
    model = HeldModel()
    batcher = MicroBatcher(model.run, max_batch=3, max_wait=0.0)
    with ThreadPoolExecutor(8) as pool:
        first = first_batch_held(pool, batcher, model)
        rest = submit_all(pool, batcher, [2, 3, 4, 5, 6])
        model.release.set()
        results = [future.result(GENEROUS) for future in [first, *rest]]
    batcher.close(GENEROUS)
    assert results == [10, 20, 30, 40, 50, 60]
    assert model.batches == [[1], [2, 3, 4], [5, 6]]
    assert batcher.batch_sizes == {1: 1, 3: 1, 2: 1}


def test_a_failing_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    model = HeldModel()
    batcher = MicroBatcher(model.run, max_batch=4, max_wait=0.0)
    with ThreadPoolExecutor(4) as pool:
        first = first_batch_held(pool, batcher, model)
        failing = submit_all(pool, batcher, [2, -1])
        model.release.set()
        assert first.result(GENEROUS) == 10
        for future in failing:
            with pytest.raises(ValueError, match="negative chunk"):
                future.result(GENEROUS)
        assert batcher.submit(7) == 70
    batcher.close(GENEROUS)


def test_close_finishes_queued_chunks_then_refuses_new_ones() -> None:
    model = HeldModel()
    batcher = MicroBatcher(model.run, max_batch=2, max_wait=0.0)
    with ThreadPoolExecutor(4) as pool:
        first = first_batch_held(pool, batcher, model)
        queued = submit_all(pool, batcher, [2, 3, 4])
        closing = pool.submit(batcher.close, GENEROUS)
        model.release.set()
        closing.result(GENEROUS)
        assert [future.result(GENEROUS) for future in [first, *queued]] == [10, 20, 30, 40]
    with pytest.raises(BatcherClosedError):
        batcher.submit(5)


def test_a_lone_chunk_waits_at_most_max_wait_for_company() -> None:
    model = HeldModel()
    model.release.set()
    batcher = MicroBatcher(model.run, max_batch=8, max_wait=0.01)
    assert batcher.submit(3) == 30
    batcher.close(GENEROUS)
    assert model.batches == [[3]]
