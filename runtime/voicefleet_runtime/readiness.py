"""Waiting for a `voicefleet serve` to answer `/readyz`: for the scripts, benchmarks and tests
that start one and must not send work before it has loaded its models."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

POLL_INTERVAL_S = 0.2


class NotReady(RuntimeError):
    """The server stopped, or did not turn ready in time."""


def wait_until_ready(
    base_url: str,
    is_running: Callable[[], bool] = lambda: True,
    what: str = "the server",
    timeout: float = 180.0,
) -> None:
    """Poll `base_url`/readyz until it answers 200. Fails at once if `what` stops running
    first, so a server that crashed on start-up is reported as such, not as a timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running():
            raise NotReady(f"{what} stopped before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(POLL_INTERVAL_S)
    raise NotReady(f"{what} was not ready after {timeout:.0f} s")
