"""Transport: how bytes move, and nothing about what they mean.

One `aiohttp.ClientSession` per batch, its connection pool sized to the batch's
concurrency so keep-alive connections are reused instead of opened per request.
`send` performs one attempt under one deadline that covers connecting, sending and
reading the whole body: a server that sends headers and then stalls is a timeout,
not a half-read reply. Network trouble comes back as a `Failure`, never as an
exception, so the retry policy sees every outcome in one shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from .retry import Failure

BodyReader = Callable[[aiohttp.ClientResponse], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def open_session(
    concurrency: int, headers: Mapping[str, str] | None = None
) -> aiohttp.ClientSession:
    """A session whose pool holds as many connections as the batch runs requests at once."""
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, ttl_dns_cache=300, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers=dict(headers or {}),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        auto_decompress=True,
        raise_for_status=False,
    )


async def read_all(response: aiohttp.ClientResponse) -> bytes:
    return await response.read()


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: aiohttp.ClientTimeout,
    read_body: BodyReader = read_all,
    **kwargs: Any,
) -> Reply | Failure:
    """One HTTP attempt. `timeout.total` bounds it from connect to the last body byte."""
    try:
        async with session.request(method, url, timeout=timeout, **kwargs) as response:
            body = await read_body(response)
            return Reply(response.status, response.headers, body)
    except asyncio.TimeoutError:
        return Failure(f"Request timed out after {timeout.total:g}s", "timeout", retriable=True)
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
