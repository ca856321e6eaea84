"""Optional bearer-token check in front of the API; probes and /metrics stay open."""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from voicefleet_runtime.errors import ApiError, error_response
from voicefleet_runtime.routes import OPEN_PATHS

UNAUTHENTICATED_PATHS = OPEN_PATHS | {"/openapi.json", "/docs"}
"""The API description holds no secrets; clients and fuzzers read it without a key."""


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class ApiKeyMiddleware:
    """Checked before the body is read, so an unauthenticated upload costs nothing."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUTHENTICATED_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None or not secrets.compare_digest(token.encode(), self._expected):
            error = ApiError(
                401,
                "missing or invalid API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)
