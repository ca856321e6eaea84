"""Every error leaves the server in one shape, OpenAI's: {"error": {message, type, param, code}}.

Handlers here translate the server's own `ApiError`s, Starlette's HTTP errors (404, 405, ...)
and FastAPI's request validation errors, so a client never sees a second error format.
Validation errors are 400, as OpenAI answers bad parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("voicefleet.runtime")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"

_DEFAULT_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "queue_full",
    503: "unavailable",
}


QUOTED_INPUT_CHARS = 32
"""Error messages quote at most this much of what a client sent: enough to recognise a typo,
never an echo of an attacker's 100 KB field."""


def quote_input(value: str) -> str:
    """A short, repr-quoted prefix of client input for an error message."""
    if len(value) <= QUOTED_INPUT_CHARS:
        return repr(value)
    return f"{value[:QUOTED_INPUT_CHARS]!r}... ({len(value)} characters)"


class ApiError(Exception):
    """An error the client should see, with the status and OpenAI fields it maps to."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "error")
        self.param = param
        self.error_type = error_type or (SERVER_ERROR if status >= 500 else INVALID_REQUEST)
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: pickle's default (the message alone) cannot rebuild it, and an
        # audio-decoding process (audio_workers.py) sends its refusals back pickled.
        return _rebuild_api_error, (self.status, self.message, self.__dict__)


def _rebuild_api_error(status: int, message: str, fields: dict[str, Any]) -> ApiError:
    error = ApiError(status, message)
    error.__dict__.update(fields)
    return error


def draining_error() -> ApiError:
    """What every request but probes and /metrics gets after SIGTERM: 503, try elsewhere."""
    return ApiError(
        503,
        "the server is shutting down and accepts no new requests; retry on another replica",
        code="draining",
        headers={"Retry-After": "1"},
    )


class ApiHttpError(StarletteHTTPException):
    """An ApiError that must travel as an HTTPException: FastAPI re-raises those unchanged
    when they come out of body parsing, where any other exception becomes a generic 400."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.status, error.message, headers=error.headers or None)
        self.api_error = error


def error_body(
    message: str, *, error_type: str, code: str | None, param: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, error_type=error.error_type, code=error.code, param=error.param),
        status_code=error.status,
        headers=error.headers,
    )


def _param_of(location: tuple[Any, ...]) -> str | None:
    """('body', 'temperature') -> 'temperature': the field the client got wrong."""
    names = [str(part) for part in location if part not in ("body", "query", "header", "path")]
    return ".".join(names) or None


def validation_error(exc: RequestValidationError) -> ApiError:
    problems = exc.errors()
    first = problems[0] if problems else {}
    param = _param_of(tuple(first.get("loc", ())))
    kind = str(first.get("type", ""))
    if kind == "missing":
        message = f"missing required parameter: {param}"
        code = "missing_required_parameter"
    else:
        detail = first.get("msg", "invalid value")
        message = f"invalid value for {param}: {detail}" if param else str(detail)
        code = "invalid_value"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    return ApiError(400, message, code=code, param=param)


async def _handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_error(exc))


async def _handle_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc, ApiHttpError):
        return error_response(exc.api_error)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(ApiError(exc.status_code, message, headers=exc.headers))


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ApiError(500, "internal server error", code="internal_error"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _handle_api_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected)
