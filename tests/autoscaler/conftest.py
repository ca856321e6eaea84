"""Shared fixtures of the autoscaler tests; also makes this folder's helper modules
importable (pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from runtime_fleet import VOICEFLEET, RuntimeProcess, free_port, wait_until_ready  # noqa: E402


def load_operator_harness() -> None:
    """The operator area's emulated API server (tests/operator/harness), under the same
    module name its own conftest gives it, so both areas share one copy."""
    import importlib.util

    if "voicefleet_test_harness" in sys.modules:
        return
    harness = Path(__file__).resolve().parents[1] / "operator" / "harness"
    spec = importlib.util.spec_from_file_location(
        "voicefleet_test_harness",
        harness / "__init__.py",
        submodule_search_locations=[str(harness)],
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["voicefleet_test_harness"] = module
    spec.loader.exec_module(module)


load_operator_harness()


@pytest.fixture(scope="session")
def runtime_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RuntimeProcess]]:
    """Three `voicefleet serve` processes on loopback, each on its own port, with the
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
    for index in range(3):
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
            wait_until_ready(server)
        yield servers
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
