"""The result cache the request paths use: memory first, then the shared store, with the
hit/miss/eviction/bytes/backend-error series."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from voicefleet_runtime.cache.memory import MemoryCache
from voicefleet_runtime.metrics import RuntimeMetrics
from voicefleet_runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from voicefleet_runtime.cache.shared import RedisCache

Direction = Literal["stt", "tts"]


class ResultCache:
    def __init__(self, settings: RuntimeSettings, metrics: RuntimeMetrics) -> None:
        self.enabled = settings.cache_max_bytes > 0
        self._metrics = metrics
        self.memory = MemoryCache(
            settings.cache_max_bytes,
            settings.cache_ttl_seconds,
            on_evict=lambda reason: metrics.cache_evictions.labels(reason=reason).inc(),
        )
        self.shared: RedisCache | None = None
        if self.enabled and settings.cache_redis_url is not None:
            # Imported only when configured: the redis client is not loaded for nothing.
            from voicefleet_runtime.cache.shared import RedisCache

            self.shared = RedisCache(
                settings.cache_redis_url.get_secret_value(),
                settings.cache_ttl_seconds,
                on_error=metrics.cache_backend_errors.labels(backend="redis").inc,
            )

    async def lookup(self, direction: Direction, key: str) -> bytes | None:
        if not self.enabled:
            return None
        value = self.memory.get(key)
        if value is None and self.shared is not None:
            value = await self.shared.get(key)
            if value is not None:
                self.memory.put(key, value)
        self._metrics.cache_requests.labels(
            direction=direction, result="miss" if value is None else "hit"
        ).inc()
        self._metrics.cache_bytes.set(self.memory.size_bytes)
        return value

    async def store(self, key: str, value: bytes) -> None:
        if not self.enabled:
            return
        self.memory.put(key, value)
        self._metrics.cache_bytes.set(self.memory.size_bytes)
        if self.shared is not None:
            await self.shared.put(key, value)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()
