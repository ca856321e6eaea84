"""An HTTP proxy in front of the real API server that faults a share of the requests.

Each request, with probability `rate`, gets one fault: a 503 (the API server's Status body),
a 409 Conflict on a write, a slow answer (a few seconds before it is forwarded), or, on a watch,
a stream cut after its first bytes. Everything else passes through untouched, watches streamed.
Seeded, so that a failing run can be replayed. `before_forward`, when given, runs before each
request is forwarded: a test makes something happen at an exact point of the operator's work.
"""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.loopback import free_port

HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}
)


def status_body(code: int, reason: str, message: str) -> dict[str, object]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        ca_path: Path,
        *,
        rate: float,
        seed: int = 7,
        before_forward: Callable[[web.Request], Awaitable[None]] | None = None,
    ) -> None:
        self.upstream = upstream
        self.before_forward = before_forward
        self.rate = rate
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.faults: collections.Counter[str] = collections.Counter()
        self.requests = 0
        self.watches = 0
        self._random = random.Random(seed)
        self._ssl = ssl.create_default_context(cafile=str(ca_path))
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def _fault_for(self, request: web.Request, watch: bool) -> str | None:
        if self._random.random() >= self.rate:
            return None
        choices = ["error", "slow"]
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            choices.append("conflict")
        if watch:
            choices.append("drop")
        return self._random.choice(choices)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        watch = request.query.get("watch") in ("true", "1")
        self.requests += 1
        self.watches += watch
        fault = self._fault_for(request, watch)
        if fault is not None:
            self.faults[fault] += 1
        if fault == "error":
            return web.json_response(
                status_body(503, "ServiceUnavailable", "injected fault"), status=503
            )
        if fault == "conflict":
            return web.json_response(
                status_body(409, "Conflict", "injected fault: the object has been modified"),
                status=409,
            )
        if fault == "slow":
            await asyncio.sleep(self._random.uniform(1.0, 3.0))
        if self.before_forward is not None:
            await self.before_forward(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS},
            )
            await response.prepare(request)
            if fault == "drop":
                chunk = await upstream.content.readany()
                await response.write(chunk)
                if request.transport is not None:
                    request.transport.close()  # the watch dies mid-stream
                return response
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
