"""Shared fixtures of the autoscaler tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.autoscaler.runtime_fleet import VOICEFLEET, RuntimeProcess
from tests.loopback import free_port
from voicefleet_runtime.readiness import wait_until_ready


@pytest.fixture(scope="session")
def runtime_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RuntimeProcess]]:
    """Two `voicefleet serve` processes on loopback, each on its own port, with the
    packaged tiny.en on CPU: one slot, a short queue, one thread, greedy decoding."""
    env = {
        **os.environ,
        "VOICEFLEET_DEVICE": "cpu",
        "VOICEFLEET_CPU_THREADS": "1",
        "VOICEFLEET_CONCURRENCY": "1",
        "VOICEFLEET_QUEUE_SIZE": "16",
        "VOICEFLEET_BEAM_SIZE": "1",
        "VOICEFLEET_LOG_LEVEL": "warning",
        "VOICEFLEET_SHUTDOWN_GRACE_SECONDS": "10",
    }
    logs = tmp_path_factory.mktemp("runtime-logs")
    servers = []
    for index in range(2):
        port = free_port()
        log = (logs / f"runtime-{index}.log").open("wb")
        process = subprocess.Popen(
            [str(VOICEFLEET), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        servers.append(RuntimeProcess(f"voice-{index}", port, process))
    try:
        for server in servers:
            wait_until_ready(server.base_url, server.is_running, server.pod)
        yield servers
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
