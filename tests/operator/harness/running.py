"""The real operator in the test's event loop, and polling with a deadline."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from voicefleet_operator.handlers.context import Clock
from voicefleet_operator.main import serve
from voicefleet_operator.settings import OperatorSettings

T = TypeVar("T")


class MovableClock:
    """The wall clock plus an offset the test moves forward, instead of sleeping through
    minutes of real waiting (e.g. a VoiceService's fallbackAfterSeconds)."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(tz=UTC) + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)


class RunningOperator:
    """The real operator (same registry, settings and handlers as the CLI) in its own thread.

    kopf cancels every task it did not start when it stops, so it gets an event loop of its
    own, as in production; it reaches the emulated API server over HTTP like any client.
    """

    def __init__(self, settings: OperatorSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or MovableClock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(
                serve(self.settings, stop_flag=self._stop, ready_flag=ready, clock=self.clock)
            )
        except BaseException as error:  # surfaced by start()/stop() in the test
            self._failure = error

    async def start(self) -> None:
        ready = threading.Event()
        self._stop = threading.Event()
        self._failure = None
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        became_ready = await asyncio.to_thread(ready.wait, 30)
        if self._failure is not None:
            raise AssertionError("the operator failed to start") from self._failure
        assert became_ready, "the operator did not become ready"

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)
        assert not self._thread.is_alive(), "the operator did not stop"
        self._thread = None
        if self._failure is not None:
            raise AssertionError("the operator failed") from self._failure


async def eventually(check: Callable[[], T | None], *, within: float = 20.0, what: str = "") -> T:
    """Poll until `check()` returns something truthy; fail with `what` after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what or check}")
        await asyncio.sleep(0.05)
