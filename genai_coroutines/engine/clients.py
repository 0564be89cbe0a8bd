"""`Clients`: where every processor and the pipeline get their key limits and HTTP sessions.

Each of `ResponsesProcessor`, `DocumentProcessor` and `ExtractionPipeline` makes one
from its `limits=`, `limits_store=` and `connector=` arguments, which are declared
(`ClientOptions`), checked and documented here only. The limits (`KeyLimits`) say whose
rate limiters and capacities a batch draws on; the sessions are `http.open_session`'s,
one per batch and API, built on the caller's connector when one is given (or, after
`keep_sessions`, one per set of headers kept for every later batch: a Ray actor's).

`connector` is the seam for whatever the transport should do differently: a proxy, a
custom resolver or TLS context, a pool of another size, a connector a test counts.
It is a factory, not a connector: each session calls it once and closes what it
returns, so a connector is never shared between sessions or event loops (a
`process_batch_sync` call runs on a loop of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, TypedDict

import aiohttp

from .http import ConnectorFactory, open_session
from .limits import KeyLimits, chosen_limits

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11


def _package_version() -> str:
    try:
        return version("genai-coroutines")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "dev"


USER_AGENT = f"genai-coroutines/{_package_version()} (python)"
"""The `User-Agent` of every request to either API (a request's own headers may replace it)."""


class ClientOptions(TypedDict, total=False):
    """The keywords of every processor and the pipeline for their limits and sessions
    (`**clients: Unpack[ClientOptions]`), each optional."""

    limits_store: str | None
    """A `redis://` URL whose limits every process and machine using it shares (default
    `$GENAI_COROUTINES_LIMITS_STORE`, else this process's memory)."""
    limits: KeyLimits | None
    """A `KeyLimits` to use instead of `limits_store`'s (not both)."""
    connector: ConnectorFactory | None
    """Called with no arguments for each HTTP session a batch opens (one per batch, one
    per API in a pipeline), it returns the `aiohttp.BaseConnector` the session sends
    through and closes at its end; None (default): a pool of `max_concurrent_requests`
    keep-alive connections."""


class Clients:
    """The key limits and the session maker of one processor or pipeline."""

    def __init__(self, **options: Unpack[ClientOptions]) -> None:
        """`options`: see `ClientOptions`; a keyword it does not declare is a TypeError."""
        unknown = sorted(set(options) - ClientOptions.__optional_keys__)
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
        connector = options.get("connector")
        if connector is not None and not callable(connector):
            raise TypeError(
                "connector must be a callable returning an aiohttp connector, not "
                f"{type(connector).__name__}"
            )
        self.limits = chosen_limits(options.get("limits"), options.get("limits_store"))
        self.connector = connector
        self._kept: dict[tuple[tuple[str, str], ...], aiohttp.ClientSession] | None = None
        """With `keep_sessions`: the sessions kept open, by the headers they send."""

    async def ready(self) -> None:
        """Check the limits store can be used: called before a batch sends anything."""
        await self.limits.ready()

    def session(
        self, concurrency: int, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[aiohttp.ClientSession]:
        """`async with` it: a session for `concurrency` requests at once, sending `headers`
        with each, closed at the end of the block; after `keep_sessions`, the one kept for
        these headers (opened by the first batch that asked, on its event loop)."""
        if self._kept is None:
            return open_session(concurrency, headers, self.connector)
        key = tuple(sorted(headers.items()))
        session = self._kept.get(key)
        if session is None or session.closed:
            session = self._kept[key] = open_session(concurrency, headers, self.connector)
        return nullcontext(session)

    def keep_sessions(self) -> None:
        """Keep each session open for the next batches sending the same headers, until
        `close_sessions`: an owner running many batches on one event loop (a Ray actor) then
        keeps one pool of connections for its lifetime instead of one per batch."""
        if self._kept is None:
            self._kept = {}

    async def close_sessions(self) -> None:
        """Close the sessions `keep_sessions` kept (on the loop they were opened on)."""
        kept = self._kept or {}
        if self._kept is not None:
            self._kept = {}
        for session in kept.values():
            await session.close()


class UsesClients:
    """The base of what runs batches through one `Clients` (each processor, the pipeline):
    made from the caller's `ClientOptions` once, shared by all its batches."""

    def __init__(self, **clients: Unpack[ClientOptions]) -> None:
        self.clients = Clients(**clients)

    @property
    def limits(self) -> KeyLimits:
        """The limits every batch of this object draws on, for each key it sends with."""
        return self.clients.limits
