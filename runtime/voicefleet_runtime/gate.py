"""The door of the inference API: not ready or draining -> 503, too many uploads -> 429.

Runs before the body is read, so refusing costs the server nothing. An inference request
that passes gets an upload place and a budgeted `receive` (uploads.py); it is *admitted*
(takes a place in the engine queue) only later, by the handler, once its body is complete
and its audio's metadata has been checked.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from voicefleet_runtime.errors import ApiError, draining_error, error_response
from voicefleet_runtime.routes import INFERENCE_PATHS, OPEN_PATHS, SPEECH_PATH
from voicefleet_runtime.state import RuntimeState


class AdmissionGateMiddleware:
    def __init__(self, app: ASGIApp, runtime: RuntimeState) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.runtime.admission.draining:
            await error_response(draining_error())(scope, receive, send)
            return
        if scope["path"] not in INFERENCE_PATHS or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        unavailable = _unavailable(self.runtime, scope["path"])
        if unavailable is not None:
            await error_response(unavailable)(scope, receive, send)
            return
        uploads = self.runtime.uploads
        try:
            uploads.enter()
        except ApiError as refusal:
            await error_response(refusal)(scope, receive, send)
            return
        upload_receive = uploads.receive(receive)
        try:
            await self.app(scope, upload_receive, send)
        finally:
            upload_receive.finish()


def _unavailable(runtime: RuntimeState, path: str) -> ApiError | None:
    """404 when this server does not serve the path's direction, 503 while it loads."""
    speech = path == SPEECH_PATH
    configured = runtime.settings.tts_model is not None if speech else runtime.settings.stt_enabled
    if not configured:
        direction = "text-to-speech" if speech else "speech-to-text"
        return ApiError(404, f"this server does not serve {direction}", code="model_not_found")
    loaded = runtime.tts if speech else runtime.engine
    if loaded is not None:
        return None
    message = "the model is still loading; retry shortly"
    if runtime.load_error is not None:
        message = "the model failed to load; see the server log"
    return ApiError(503, message, code="model_not_ready", headers={"Retry-After": "5"})
