"""Connections that cost the server nothing after an early answer, and none that idle forever.

- `EarlyResponseMiddleware`: a response sent before the request body has fully arrived (401,
  404, 408, 413, 429, 503, ...) carries `Connection: close`, and the server then reads at most
  `LINGER_BYTES` of the rest for at most `LINGER_SECONDS` before it closes. The short linger
  lets an honest client that is still writing its body read the answer (closing a socket with
  unread data resets it, and a reset may discard the answer on the client's side); the bound
  means an attacker's body is never drained to its end.
- `header_timeout_protocol`: uvicorn's h11 protocol with a deadline for a request's head, on a
  new connection and between keep-alive requests (uvicorn has none: a client sending one header
  byte a minute would hold the connection for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from voicefleet_runtime.errors import INVALID_REQUEST, error_body

HEADER_TIMEOUT = "header_timeout"
LINGER_SECONDS = 2.0
LINGER_BYTES = 8 * 1024 * 1024
CLOSE = (b"connection", b"close")


def _raw_timeout_response() -> bytes:
    """Written straight to the socket: h11 cannot answer a request it has not parsed."""
    body = json.dumps(
        error_body(
            "the request headers did not arrive in time",
            error_type=INVALID_REQUEST,
            code=HEADER_TIMEOUT,
        )
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


TIMEOUT_RESPONSE = _raw_timeout_response()


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


class EarlyResponseMiddleware:
    """Outermost: it must see the raw `receive` to drain and the final `send` to close."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = not _has_body(scope)
        early = False

        async def tracking_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: Message) -> None:
            nonlocal early
            if message["type"] == "http.response.start" and not body_done:
                early = True
                headers = list(message.get("headers", []))
                if CLOSE not in headers:
                    headers.append(CLOSE)
                message = {**message, "headers": headers}
            elif (
                early
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                # Let the answer leave, read a little of what is still coming, then close.
                await send({**message, "more_body": True})
                await _linger(receive)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, tracking_receive, closing_send)


async def _linger(receive: Receive) -> None:
    drained = 0

    async def drain() -> None:
        nonlocal drained
        while drained < LINGER_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drain(), LINGER_SECONDS)


def header_timeout_protocol(
    header_timeout: float, on_timeout: Callable[[str], None] = lambda _: None
) -> type[H11Protocol]:
    """An H11Protocol class whose connections must send each request head in time;
    `on_timeout` gets the refusal's code (for the metrics)."""

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            waiting_for_head = self.conn.their_state is h11.IDLE and (
                self.cycle is None or self.cycle.response_complete
            )
            if waiting_for_head and not self.transport.is_closing():
                on_timeout(HEADER_TIMEOUT)
                self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

    return HeaderTimeoutProtocol
