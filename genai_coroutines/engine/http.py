"""Transport: how bytes move, and nothing about what they mean.

One `aiohttp.ClientSession` per batch, its connection pool sized to the batch's
concurrency so keep-alive connections are reused instead of opened per request
(unless the caller brings its own connector: `clients.Clients`).
`send` performs one attempt under one deadline that covers connecting, sending and
reading the whole body: a server that sends headers and then stalls is a timeout,
not a half-read reply. The deadline is `deadlines`' (one watchdog per timeout) rather
than aiohttp's `ClientTimeout.total` (one event-loop timer per request, some 6% of
the request's CPU). Network trouble comes back as a `Failure`, never as an
exception, so the retry policy sees every outcome in one shape.

Redirects are never followed. aiohttp would follow them carrying every header but
`Authorization` to whatever host the server names (a Datalab `X-Api-Key` included),
and a 302 would turn a paid POST into a GET whose answer looks like a success. Neither
API redirects its clients, so a 3xx is a failure that names where it pointed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDictProxy

from . import deadlines
from .outcome import Failure

BodyReader = Callable[[aiohttp.ClientResponse], Awaitable[bytes]]
ConnectorFactory = Callable[[], aiohttp.BaseConnector]
"""Makes the connector of one session, e.g. `lambda: aiohttp.TCPConnector(limit=20)`."""

CONNECT_TIMEOUT_SECS = 30.0
"""Bound on opening a connection, within any attempt's own deadline."""
_CONNECT_ONLY = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECS)


@dataclass(slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def open_session(
    concurrency: int,
    headers: Mapping[str, str] | None = None,
    connector: ConnectorFactory | None = None,
) -> aiohttp.ClientSession:
    """A session whose pool holds as many connections as the batch runs requests at once,
    or on the connector `connector()` makes (see `clients.Clients`); it closes either."""
    return aiohttp.ClientSession(
        connector=_pool(concurrency) if connector is None else connector(),
        headers=dict(headers or {}),
        timeout=_CONNECT_ONLY,
        auto_decompress=True,
        raise_for_status=False,
    )


def _pool(concurrency: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300, enable_cleanup_closed=True
    )


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: float | None,
    idle_timeout: float | None = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    read_body: BodyReader | None = None,
) -> Reply | Failure:
    """One HTTP attempt. `timeout` seconds bound it from connect to the last body byte,
    read whole unless `read_body` reads it; or with `timeout` None (a transfer of any
    size), `idle_timeout` bounds each wait for the next bytes."""
    deadline = None if timeout is None else deadlines.start(timeout)
    try:
        async with session.request(
            method,
            url,
            timeout=_CONNECT_ONLY if idle_timeout is None else transfer_timeout(idle_timeout),
            allow_redirects=False,
            data=data,
            headers=headers,
        ) as response:
            if 300 <= response.status < 400:
                return _redirect(response)
            body = await (response.read() if read_body is None else read_body(response))
            return Reply(response.status, response.headers, body)
    except asyncio.CancelledError:
        if deadline is not None and deadline.timed_out():
            return Failure(f"Request timed out after {timeout:g}s", "timeout", retriable=True)
        raise
    except asyncio.TimeoutError:  # aiohttp's own bounds: connecting, or an idle transfer
        bounds = f"{CONNECT_TIMEOUT_SECS:g}s to connect" + (
            f", {idle_timeout:g}s without data" if idle_timeout is not None else ""
        )
        return Failure(f"Request timed out ({bounds})", "timeout", retriable=True)
    except aiohttp.ClientPayloadError as exc:
        return Failure(f"Response body cut short: {exc}", "connection_error", retriable=True)
    except aiohttp.ClientConnectionError as exc:
        return Failure(
            f"Connection failed: {exc or type(exc).__name__}", "connection_error", retriable=True
        )
    except aiohttp.ClientResponseError as exc:
        return Failure(
            f"Malformed HTTP response: {exc.message}", "connection_error", retriable=True
        )
    except (aiohttp.InvalidURL, ValueError) as exc:  # a URL a server handed us
        return Failure(f"Unusable URL {url[:200]!r}: {exc}", "invalid_response", retriable=False)
    finally:
        if deadline is not None:
            deadline.end()


def transfer_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """aiohttp's bounds for a transfer of any size: connecting, and each wait for data."""
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECS, sock_read=seconds)


def _redirect(response: aiohttp.ClientResponse) -> Failure:
    target = urlsplit(response.headers.get("Location", ""))
    where = f"{target.scheme}://{target.netloc}" if target.netloc else "elsewhere"
    return Failure(
        f"{response.status} redirect to {where} refused: the API does not redirect, and the "
        "key is never sent to another address",
        "redirect_refused",
        retriable=False,
        status=response.status,
    )
