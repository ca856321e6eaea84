"""A micro-batcher: chunks that concurrent requests want, gathered into one model call.

Each request's engine thread calls `submit` and blocks until its chunk's audio is back. One
worker thread takes the oldest waiting chunks (arrival order, so no request starves), up to
`max_batch` of them, waiting at most `max_wait` for more once the first has arrived, and runs
them together. While a batch runs the next one gathers, so under load batches fill without
waiting at all.

- A failing batch fails each of its chunks with the same error; the worker carries on.
- A request that is cancelled stops submitting; a chunk already in a batch finishes (a batch
  cannot drop one row mid-way) and its caller discards it.
- `close` (the server's drain, then exit) lets queued chunks finish, then stops the worker; a
  chunk submitted after that fails at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatcherClosedError(RuntimeError):
    """The batcher was closed: the server is shutting down."""


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        max_batch: int,
        max_wait: float,
        name: str = "voicefleet-tts-batcher",
    ) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be at least 1 and max_wait not negative")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._waiting: deque[tuple[Item, Future[Result]]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.batch_sizes: dict[int, int] = {}
        """How many batches of each size ran (for the benchmarks and metrics)."""
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    @property
    def waiting(self) -> int:
        """Chunks queued for a batch that has not started."""
        with self._changed:
            return len(self._waiting)

    def submit(self, item: Item) -> Result:
        """Run `item` in the next batch with room; blocks until its result is back."""
        future: Future[Result] = Future()
        with self._changed:
            if self._closed:
                raise BatcherClosedError("the speech batcher is closed")
            self._waiting.append((item, future))
            self._changed.notify()
        return future.result()

    def close(self, timeout: float | None = None) -> None:
        """Finish what is queued, then stop the worker."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join(timeout)

    def _next_batch(self) -> list[tuple[Item, Future[Result]]] | None:
        with self._changed:
            while not self._waiting:
                if self._closed:
                    return None
                self._changed.wait()
            deadline = time.monotonic() + self.max_wait
            while len(self._waiting) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            count = min(self.max_batch, len(self._waiting))
            return [self._waiting.popleft() for _ in range(count)]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            try:
                results = self._run_batch([item for item, _ in batch])
            except BaseException as exc:  # every caller gets the error; the worker lives on
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
