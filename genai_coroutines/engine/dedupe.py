"""Duplicates sent once (`BatchOptions.dedupe`): identical requests share one answer.

Items are twins when their journal digests are equal (the digest of everything that
determines the answer: the whole request body for OpenAI, the file and its settings
for Datalab). The first one admitted is sent; a twin admitted while it runs waits for
it, and a twin admitted after it succeeded is answered at once. Each twin's result is
the sent item's, with its own `index`, `duplicate_of` naming the index that was sent,
`attempts` and `rate_limited` at 0 (it cost nothing: the summary neither prices nor
tiers it, and a budget does not charge it), and it is journaled at its own index like
any result. A failure is shared only with the twins waiting for it; a later twin is
sent again, as a rerun would.

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
from dataclasses import dataclass

from .bookkeeping import Result

REMEMBERED = 10_000
"""Finished answers kept for twins still to come (each a result dict)."""


@dataclass(frozen=True, slots=True)
class Twin:
    """The item an admitted twin waits for: its index, and its result once it ends."""

    index: int
    result: asyncio.Future[Result]


def twin_result(result: Result, index: int) -> Result:
    """The result of the sent item `result["index"]`, given to its twin `index`."""
    copy = {key: value for key, value in result.items() if key != "from_journal"}
    copy.update(index=index, attempts=0, rate_limited=0)
    return {"index": index, "duplicate_of": result["index"], **copy}


class Twins:
    """The items of one batch by request digest (see the module docstring)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._running: dict[str, Twin] = {}
        self._leading: dict[int, str] = {}
        """Digest of each item sent while it runs (by index)."""
        self._done: OrderedDict[str, Result] = OrderedDict()

    def admit(self, index: int, digest: str) -> Result | Twin | None:
        """A finished twin's answer given to `index`; the running twin to wait for; or
        None: `index` is the first of its kind, sent, and `finished` must hear of it."""
        done = self._done.get(digest)
        if done is not None:
            self._done.move_to_end(digest)
            return twin_result(done, index)
        running = self._running.get(digest)
        if running is not None:
            return running
        self._running[digest] = Twin(index, asyncio.get_running_loop().create_future())
        self._leading[index] = digest
        return None

    def answered(self, digest: str, result: Result) -> None:
        """A success answered without sending (the journal's): later twins share it."""
        if result.get("success") and result.get("duplicate_of") is None:
            self._remember(digest, result)

    def finished(self, result: Result) -> None:
        """An item ended: the twins waiting for it get its result."""
        digest = self._leading.pop(result["index"], None)
        if digest is None:
            return
        twin = self._running.pop(digest)
        if not twin.result.done():
            twin.result.set_result(result)
        if result.get("success"):
            self._remember(digest, result)

    def abandoned(self, index: int) -> None:
        """An item will not end (the batch is being cancelled): its waiting twins neither."""
        digest = self._leading.pop(index, None)
        if digest is not None:
            self._running.pop(digest).result.cancel()

    def _remember(self, digest: str, result: Result) -> None:
        self._done[digest] = result
        self._done.move_to_end(digest)
        while len(self._done) > self.remembered:
            self._done.popitem(last=False)
