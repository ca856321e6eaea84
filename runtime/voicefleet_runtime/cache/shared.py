"""The optional shared store: Redis, so the pods of one service share results.

Redis is a helper, never a dependency of a request: every call has a short timeout, a
failure is counted and answered as a miss (or a skipped store), and after a failure Redis is
left alone for a back-off period so a dead server costs one timeout, not one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger("voicefleet.runtime")

SOCKET_TIMEOUT_SECONDS = 0.25
BACKOFF_SECONDS = 5.0


class RedisCache:
    def __init__(
        self,
        url: str,
        ttl_seconds: float,
        on_error: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            retry_on_timeout=False,
        )
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._on_error = on_error
        self._clock = clock
        self._resume_at = 0.0

    @property
    def available(self) -> bool:
        return self._clock() >= self._resume_at

    def _failed(self, exc: Exception) -> None:
        self._on_error()
        if self.available:
            # The URL may hold a password: log the error's type and message, never the URL.
            logger.warning(
                "shared cache unavailable (%s: %s); skipping it for %.0f s",
                type(exc).__name__,
                exc,
                BACKOFF_SECONDS,
            )
        self._resume_at = self._clock() + BACKOFF_SECONDS

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            value = await self._client.get(key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> None:
        if not self.available:
            return
        try:
            await self._client.set(key, value, px=self._ttl_ms)
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self._client.aclose()
