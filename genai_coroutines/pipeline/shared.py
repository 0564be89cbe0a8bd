"""Identical extraction requests sent once (`dedupe`), for documents that differ.

The driver's dedupe (`engine.dedupe`) makes identical documents one item. Different
documents can still come to one extraction request (the same text in two scans, two
formats of one file): with `dedupe`, the first such request is sent, one made while it
runs waits for it, and one made after it succeeded is answered at once, each with the
outcome of the document that sent it. As for the driver's twins, a failure is shared only
with those waiting for it, and the last `REMEMBERED` answers are kept for later ones.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ..engine import Answered, Outcome
from ..engine.dedupe import REMEMBERED

Sent = tuple[int, Outcome[Any]]
"""The index of the document that sent a request, and its outcome."""


class SharedRequests:
    """The extraction requests of one batch by journal digest (see the module docstring)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._running: dict[str, asyncio.Future[Sent]] = {}
        self._done: OrderedDict[str, Sent] = OrderedDict()

    async def run(
        self, digest: str, index: int, send: Callable[[], Awaitable[Outcome[Any]]]
    ) -> tuple[Outcome[Any], int | None]:
        """The outcome of request `digest` for document `index`, and the index of the
        document that sent it when that is another one (None: `send` sent it now)."""
        done = self._done.get(digest)
        if done is not None:
            self._done.move_to_end(digest)
            return done[1], done[0]
        running = self._running.get(digest)
        if running is not None:
            await asyncio.wait([running])
            if running.cancelled():  # its document's batch is being cancelled: send it here
                return await self.run(digest, index, send)
            sender, outcome = running.result()
            return outcome, sender
        future = self._running[digest] = asyncio.get_running_loop().create_future()
        try:
            outcome = await send()
        except BaseException:
            del self._running[digest]
            future.cancel()
            raise
        del self._running[digest]
        future.set_result((index, outcome))
        if isinstance(outcome, Answered):
            self.answered(digest, index, outcome)
        return outcome, None

    def answered(self, digest: str, index: int, outcome: Outcome[Any]) -> None:
        """A success of document `index` (sent now, or the journal's): later ones share it."""
        self._done[digest] = (index, outcome)
        self._done.move_to_end(digest)
        while len(self._done) > self.remembered:
            self._done.popitem(last=False)
