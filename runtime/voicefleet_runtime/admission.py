"""Admission control: a bounded queue in front of a fixed number of engine slots.

A request is *accepted* once its body has fully arrived and its audio's metadata passed the
checks (an upload in progress holds no place: gate.py bounds those), and stays accepted until
its response is finished, streaming included. Beyond capacity it is refused at once with 429
and a Retry-After estimated from recent service times; while draining, new requests are
refused with 503 and the accepted ones are waited for. A client that leaves while queued
gives its place back at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from voicefleet_runtime.errors import ApiError, draining_error


class ClientGoneError(Exception):
    """The client disconnected; whatever was being done for it stops."""


@dataclass(frozen=True)
class AdmissionSnapshot:
    waiting: int
    running: int


class AdmissionController:
    def __init__(
        self,
        concurrency: int,
        queue_size: int,
        on_change: Callable[[AdmissionSnapshot], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.queue_size = queue_size
        self._on_change = on_change
        self._clock = clock
        self._accepted = 0
        self._running = 0
        self._draining = False
        self._slots: asyncio.Semaphore | None = None
        self._idle: asyncio.Event | None = None
        self._service_seconds: deque[float] = deque(maxlen=32)

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def accepted(self) -> int:
        return self._accepted

    def snapshot(self) -> AdmissionSnapshot:
        return AdmissionSnapshot(waiting=self._accepted - self._running, running=self._running)

    def _semaphore(self) -> asyncio.Semaphore:
        # Created on first use so it belongs to the loop that serves requests.
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    def _idle_event(self) -> asyncio.Event:
        if self._idle is None:
            self._idle = asyncio.Event()
            if self._accepted == 0:
                self._idle.set()
        return self._idle

    def retry_after_seconds(self) -> int:
        """How long until a place is likely free: the queue ahead, at the recent pace."""
        if not self._service_seconds:
            return 1
        mean = sum(self._service_seconds) / len(self._service_seconds)
        rounds = max(1, self._accepted - self.concurrency + 1) / self.concurrency
        return max(1, math.ceil(mean * rounds))

    def accept(self) -> None:
        """Take a place or raise the refusal (503 draining, 429 full); synchronous, no await."""
        if self._draining:
            raise draining_error()
        if self._accepted >= self.concurrency + self.queue_size:
            retry_after = self.retry_after_seconds()
            raise ApiError(
                429,
                f"the server is at capacity ({self.concurrency} running, {self.queue_size} "
                f"queued); retry after {retry_after} s",
                code="queue_full",
                error_type="rate_limit_error",
                headers={"Retry-After": str(retry_after)},
            )
        self._accepted += 1
        self._idle_event().clear()
        self._on_change(self.snapshot())

    def release(self) -> None:
        self._accepted -= 1
        if self._accepted == 0:
            self._idle_event().set()
        self._on_change(self.snapshot())

    @asynccontextmanager
    async def admitted(self, client_gone: asyncio.Event) -> AsyncIterator[float]:
        """Accept, then wait for an engine slot unless the client leaves first; yields the
        seconds waited. ClientGoneError when `client_gone` is set before a slot is free."""
        self.accept()
        try:
            queued_at = self._clock()
            await self._acquire_unless(client_gone)
            waited = self._clock() - queued_at
            self._running += 1
            self._on_change(self.snapshot())
            started = self._clock()
            try:
                yield waited
            finally:
                self._service_seconds.append(self._clock() - started)
                self._running -= 1
                self._semaphore().release()
                self._on_change(self.snapshot())
        finally:
            self.release()

    async def _acquire_unless(self, client_gone: asyncio.Event) -> None:
        semaphore = self._semaphore()
        acquiring = asyncio.ensure_future(semaphore.acquire())
        leaving = asyncio.ensure_future(client_gone.wait())
        try:
            await asyncio.wait({acquiring, leaving}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # Cancelled while queued: a pending acquire gives a granted permit back itself.
            if acquiring.done() and not acquiring.cancelled():
                semaphore.release()
            acquiring.cancel()
            raise
        finally:
            leaving.cancel()
        if not acquiring.done():
            acquiring.cancel()
            raise ClientGoneError
        if client_gone.is_set():
            semaphore.release()
            raise ClientGoneError

    def start_draining(self) -> None:
        self._draining = True

    async def wait_idle(self, within_seconds: float) -> bool:
        """True when every accepted request finished within `within_seconds`."""
        try:
            await asyncio.wait_for(self._idle_event().wait(), within_seconds)
        except TimeoutError:
            return False
        return True
