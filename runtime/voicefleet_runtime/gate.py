"""The door of the inference API: not ready or draining -> 503, full -> 429, else accepted.

Runs before the body is read, so refusing costs the server nothing, and holds the request's
place until the response is completely sent (a stream included): that is what a drain waits on.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from voicefleet_runtime.errors import ApiError, draining_error, error_response
from voicefleet_runtime.routes import INFERENCE_PATHS, OPEN_PATHS
from voicefleet_runtime.state import RuntimeState


class AdmissionGateMiddleware:
    def __init__(self, app: ASGIApp, runtime: RuntimeState) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        admission = self.runtime.admission
        if scope["path"] not in INFERENCE_PATHS or scope["method"] != "POST":
            if admission.draining:
                await error_response(draining_error())(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if self.runtime.engine is None and not admission.draining:
            message = "the model is still loading; retry shortly"
            if self.runtime.load_error is not None:
                message = "the model failed to load; see the server log"
            error = ApiError(503, message, code="model_not_ready", headers={"Retry-After": "5"})
            await error_response(error)(scope, receive, send)
            return
        try:
            admission.accept()
        except ApiError as refusal:
            await error_response(refusal)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            admission.release()
