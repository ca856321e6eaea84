"""`serve()`: run the runtime under uvicorn with a drain on SIGTERM; returns the exit status.

Uvicorn's own signal handling closes the listener at once. Here SIGTERM first flips
/readyz to 503 and refuses new work with 503 while the listener stays open, waits for every
accepted request (running and queued) up to the grace period, and only then stops uvicorn.
A second SIGTERM or SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Generator
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from voicefleet_runtime.api_processes import serve_in_processes, stop_when_orphaned
from voicefleet_runtime.app import create_app
from voicefleet_runtime.connection import header_timeout_protocol
from voicefleet_runtime.engine.loader import load_engine
from voicefleet_runtime.engine.remote import EngineAddress, RemoteEngine
from voicefleet_runtime.exit_status import (
    EXIT_BAD_SETTINGS,
    EXIT_DRAIN_TIMEOUT,
    EXIT_LOAD_FAILED,
    EXIT_OK,
)
from voicefleet_runtime.settings import RuntimeSettings
from voicefleet_runtime.state import RuntimeState

logger = logging.getLogger("voicefleet.runtime")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _DrainingServer(uvicorn.Server):
    """Uvicorn without its signal handlers: `serve()` decides when the listener closes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # faster-whisper logs every file it processes at INFO; the access log already says so.
    quieter = max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()])
    logging.getLogger("faster_whisper").setLevel(quieter)


async def run_until_stopped(
    app: FastAPI,
    config: uvicorn.Config,
    *,
    sockets: list[socket.socket] | None = None,
    stop_signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> int:
    runtime: RuntimeState = app.state.runtime
    server = _DrainingServer(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            logger.warning("second stop signal: exiting without waiting")
            server.should_exit = True
            server.force_exit = True
        stop.set()

    for stop_signal in stop_signals:
        loop.add_signal_handler(stop_signal, on_signal)
    serving = asyncio.create_task(server.serve(sockets=sockets))
    stopping = asyncio.create_task(stop.wait())
    failing = asyncio.create_task(runtime.load_failed.wait())
    exit_code = EXIT_OK
    try:
        await asyncio.wait({serving, stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        if failing.done() and not serving.done():
            exit_code = EXIT_LOAD_FAILED
            server.should_exit = True
        elif stopping.done() and not serving.done():
            exit_code = await _drain(runtime, server)
        await serving
    finally:
        for task in (stopping, failing):
            task.cancel()
        for stop_signal in stop_signals:
            loop.remove_signal_handler(stop_signal)
    if not server.started and exit_code == EXIT_OK:
        exit_code = EXIT_LOAD_FAILED
    return exit_code


async def _drain(runtime: RuntimeState, server: uvicorn.Server) -> int:
    grace = runtime.settings.shutdown_grace_seconds
    pending = runtime.admission.accepted
    logger.info("stop signal: draining %d accepted request(s), grace %.0f s", pending, grace)
    runtime.start_draining()
    drained = await runtime.admission.wait_idle(within_seconds=grace)
    server.should_exit = True
    if drained:
        logger.info("drained; exiting")
        return EXIT_OK
    logger.error(
        "grace period over with %d request(s) unfinished; exiting anyway",
        runtime.admission.accepted,
    )
    server.force_exit = True
    return EXIT_DRAIN_TIMEOUT


def serve(
    host: str | None = None,
    port: int | None = None,
    model: str | None = None,
    tts_model: str | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; arguments left None come from VOICEFLEET_* env.

    `tts_model` alone serves text-to-speech only; with `model` too, one process serves both.
    """
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "host": host,
            "port": port,
            "model": model,
            "tts_model": tts_model,
        }.items()
        if value is not None
    }
    if tts_model is not None:
        overrides["stt_enabled"] = model is not None
    try:
        settings = RuntimeSettings(**overrides)
    except ValidationError as exc:
        # One line per problem, field and reason only: the values (an API key) never appear.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        print(f"voicefleet serve: invalid settings: {problems}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(settings.log_level)
    if settings.api_processes > 1:
        return serve_in_processes(settings, load_engine, run_api_process)
    app = create_app(settings)
    return asyncio.run(run_until_stopped(app, uvicorn_config(app, settings)))


def run_api_process(
    settings: RuntimeSettings, listening: socket.socket, engine: EngineAddress
) -> None:
    """One of several API processes (api_processes.py): the app on its own listening socket
    of the port, with the engine in the process that started it. SIGINT is left to that
    process, which passes it on as SIGTERM: a terminal's Ctrl-C reaches every process of the
    group at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level)
    stop_when_orphaned()
    app = create_app(settings, engine_factory=lambda _: RemoteEngine.connect(engine))
    config = uvicorn_config(app, settings)
    sys.exit(
        asyncio.run(
            run_until_stopped(app, config, sockets=[listening], stop_signals=(signal.SIGTERM,))
        )
    )


def uvicorn_config(app: FastAPI, settings: RuntimeSettings, **overrides: Any) -> uvicorn.Config:
    """uvicorn as the runtime runs it: connection timeouts from the settings."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # the runtime logs one line per request itself
        "lifespan": "on",
        # Requests are already drained when uvicorn stops; this only bounds idle keep-alives.
        "timeout_graceful_shutdown": 5,
        "server_header": False,
        "http": header_timeout_protocol(
            settings.header_timeout_seconds, app.state.runtime.count_refusal
        ),
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
    }
    return uvicorn.Config(app, **{**options, **overrides})
