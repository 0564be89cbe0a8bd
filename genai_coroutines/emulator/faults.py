"""Fault injection: the failures real networks and proxies produce, on demand.

A fault is picked per request, first from a queue a test fills (`schedule`), so a
test can say "the next two polls answer 503" and count attempts exactly; then at
random from `EmulatorConfig.fault_rates`, drawn from a seeded RNG so a benchmark
run can be repeated.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict, deque

from aiohttp import web

from .state import EmulatorConfig, Stats

FAULT_KINDS = ("500", "502", "503", "504", "reset", "hang", "stall", "malformed", "slow")
"""What `apply` knows: statuses with the bodies real servers send, a connection reset
before any answer, a request never answered, headers sent then a body that never
ends, a 200 whose body is not JSON, and an answer delayed by `slow_seconds`."""

PROXY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class FaultPlan:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.queued: defaultdict[str, deque[str]] = defaultdict(deque)

    def schedule(self, endpoint: str, kind: str, times: int = 1) -> None:
        """Make the next `times` requests to `endpoint` fail with `kind`."""
        if kind not in FAULT_KINDS and not kind.isdigit():
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        self.queued[endpoint].extend([kind] * times)

    def clear(self) -> None:
        self.queued.clear()

    def pick(self, endpoint: str) -> str | None:
        queue = self.queued.get(endpoint)
        if queue:
            return queue.popleft()
        rates = self.config.fault_rates.get(endpoint)
        if not rates:
            return None
        draw = self.rng.random()
        for kind, rate in rates.items():
            if draw < rate:
                return kind
            draw -= rate
        return None


def _error_body(status: int, endpoint: str) -> dict[str, object]:
    """The JSON a failing server sends: OpenAI's error object, or FastAPI's `detail` (Datalab)."""
    if endpoint.startswith("marker"):
        return {"detail": "Internal Server Error" if status == 500 else "Service Unavailable"}
    return {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


async def apply(
    kind: str, request: web.Request, config: EmulatorConfig, endpoint: str = "responses"
) -> web.StreamResponse | None:
    """Carry out a fault. Returns the response to send, or None to answer normally."""
    if kind == "slow":
        await asyncio.sleep(config.slow_seconds)
        return None
    if kind == "hang":
        await asyncio.sleep(config.hang_seconds)
        return web.Response(status=504)
    if kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError
    if kind == "stall":
        stalled = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        stalled.content_length = 1000
        await stalled.prepare(request)
        await stalled.write(b'{"id": "resp_')
        await asyncio.sleep(config.hang_seconds)
        return stalled
    if kind == "malformed":
        return web.Response(status=200, body=b'{"id": "resp_trunc', content_type="application/json")
    if kind == "502":
        return web.Response(status=502, body=PROXY_502, content_type="text/html")
    status = int(kind)
    return web.json_response(_error_body(status, endpoint), status=status)


async def maybe_fault(
    endpoint: str, request: web.Request, plan: FaultPlan, stats: Stats
) -> web.StreamResponse | None:
    """Pick and apply a fault for this request; count it. None means: answer normally."""
    kind = plan.pick(endpoint)
    if kind is None:
        return None
    stats.faults[f"{endpoint} {kind}"] += 1
    response = await apply(kind, request, plan.config, endpoint)
    if response is not None:
        stats.count(endpoint, response.status)
    return response
