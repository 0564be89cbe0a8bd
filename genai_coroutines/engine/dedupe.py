"""Duplicates sent once (`BatchOptions.dedupe`): identical requests share one answer.

Items are twins when their journal digests are equal (the digest of everything that
determines the answer: the whole request body for OpenAI, the file and its settings
for Datalab). The first one admitted is sent; a twin admitted while it runs waits for
it, and a twin admitted after it succeeded is answered at once. Each twin ends with the
sent item's outcome (an `ItemEnd` of origin "twin", `duplicate_of` naming the index that
was sent, `attempts` and `rate_limited` at 0: it cost nothing, so the summary neither
prices nor tiers it, and a budget does not charge it), rendered at its own index and
journaled there like any result. A failure is shared only with the twins waiting for
it; a later twin is sent again, as a rerun would.

Memory stays bounded for lazy inputs of any length: the twins running are at most the
batch's concurrency, and the finished answers kept for later twins are the last
`REMEMBERED` successes (least recently used first out). A twin of an answer forgotten
that way is simply sent again (paid twice, never wrong). Keeping only the digests in
flight would bound memory further, but then twins further apart than the concurrency,
the usual case in real data, would all be sent.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from .outcome import Answered, ItemEnd

REMEMBERED = 10_000
"""Finished answers kept for twins still to come (each an `ItemEnd`)."""


@dataclass(frozen=True, slots=True)
class Twin:
    """The item an admitted twin waits for: its index, and its end once it ends."""

    index: int
    result: asyncio.Future[ItemEnd[Any]]


def twin_end(sent: ItemEnd[Any], index: int, started: float) -> ItemEnd[Any]:
    """The end of the sent item `sent.index`, given to its twin `index`."""
    outcome = replace(sent.outcome, attempts=0, rate_limited=0)
    return ItemEnd(index, outcome, started, "twin", sent.index)


class Twins:
    """The items of one batch by request digest (see the module docstring)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._running: dict[str, Twin] = {}
        self._leading: dict[int, str] = {}
        """Digest of each item sent while it runs (by index)."""
        self._done: OrderedDict[str, ItemEnd[Any]] = OrderedDict()

    def admit(self, index: int, digest: str, started: float) -> ItemEnd[Any] | Twin | None:
        """A finished twin's answer given to `index`; the running twin to wait for; or
        None: `index` is the first of its kind, sent, and `finished` must hear of it."""
        done = self._done.get(digest)
        if done is not None:
            self._done.move_to_end(digest)
            return twin_end(done, index, started)
        running = self._running.get(digest)
        if running is not None:
            return running
        self._running[digest] = Twin(index, asyncio.get_running_loop().create_future())
        self._leading[index] = digest
        return None

    def answered(self, digest: str, end: ItemEnd[Any]) -> None:
        """A success answered without sending (the journal's): later twins share it."""
        if isinstance(end.outcome, Answered) and end.duplicate_of is None:
            self._remember(digest, end)

    def finished(self, end: ItemEnd[Any]) -> None:
        """An item ended: the twins waiting for it get its end."""
        digest = self._leading.pop(end.index, None)
        if digest is None:
            return
        twin = self._running.pop(digest)
        if not twin.result.done():
            twin.result.set_result(end)
        if isinstance(end.outcome, Answered):
            self._remember(digest, end)

    def abandoned(self, index: int) -> None:
        """An item will not end (the batch is being cancelled): its waiting twins neither."""
        digest = self._leading.pop(index, None)
        if digest is not None:
            self._running.pop(digest).result.cancel()

    def _remember(self, digest: str, end: ItemEnd[Any]) -> None:
        self._done[digest] = end
        self._done.move_to_end(digest)
        while len(self._done) > self.remembered:
            self._done.popitem(last=False)
