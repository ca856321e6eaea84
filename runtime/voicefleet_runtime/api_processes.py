"""`voicefleet serve` with several API processes: one engine process, N HTTP processes.

One server process tops out near 110 requests/s on tiny.en however fast its GPU loop is
(bench/results/server_profile-h200.txt): the requests' Python and the batching loop share one
interpreter lock. As vLLM splits its API servers from its engine core, this process loads the
engine and serves it on a local socket (engine/service.py), while `api_processes` spawned
processes each listen on the port (SO_REUSEPORT) and run the whole app, reaching the engine
through engine/remote.py. Their metrics are summed through prometheus_client's multiprocess files.

This process supervises: SIGTERM or SIGINT is passed on as SIGTERM (each API process drains
as a single server does; a second signal stops them at once), and an API process that ends
unasked stops the rest, so the pod restarts rather than serving with fewer processes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType

from voicefleet_runtime.audio_workers import decode_process_count
from voicefleet_runtime.engine.base import SpeechEngine, loaded, warm_up
from voicefleet_runtime.engine.remote import EngineAddress
from voicefleet_runtime.engine.service import EngineService
from voicefleet_runtime.exit_status import (
    EXIT_API_PROCESS_LOST,
    EXIT_DRAIN_TIMEOUT,
    EXIT_LOAD_FAILED,
    EXIT_OK,
)
from voicefleet_runtime.settings import RuntimeSettings

logger = logging.getLogger("voicefleet.runtime")

ApiProcess = Callable[[RuntimeSettings, socket.socket, EngineAddress], None]
"""What each spawned process runs: serve the app on the socket until drained (server.py)."""

STOP_MARGIN_SECONDS = 15.0
"""Beyond the drain's grace: API processes exit on their own by then, or are killed."""
LISTEN_BACKLOG = 2048
ORPHAN_CHECK_SECONDS = 1.0


def api_process_settings(settings: RuntimeSettings) -> RuntimeSettings:
    """Each API process's settings. Its admission limits are the pod's, not a share of them:
    a client's connection stays with the process that accepted it, and connections spread
    unevenly (64 clients on 8 processes with an eighth of the limits each: 11 of 128 requests
    refused, none needed to be). The engine is shared, so what a busy process admits beyond
    the engine's batch waits in the engine's queue, which the queue depth counts. Upload
    decoding processes are shared out: `auto` gives the pod's count, not each process's. The
    engine process warms the engine up once before any API process can reach it, so they all
    turn ready together, as soon as it accepts them."""
    decoding = settings.decode_processes
    if decoding == "auto":
        decoding = math.ceil(
            decode_process_count("auto", engine_batches=True) / settings.api_processes
        )
    return settings.model_copy(update={"decode_processes": decoding, "warmup": False})


