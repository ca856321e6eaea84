"""A speech engine in another process, behind the engine contract.

With several API processes (api_processes.py), one process holds the engine and its batching
loop, and each API process reaches it through `RemoteEngine`: the requests' own Python (HTTP,
multipart, audio decoding, formatting) then runs under other interpreter locks than the loop's.

Calls travel on a local socket with a shared key (multiprocessing.connection: an HMAC
handshake, then pickled messages), one call at a time per connection, and connections are
reused. A transcription sends its audio once (16-bit samples, as the server decoded them)
and reads the info, then segments as the engine yields them, then Done; closing the segment
iterator before that closes the connection, which the engine's side takes as a cancellation
at its next segment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
from typing import cast

import numpy as np
from numpy.typing import NDArray

from voicefleet_runtime.engine.base import (
    BatchStats,
    DecodeOptions,
    EngineError,
    Segment,
    TranscriptionInfo,
    pcm16_to_float,
    refuse_what_the_model_lacks,
)
from voicefleet_runtime.engine.capabilities import EngineCapabilities

FAMILY = "AF_UNIX"


@dataclass(frozen=True)
class EngineAddress:
    """Where the engine process listens, and the key its callers prove they hold."""

    path: str
    """An abstract socket name (leading NUL): nothing on the read-only filesystem."""
    authkey: bytes

    def connect(self) -> Connection:
        return Client(self.path, family=FAMILY, authkey=self.authkey)


@dataclass(frozen=True)
class Description:
    backend: str
    model_id: str
    device: str
    compute_type: str
    multilingual: bool
    languages: frozenset[str]
    capabilities: EngineCapabilities
    batches: bool


@dataclass(frozen=True)
class Describe:
    pass


@dataclass(frozen=True)
class Stats:
    pass


@dataclass(frozen=True)
class Transcribe:
    options: DecodeOptions
    audio: NDArray[np.float32] | NDArray[np.int16]
    """16-bit samples as decoded (half the bytes), or float32 from a caller that has those."""

    def engine_audio(self) -> NDArray[np.float32]:
        if self.audio.dtype == np.int16:
            return pcm16_to_float(cast(NDArray[np.int16], self.audio))
        return cast(NDArray[np.float32], self.audio)


@dataclass(frozen=True)
class Done:
    """A call that answers nothing went well, or a transcription's last segment was sent."""


@dataclass(frozen=True)
class Failure:
    message: str
    param: str | None
    engine_error: bool
    """EngineError (the request's fault, a 400) rather than the engine's."""

    def exception(self) -> Exception:
        if self.engine_error:
            return EngineError(self.message, param=self.param)
        return RuntimeError(f"engine process: {self.message}")


def failure_of(exc: BaseException) -> Failure:
    if isinstance(exc, EngineError):
        return Failure(str(exc), exc.param, engine_error=True)
    return Failure(f"{type(exc).__name__}: {exc}", None, engine_error=False)


class RemoteSegments(Iterator[Segment]):
    """Segments read from the engine process as it yields them; `close()` cancels the rest.
    The connection goes back to its pool once the engine has said it is done."""

    def __init__(self, connection: Connection, pool: ConnectionPool) -> None:
        self._connection: Connection | None = connection
        self._pool = pool

    def __next__(self) -> Segment:
        connection = self._connection
        if connection is None:
            raise StopIteration
        try:
            message = connection.recv()
        except BaseException:
            self.close()
            raise
        if isinstance(message, Segment):
            return message
        self._connection = None
        self._pool.give_back(connection)
        if isinstance(message, Failure):
            raise message.exception()
        raise StopIteration

    def close(self) -> None:
        """Before the end: the connection closes, which the engine takes as a cancellation."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ConnectionPool:
    """Connections to the engine process, each carrying one call at a time. Kept open: a new
    connection costs a handshake that the engine process answers on one thread."""

    def __init__(self, address: EngineAddress) -> None:
        self._address = address
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def borrow(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._address.connect()

    def give_back(self, connection: Connection) -> None:
        with self._lock:
            self._idle.append(connection)

    def request(self, question: object) -> tuple[Connection, object]:
        """Send `question` on a borrowed connection and read the first answer; the caller
        gives the connection back (or closes it) when the call is over."""
        connection = self.borrow()
        try:
            connection.send(question)
            answer = connection.recv()
        except BaseException:
            connection.close()
            raise
        return connection, answer

    def ask(self, question: object) -> object:
        """One question, one answer; a Failure is raised."""
        connection, answer = self.request(question)
        self.give_back(connection)
        if isinstance(answer, Failure):
            raise answer.exception()
        return answer


class RemoteEngine:
    """`SpeechEngine` for an engine in the process at `address`."""

    def __init__(self, pool: ConnectionPool, description: Description) -> None:
        self._pool = pool
        self.description = description

    @staticmethod
    def connect(address: EngineAddress) -> RemoteEngine:
        """Blocks until the engine process has loaded its engine and accepts callers."""
        pool = ConnectionPool(address)
        description = pool.ask(Describe())
        assert isinstance(description, Description)
        kind = RemoteBatchingEngine if description.batches else RemoteEngine
        return kind(pool, description)

    @property
    def backend(self) -> str:
        return self.description.backend

    @property
    def model_id(self) -> str:
        return self.description.model_id

    @property
    def device(self) -> str:
        return self.description.device

    @property
    def compute_type(self) -> str:
        return self.description.compute_type

    @property
    def multilingual(self) -> bool:
        return self.description.multilingual

    @property
    def languages(self) -> frozenset[str]:
        return self.description.languages

    @property
    def capabilities(self) -> EngineCapabilities:
        return self.description.capabilities

    def check(self, options: DecodeOptions) -> None:
        """The model's checks, here: the server calls this on its event loop, which a round
        trip to the engine process would hold (~10% of an API process's event loop at 120
        requests/s). The engine's own further checks run in its transcribe, in the engine
        process, and fail the call with the same EngineError."""
        refuse_what_the_model_lacks(options, self)

    def transcribe(
        self, audio: NDArray[np.float32], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        return self._call(Transcribe(options, np.ascontiguousarray(audio, dtype=np.float32)))

    def transcribe_pcm16(
        self, pcm: NDArray[np.int16], options: DecodeOptions
    ) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        """What the server calls (engine.base.transcribe_pcm16): the engine process receives
        and scales a 20 s upload's samples in 0.27 ms of CPU as 16-bit, 0.71 ms as float32
        (an H200 host, bench/engine_hop.py)."""
        return self._call(Transcribe(options, np.ascontiguousarray(pcm, dtype=np.int16)))

    def _call(self, call: Transcribe) -> tuple[TranscriptionInfo, Iterator[Segment]]:
        connection, first = self._pool.request(call)
        if isinstance(first, Failure):
            self._pool.give_back(connection)
            raise first.exception()
        assert isinstance(first, TranscriptionInfo)
        return first, RemoteSegments(connection, self._pool)


class RemoteBatchingEngine(RemoteEngine):
    """A remote engine that batches across requests: its `BatchStats` too (`BatchingEngine`)."""

    def batch_stats(self) -> BatchStats:
        stats = self._pool.ask(Stats())
        assert isinstance(stats, BatchStats)
        return stats
