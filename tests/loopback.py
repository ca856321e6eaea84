"""Servers the tests start on 127.0.0.1: a port to give them, waiting for a condition, and
serving `voicefleet serve` on loopback.

Imported as `tests.loopback` (pytest's importlib mode names modules by their path from the
repository root)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from voicefleet_runtime.readiness import wait_until_ready


def free_port() -> int:
    """A port nothing listens on right now (another process may take it; unlikely in a test)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` until it is true; fail after `timeout` s, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def serve_on_loopback(
    port: int, env: Mapping[str, str], log_path: Path, *serve_args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A ready `voicefleet serve` process on 127.0.0.1:`port`, output in `log_path`; killed on
    exit if it still runs. A server that dies or never turns ready fails with its log."""
    voicefleet = Path(sys.executable).with_name("voicefleet")
    command = [str(voicefleet), "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_until_ready(
                    f"http://127.0.0.1:{port}",
                    lambda: process.poll() is None,
                    "voicefleet serve",
                    120,
                )
            except RuntimeError as error:
                raise AssertionError(f"{error}\n{log_path.read_text()}") from error
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