def stop_when_orphaned() -> None:
    """In an API process: SIGTERM itself (a drain) if the engine process that started it ends.
    In a container that process is PID 1 and its end ends the container; elsewhere the API
    processes would serve on with no engine."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        logger.error("the engine process ended: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="voicefleet-orphan-watch", daemon=True).start()


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per API process on the same port (SO_REUSEPORT): the kernel
    spreads new connections between them by their addresses. With one shared socket, the
    process whose event loop woke first accepted a whole burst of connections, and a client's
    connection stays where it was accepted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            created = socket.create_server(
                (host, port), family=family, backlog=LISTEN_BACKLOG, reuse_port=True
            )
            # The same socket, declared TCP: asyncio turns Nagle's algorithm off only on
            # connections accepted from a socket whose protocol says TCP, and create_server
            # leaves it 0. With Nagle on, a response's body waited for the client's delayed
            # ACK of its head: ~40 ms a request (bench/results/batching-notes.md, run 38).
            listening = socket.socket(
                family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=created.detach()
            )
            sockets.append(listening)
            port = listening.getsockname()[1]  # port 0: the others join the first's
    except OSError:
        for listening in sockets:
            listening.close()
        raise
    return sockets


def serve_in_processes(
    settings: RuntimeSettings,
    load_engine: Callable[[RuntimeSettings], SpeechEngine],
    api_process: ApiProcess,
) -> int:
    """Run until every API process has exited; returns the exit status."""
    # Fresh per start: an emptyDir outlives a container restart, and stale files would count.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="voicefleet-metrics-")
    try:
        sockets = listening_sockets(settings.host, settings.port, settings.api_processes)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return EXIT_LOAD_FAILED
    service = EngineService()
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=api_process,
            args=(api_process_settings(settings), listening, service.address),
            name=f"voicefleet-api-{index}",
        )
        for index, listening in enumerate(sockets)
    ]
    supervisor = Supervisor(
        children,
        settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS,
        # API processes still waiting for the engine must not wait through their drain.
        on_stop=service.close_unless_serving,
    )
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, supervisor.on_signal)
    for child, listening in zip(children, sockets, strict=True):
        child.start()  # the child has its copy of the socket from here (spawn passes the fd)
        # Ours must not outlive the child's: a socket left in the port's group with nobody
        # accepting would take its share of new connections and leave them hanging.
        listening.close()
    logger.info(
        "serving on %s:%d with %d API processes; loading the engine",
        settings.host,
        settings.port,
        len(children),
    )
    loading = threading.Thread(
        target=_load_and_serve,
        args=(settings, load_engine, service, supervisor),
        name="voicefleet-engine-load",
        daemon=True,
    )
    loading.start()
    try:
        return supervisor.wait()
    finally:
        service.close()


def _load_and_serve(
    settings: RuntimeSettings,
    load_engine: Callable[[RuntimeSettings], SpeechEngine],
    service: EngineService,
    supervisor: Supervisor,
) -> None:
    started = time.monotonic()
    try:
        engine = load_engine(settings)
        logger.info("loaded model %s in %.2f s", loaded(engine), time.monotonic() - started)
        if settings.warmup:
            warm_up(engine, settings.beam_size)
    except Exception as exc:
        # A failed warm-up too: uncaught, it ended this thread with the API processes still
        # waiting on the engine's socket.
        logger.error("the model could not be loaded: %s: %s", type(exc).__name__, exc)
        service.close()
        supervisor.load_failed()
        return
    service.serve(engine)


class Supervisor:
    """Waits on the API processes; stops them all on a signal, a failed load or a loss."""

    def __init__(
        self,
        children: Sequence[BaseProcess],
        stop_within_seconds: float,
        on_stop: Callable[[], None],
    ) -> None:
        self._children = children
        self._on_stop = on_stop
        self._stop_within = stop_within_seconds
        self._stop_deadline: float | None = None
        self._signals = 0
        self._status = EXIT_OK
        self._load_failure = threading.Event()

    def on_signal(self, signum: int, _: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second stop signal: API processes stop without waiting")
        self._stop(signal.Signals(signum).name)

    def load_failed(self) -> None:
        self._status = EXIT_LOAD_FAILED
        self._load_failure.set()

    def wait(self) -> int:
        while True:
            live = [child for child in self._children if child.exitcode is None]
            if not live:
                return self._status or max(
                    (child.exitcode or 0 for child in self._children), default=EXIT_OK
                )
            if self._load_failure.is_set() and self._stop_deadline is None:
                self._stop("the engine did not load")
            self._notice_losses()
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                logger.error("API processes still running after the grace period: killed")
                self._status = self._status or EXIT_DRAIN_TIMEOUT
                for child in live:
                    child.kill()
            multiprocessing.connection.wait([child.sentinel for child in live], timeout=0.2)

    def _notice_losses(self) -> None:
        if self._stop_deadline is not None:
            return
        for child in self._children:
            if child.exitcode is not None:
                logger.error("%s ended (exit status %s)", child.name, child.exitcode)
                self._status = EXIT_API_PROCESS_LOST
                self._stop(f"{child.name} ended")
                return

    def _stop(self, why: str) -> None:
        if self._stop_deadline is None:
            logger.info("%s: stopping %d API process(es)", why, len(self._children))
            self._stop_deadline = time.monotonic() + self._stop_within
            self._on_stop()
        for child in self._children:
            if child.exitcode is None and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
