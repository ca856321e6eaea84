"""Refuse request bodies over the limit before reading them (413).

Content-Length is checked before the app runs; the bytes actually received are counted too,
so a client that lies about the length, or sends chunked, still cannot push more than the
limit into memory or the spool folder.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voicefleet_runtime.errors import ApiError, ApiHttpError, error_response


class BodyTooLargeError(ApiHttpError):
    """Raised from `receive` while the app reads the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(too_large(limit))


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is larger than the limit of {limit} bytes", code="file_too_large"
    )


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            await error_response(too_large(self.max_bytes))(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if response_started:
                raise
            await error_response(too_large(self.max_bytes))(scope, receive, send)
