"""Request bodies in progress: each one on its own budget, none of them holding an engine place.

A slow client must never block anyone else, so an upload is bounded by itself rather than by
the queue: a cap on uploads in progress (429 beyond), a deadline for the whole body and a
minimum average rate once a grace period has passed (408 when either is missed). When the
server starts draining, every upload still in progress is cut off with 503: a drain waits for
accepted requests only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Message, Receive

from voicefleet_runtime.errors import ApiError, ApiHttpError
from voicefleet_runtime.settings import RuntimeSettings


@dataclass(frozen=True)
class UploadLimits:
    timeout_seconds: float
    min_bytes_per_second: int
    rate_grace_seconds: float

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> UploadLimits:
        return cls(
            settings.upload_timeout_seconds,
            settings.upload_min_bytes_per_second,
            settings.upload_rate_grace_seconds,
        )

    def seconds_left(self, elapsed: float, received: int) -> tuple[float, str]:
        """Time until the next limit is missed if nothing more arrives, and that limit's code."""
        left = self.timeout_seconds - elapsed
        if self.min_bytes_per_second > 0:
            # The average rate holds while received >= rate * (elapsed - grace).
            rate_left = self.rate_grace_seconds + received / self.min_bytes_per_second - elapsed
            if rate_left < left:
                return rate_left, "upload_too_slow"
        return left, "upload_timeout"


class Uploads:
    """The uploads in progress of one app; lives on RuntimeState."""

    def __init__(
        self,
        limits: UploadLimits,
        capacity: int,
        on_change: Callable[[int], None] = lambda _: None,
        on_refusal: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.limits = limits
        self.capacity = capacity
        self.in_progress = 0
        self._on_change = on_change
        self._on_refusal = on_refusal
        self._cut_off: asyncio.Future[None] | None = None

    def _cut_off_signal(self) -> asyncio.Future[None]:
        # Created on first use so it belongs to the loop that serves requests.
        if self._cut_off is None:
            self._cut_off = asyncio.get_running_loop().create_future()
        return self._cut_off

    def enter(self) -> None:
        """Take an upload place or raise the refusal (429); synchronous, no await."""
        if self.in_progress >= self.capacity:
            self.refused("uploads_full")
            raise ApiError(
                429,
                f"the server is receiving {self.capacity} uploads already; retry shortly",
                code="uploads_full",
                error_type="rate_limit_error",
                headers={"Retry-After": "1"},
            )
        self.in_progress += 1
        self._on_change(self.in_progress)

    def refused(self, code: str) -> None:
        self._on_refusal(code)

    def leave(self) -> None:
        self.in_progress -= 1
        self._on_change(self.in_progress)

    def cut_off(self) -> None:
        """Draining: every upload still in progress ends now with 503."""
        signal = self._cut_off_signal()
        if not signal.done():
            signal.set_result(None)

    def receive(self, receive: Receive) -> UploadReceive:
        return UploadReceive(self, receive)


class UploadReceive:
    """`receive` for one upload: each wait is bounded by what is left of its budget. The
    upload place is given back as soon as the body is complete (or the upload ends)."""

    def __init__(self, uploads: Uploads, receive: Receive) -> None:
        self._uploads = uploads
        self._receive = receive
        self._started = time.monotonic()
        self._received = 0
        self._open = True

    def finish(self) -> None:
        if self._open:
            self._open = False
            self._uploads.leave()

    def _refuse(self, status: int, code: str, message: str) -> ApiHttpError:
        self.finish()
        self._uploads.refused(code)
        headers = {"Retry-After": "1"} if status == 503 else None
        return ApiHttpError(ApiError(status, message, code=code, headers=headers))

    async def __call__(self) -> Message:
        if not self._open:
            return await self._receive()
        elapsed = time.monotonic() - self._started
        seconds_left, limit = self._uploads.limits.seconds_left(elapsed, self._received)
        cut_off = self._uploads._cut_off_signal()
        if cut_off.done():
            raise self._draining()
        if seconds_left <= 0:
            raise self._too_slow(limit)
        receiving: asyncio.Future[Any] = asyncio.ensure_future(self._receive())
        try:
            await asyncio.wait(
                {receiving, cut_off}, timeout=seconds_left, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not receiving.done():
                receiving.cancel()
        if not receiving.done() or receiving.cancelled():
            raise self._draining() if cut_off.done() else self._too_slow(limit)
        message: Message = receiving.result()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.finish()
        else:
            self.finish()
        return message

    def _draining(self) -> ApiHttpError:
        return self._refuse(
            503,
            "draining",
            "the server is shutting down; this upload was not complete and was not accepted; "
            "retry on another replica",
        )

    def _too_slow(self, limit: str) -> ApiHttpError:
        limits = self._uploads.limits
        if limit == "upload_too_slow":
            message = (
                f"the upload was slower than {limits.min_bytes_per_second} bytes per second "
                f"on average"
            )
        else:
            message = f"the request body did not arrive within {limits.timeout_seconds:g} seconds"
        return self._refuse(408, limit, message)
