"""Fault injection: the failures real networks and proxies produce, on demand.

A fault is picked per request, first from a queue a test fills (`schedule`), so a
test can say "the next two polls answer 503" and count attempts exactly; then at
random from `EmulatorConfig.fault_rates`, drawn from a seeded RNG so a benchmark
run can be repeated.

Two kinds of fault only fit some requests, and a queued one waits, in its place in
the queue, for the first request it fits (requests it does not fit are answered as
if it were not there; a random draw of one for such a request is no fault):

- `stream-*` faults break an SSE answer, so they fit `/v1/responses` requests that
  asked for `stream: true`;
- a fault scheduled `when_input_contains=marker` fits `/v1/responses` requests whose
  input message texts contain `marker`, to fail one chosen item of a batch.

`batch_lines` is no HTTP endpoint: its faults (`fault_kinds.LINE_FAULTS`, and only those)
are picked for each line a batch runs and spoil what the batch writes into its output file.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import defaultdict, deque

from aiohttp import web

from .fault_kinds import (
    FAULT_KINDS,
    SHOULD_RETRY,
    STREAM_FAULTS,
    is_fault_kind,
    misfit,
)
from .state import EmulatorConfig, Stats

TARGETED_ENDPOINT = "responses"
"""The only endpoint that tells `pick` whether a request streams and what its input says."""

PROXY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class FaultPlan:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.queued: defaultdict[str, deque[tuple[str, str | None]]] = defaultdict(deque)
        """Endpoint -> (kind, input marker or None), in the order they were scheduled."""

    def schedule(
        self, endpoint: str, kind: str, times: int = 1, *, when_input_contains: str | None = None
    ) -> None:
        """Make the next `times` requests to `endpoint` that the fault fits fail with `kind`."""
        if not is_fault_kind(kind):
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        if endpoint != TARGETED_ENDPOINT and (
            kind in STREAM_FAULTS or when_input_contains is not None
        ):
            raise ValueError(f"stream faults and input markers fit {TARGETED_ENDPOINT!r} only")
        problem = misfit(endpoint, kind)
        if problem is not None:
            raise ValueError(problem)
        self.queued[endpoint].extend([(kind, when_input_contains)] * times)

    def clear(self) -> None:
        self.queued.clear()

    def pick(self, endpoint: str, *, streaming: bool = False, text: str = "") -> str | None:
        """The fault for a request (`streaming`: it asked for SSE; `text`: its input), or None."""
        queue = self.queued.get(endpoint, deque())
        for position, (kind, marker) in enumerate(queue):
            if (streaming or kind not in STREAM_FAULTS) and (marker is None or marker in text):
                del queue[position]
                return kind
        rates = self.config.fault_rates.get(endpoint)
        if not rates:
            return None
        draw = self.rng.random()
        for kind, rate in rates.items():
            if draw < rate:
                return kind if streaming or kind not in STREAM_FAULTS else None
            draw -= rate
        return None


def _error_body(status: int, endpoint: str) -> dict[str, object]:
    """The JSON a failing server sends: OpenAI's error object, or FastAPI's `detail` (Datalab)."""
    if endpoint.startswith(("marker", "datalab", "storage")):
        return {"detail": "Internal Server Error" if status == 500 else "Service Unavailable"}
    return {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def _status_headers(suffix: str, config: EmulatorConfig) -> dict[str, str]:
    if suffix == "retry-after":
        wait = config.fault_retry_after
        return {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
    if suffix:
        return {"x-should-retry": SHOULD_RETRY[suffix]}
    return {}


async def apply(
    kind: str, request: web.Request, config: EmulatorConfig, endpoint: str = "responses"
) -> web.StreamResponse | None:
    """Carry out a fault. Returns the response to send, or None to answer normally (a stream
    fault then breaks that answer as the endpoint sends it)."""
    if kind in STREAM_FAULTS:
        return None
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
    code, _, suffix = kind.partition("-")
    status, headers = int(code), _status_headers(suffix, config)
    if status == 502:
        return web.Response(status=502, body=PROXY_502, content_type="text/html", headers=headers)
    return web.json_response(_error_body(status, endpoint), status=status, headers=headers)


async def inject(
    kind: str | None, endpoint: str, request: web.Request, config: EmulatorConfig, stats: Stats
) -> web.StreamResponse | None:
    """Count and apply a picked fault (None: none). None back means: answer normally."""
    if kind is None:
        return None
    stats.faults[f"{endpoint} {kind}"] += 1
    response = await apply(kind, request, config, endpoint)
    if response is not None:
        stats.count(endpoint, response.status)
    return response


async def maybe_fault(
    endpoint: str, request: web.Request, plan: FaultPlan, stats: Stats
) -> web.StreamResponse | None:
    """Pick and apply a fault for this request; count it. None means: answer normally."""
    return await inject(plan.pick(endpoint), endpoint, request, plan.config, stats)
