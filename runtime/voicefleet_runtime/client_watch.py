"""A client that leaves: how both directions (transcription and speech) notice it and answer.

The request body is read before a request is admitted, so afterwards the only message left
for the app is a disconnect. `watching` turns it into two events, one for the queue (asyncio)
and one for the engine thread (threading); `client_gone_error` counts where it happened and
is what the access log records (nginx's 499).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import Receive

from voicefleet_runtime.errors import ApiError
from voicefleet_runtime.state import RuntimeState

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that left before the answer: what the access log records."""


class ClientWatch:
    """Notices the client leaving once its body is read: the only message left is a
    disconnect. The asyncio event serves the queue, the threading one the engine thread."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self.left = asyncio.Event()

    def mark_gone(self) -> None:
        self.gone.set()
        self.left.set()


@asynccontextmanager
async def watching(receive: Receive) -> AsyncIterator[ClientWatch]:
    watch = ClientWatch()

    async def wait_for_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        watch.mark_gone()

    watcher = asyncio.create_task(wait_for_disconnect())
    try:
        yield watch
    finally:
        watcher.cancel()


def client_gone_error(runtime: RuntimeState, stage: str) -> ApiError:
    """Counts the disconnect at `stage` (queued, running) and makes the 499 to answer with."""
    runtime.metrics.client_disconnects.labels(stage=stage).inc()
    return ApiError(CLIENT_CLOSED_REQUEST, "the client closed the request", code="client_gone")
