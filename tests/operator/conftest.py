"""The emulated API server (tests/operator/harness), served over real HTTP.

The operator's behaviour is tested against the real control plane (tests/cluster); the emulator
remains as the baseline bench/operator_scale.py compares the real one with, and these tests
keep its semantics honest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest

from tests.operator.harness import ApiServer


@pytest.fixture
async def api_server() -> AsyncIterator[ApiServer]:
    """A bare emulated API server (no resources registered) listening on 127.0.0.1."""
    async with ApiServer() as server, kmock.Server(server):
        yield server
