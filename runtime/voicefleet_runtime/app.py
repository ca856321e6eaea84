"""`create_app(settings)`: the runtime as an ASGI app, with no import-time side effects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from voicefleet_runtime.access_log import AccessLogMiddleware
from voicefleet_runtime.api import router
from voicefleet_runtime.auth import ApiKeyMiddleware
from voicefleet_runtime.connection import EarlyResponseMiddleware
from voicefleet_runtime.engine.loader import load_engine
from voicefleet_runtime.errors import install_error_handlers
from voicefleet_runtime.gate import AdmissionGateMiddleware
from voicefleet_runtime.limits import BodySizeLimitMiddleware
from voicefleet_runtime.settings import RuntimeSettings
from voicefleet_runtime.speech_api import router as speech_router
from voicefleet_runtime.state import (
    EngineFactory,
    RuntimeState,
    TtsEngineFactory,
    load_tts_engine,
)


def create_app(
    settings: RuntimeSettings,
    engine_factory: EngineFactory = load_engine,
    tts_engine_factory: TtsEngineFactory = load_tts_engine,
) -> FastAPI:
    runtime = RuntimeState(settings, engine_factory, tts_engine_factory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Loading runs in the background: /healthz answers while a large model loads,
        # /readyz turns 200 once it is loaded and warmed up.
        loading = asyncio.create_task(runtime.load())
        try:
            yield
        finally:
            loading.cancel()
            runtime.executor.shutdown(wait=False, cancel_futures=True)
            if runtime.tts is not None:
                # The batcher finishes the chunks it holds before it stops: off the event loop.
                await asyncio.to_thread(runtime.tts.close)
            await asyncio.to_thread(runtime.audio_decoder.close)
            await runtime.cache.close()

    app = FastAPI(
        title="voicefleet runtime",
        summary="OpenAI-compatible speech-to-text and text-to-speech",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(speech_router)
    # Added innermost first: the request meets the early-response guard, the access log, the
    # key check, the gate (readiness, draining, upload budget), then the body limit, so
    # refusals happen before any body is read and close the connection.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(AdmissionGateMiddleware, runtime=runtime)
    if runtime.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=runtime.api_key)
    app.add_middleware(AccessLogMiddleware, metrics=runtime.metrics)
    app.add_middleware(EarlyResponseMiddleware)
    return app
