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

What a twin waiting for a running original costs is a link between two indices: its
index and start time in the original's array (16 bytes), the original's index under the
digest, and the digest (32 bytes) under the original's index, so a million twins and originals
waiting at once on the Batch API's window hold no task, future, body or request. The
original's end is handed to them when it ends (`finished`).

Memory stays bounded for lazy inputs of any length: the finished answers kept for later
twins are the last `REMEMBERED` successes (least recently used first out). A twin of an
answer forgotten that way is simply sent again (paid twice, never wrong). Keeping only
the digests in flight would bound memory further, but then twins further apart than the
items in flight, the usual case in real data, would all be sent.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from .indexed import DIGEST, IndexedBytes
from .outcome import Answered, ItemEnd

REMEMBERED = 10_000
"""Finished answers kept for twins still to come (each an `ItemEnd`)."""


def twin_end(sent: ItemEnd[Any], index: int, started: float) -> ItemEnd[Any]:
    """The end of the sent item `sent.index`, given to its twin `index`."""
    outcome = replace(sent.outcome, attempts=0, rate_limited=0)
    return ItemEnd(index, outcome, started, "twin", sent.index)


class Twins:
    """The items of one batch by request digest (see the module docstring)."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._running: dict[bytes, int] = {}
        """The index of the item sent for each digest, while it runs."""
        self._sent = IndexedBytes(DIGEST)
        """The digest of each item sent, by its index, while it runs."""
        self._waiting: dict[int, array[float]] = {}
        """The twins waiting for each item sent that has any: index then start time, as
        floats (an index is exact as a float below 2**53): 16 bytes a twin."""
        self._done: OrderedDict[bytes, ItemEnd[Any]] = OrderedDict()

    def admit(self, index: int, digest: str, started: float) -> ItemEnd[Any] | int | None:
        """A finished twin's answer given to `index`; the index of the running twin it now
        waits for (`finished` hands it that one's end); or None: `index` is the first of
        its kind, sent, and `finished` must hear of it."""
        key = bytes.fromhex(digest)
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            return twin_end(done, index, started)
        running = self._running.get(key)
        if running is not None:
            waiting = self._waiting.get(running)
            if waiting is None:
                waiting = self._waiting[running] = array("d")
            waiting.append(index)
            waiting.append(started)
            return running
        self._running[key] = index
        self._sent[index] = key
        return None

    def answered(self, digest: str, end: ItemEnd[Any]) -> None:
        """A success answered without sending (the journal's): later twins share it."""
        if isinstance(end.outcome, Answered) and end.duplicate_of is None:
            self._remember(bytes.fromhex(digest), end)

    def finished(self, end: ItemEnd[Any]) -> list[ItemEnd[Any]]:
        """An item ended: the ends of the twins that waited for it."""
        key = self._sent.pop(end.index)
        if key is None:
            return []
        del self._running[key]
        if isinstance(end.outcome, Answered):
            self._remember(key, end)
        waiting = self._waiting.pop(end.index, None)
        if waiting is None:
            return []
        return [
            twin_end(end, int(waiting[at]), waiting[at + 1]) for at in range(0, len(waiting), 2)
        ]

    def abandoned(self, index: int) -> int:
        """An item will not end (the batch is being cancelled): nor will the twins waiting
        for it, which are let go; how many."""
        key = self._sent.pop(index)
        if key is None:
            return 0
        del self._running[key]
        return len(self._waiting.pop(index, ())) // 2

    def _remember(self, key: bytes, end: ItemEnd[Any]) -> None:
        self._done[key] = end
        self._done.move_to_end(key)
        while len(self._done) > self.remembered:
            self._done.popitem(last=False)
