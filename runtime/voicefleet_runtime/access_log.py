"""One log line and the request metrics per HTTP request; never bodies, headers or keys."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicefleet_runtime.metrics import RuntimeMetrics
from voicefleet_runtime.routes import KNOWN_PATHS, OPEN_PATHS

logger = logging.getLogger("voicefleet.access")

KNOWN_ENDPOINTS = KNOWN_PATHS
QUIET_ENDPOINTS = OPEN_PATHS
AUDIO_SECONDS_KEY = "voicefleet_audio_seconds"
"""Where a handler leaves the decoded audio length (in the request's scope state)."""


def endpoint_label(path: str) -> str:
    """A bounded label set: unknown paths (scanners, typos) all count as 'other'."""
    return path if path in KNOWN_ENDPOINTS else "other"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: RuntimeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.monotonic() - started
            endpoint = endpoint_label(scope["path"])
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_duration.labels(endpoint=endpoint).observe(elapsed)
            audio_seconds = scope.get("state", {}).get(AUDIO_SECONDS_KEY)
            audio = f" audio={audio_seconds:.2f}s" if isinstance(audio_seconds, float) else ""
            # Probes and scrapes come every few seconds: keep them out of the default log.
            level = logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO
            logger.log(
                level, "%s %s %d %.3fs%s", scope["method"], scope["path"], status, elapsed, audio
            )
