"""Optional bearer-token check in front of the API, with one access policy for every route.

The policy (README, "Authentication"), when VOICEFLEET_API_KEY(_FILE) is set:
- probes (/healthz, /readyz) are open: the kubelet sends no key;
- /metrics is open: Prometheus scrapes pods without one; it holds counts, the model's name and
  device, never a request's content, a header or a key;
- the API description (/openapi.json, /docs, /docs/oauth2-redirect, /redoc) is open: it
  describes the public API and holds no secret; clients generate code and fuzzers read it;
- everything else needs the key, unknown paths included (401 before 404, so a scan without
  the key learns nothing about which routes exist).
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from voicefleet_runtime.errors import ApiError, error_response
from voicefleet_runtime.routes import API_DESCRIPTION_PATHS, OPEN_PATHS

UNAUTHENTICATED_PATHS = OPEN_PATHS | API_DESCRIPTION_PATHS


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
