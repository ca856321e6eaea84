"""The in-process store: an LRU with a TTL per entry and a byte budget."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

EvictionReason = Literal["budget", "expired"]


class MemoryCache:
    """Thread-safe. Entries larger than the whole budget are not stored at all."""

    def __init__(
        self,
        max_bytes: int,
        ttl_seconds: float,
        on_evict: Callable[[EvictionReason], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._on_evict = on_evict
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                self._drop(key, "expired")
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._bytes -= len(self._entries.pop(key)[1])
            self._entries[key] = (self._clock() + self.ttl_seconds, value)
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest, "budget")

    def _drop(self, key: str, reason: EvictionReason) -> None:
        self._bytes -= len(self._entries.pop(key)[1])
        self._on_evict(reason)
