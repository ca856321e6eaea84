"""The engine process's side of engine/remote.py: serve one loaded engine to API processes.

The listener is bound before the engine loads, so API processes can start at once and their
first connection waits in the handshake until `serve(engine)` starts accepting. Each
connection gets a thread that answers its calls in turn: a transcription runs there as an
in-process caller's would (features, windows, waiting on the batching loop).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection, Listener

from voicefleet_runtime.engine.base import BatchingEngine, Segment, SpeechEngine, close_segments
from voicefleet_runtime.engine.remote import (
    FAMILY,
    Describe,
    Description,
    Done,
    EngineAddress,
    Stats,
    Transcribe,
    failure_of,
)

logger = logging.getLogger("voicefleet.runtime")

BACKLOG = 512
"""Connections waiting for accept: every API process's in-flight calls at worst."""


def describe(engine: SpeechEngine) -> Description:
    return Description(
        backend=engine.backend,
        model_id=engine.model_id,
        device=engine.device,
        compute_type=engine.compute_type,
        multilingual=engine.multilingual,
        languages=engine.languages,
        capabilities=engine.capabilities,
        batches=isinstance(engine, BatchingEngine),
    )


class EngineService:
    def __init__(self) -> None:
        self.address = EngineAddress(
            f"\0voicefleet-engine-{secrets.token_hex(8)}", secrets.token_bytes(32)
        )
        self._listener = Listener(
            self.address.path, family=FAMILY, backlog=BACKLOG, authkey=self.address.authkey
        )
        self._engine: SpeechEngine | None = None
        self._description: Description | None = None
        self._accepting: threading.Thread | None = None

    def serve(self, engine: SpeechEngine) -> None:
        """Start accepting callers for `engine`, in a thread."""
        self._engine = engine
        self._description = describe(engine)
        self._accepting = threading.Thread(
            target=self._accept_forever, name="voicefleet-engine-service", daemon=True
        )
        self._accepting.start()

    def close_unless_serving(self) -> None:
        if self._accepting is None:
            self.close()

    def close(self) -> None:
        """Stop listening; waiting callers see the connection end (a load that failed)."""
        self._listener.close()

    def _accept_forever(self) -> None:
        while True:
            try:
                connection = self._listener.accept()
            except OSError:
                return  # closed
            except Exception as exc:  # a failed handshake: a caller without the key
                logger.warning("engine service: refused a connection: %s", exc)
                continue
            threading.Thread(
                target=self._answer, args=(connection,), name="voicefleet-engine-call", daemon=True
            ).start()

    def _answer(self, connection: Connection) -> None:
        """A caller's calls, one after another, until it closes the connection."""
        engine = self._engine
        assert engine is not None
        with connection:
            while True:
                try:
                    question = connection.recv()
                except (EOFError, OSError):
                    return
                if isinstance(question, Transcribe):
                    if not self._transcribe(engine, connection, question):
                        return
                    continue
                try:
                    answer = self._reply(engine, question)
                except Exception as exc:
                    answer = failure_of(exc)
                if not self._try_send(connection, answer):
                    return

    def _reply(self, engine: SpeechEngine, question: object) -> object:
        if isinstance(question, Describe):
            return self._description
        if isinstance(question, Stats) and isinstance(engine, BatchingEngine):
            return engine.batch_stats()
        raise TypeError(f"unknown question {type(question).__name__}")

    def _transcribe(self, engine: SpeechEngine, connection: Connection, call: Transcribe) -> bool:
        """Whether the caller is still there for another call."""
        try:
            info, segments = engine.transcribe(call.engine_audio(), call.options)
        except Exception as exc:
            return self._try_send(connection, failure_of(exc))
        try:
            connection.send(info)
            return self._send_segments(connection, segments)
        except (EOFError, OSError):
            return False  # the caller left mid-way; closing the segments cancels the rest
        except Exception as exc:
            logger.exception("engine service: a transcription failed")
            return self._try_send(connection, failure_of(exc))
        finally:
            close_segments(segments)

    @staticmethod
    def _send_segments(connection: Connection, segments: Iterator[Segment]) -> bool:
        for segment in segments:
            # A caller never writes during its call: anything readable is the connection's end.
            if connection.poll(0):
                return False
            connection.send(segment)
        connection.send(Done())
        return True

    @staticmethod
    def _try_send(connection: Connection, message: object) -> bool:
        try:
            connection.send(message)
        except (EOFError, OSError):
            return False
        return True
