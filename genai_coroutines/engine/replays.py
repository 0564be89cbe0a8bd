"""`Replays`: the items a rerun answers from its journal, between their admission and their
result.

A rerun of a journal tells an item's journaled answer from its row alone
(`Journal.replayable`), so admitting it costs its digest and no more: its record is read,
revived and yielded when the consumer has nothing newer to take (`runner.run_streaming`'s
`backlog`). The workers thus go through a finished stretch of the input at the pace of its
digests, and the first item the journal cannot answer is sent without waiting for every
answer before it to be yielded. What waits here is runs of consecutive indices, so a
finished first half of a million items is one run, not half a million entries; they are
taken `READ_RUN` at a time, their records read in one query (`Journal.records`).
"""

from __future__ import annotations

from collections import deque

SCAN_TURN = 512
"""Items a worker admits for replay before it lets the loop run (the consumer yielding
what is replayed, the requests already sent)."""
READ_RUN = 256
"""Consecutive items replayed together: their records read in one query (each decoded
when it is yielded)."""


class Replays:
    """Indices admitted for replay, oldest first, as runs `[first, stop)`."""

    __slots__ = ("_runs", "_added")

    def __init__(self) -> None:
        self._runs: deque[list[int]] = deque()
        self._added = 0

    def __bool__(self) -> bool:
        return bool(self._runs)

    def add(self, index: int) -> bool:
        """Keep `index` for replay; True every `SCAN_TURN` indices (the worker's turn ends)."""
        runs = self._runs
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
        self._added += 1
        return not self._added % SCAN_TURN

    def take(self, most: int) -> tuple[int, int] | None:
        """The oldest indices kept, at most `most` consecutive ones as `(first, stop)`, no
        longer kept; None if there is none. (Read together: `Journal.records`.)"""
        runs = self._runs
        if not runs:
            return None
        run = runs[0]
        first = run[0]
        stop = min(run[1], first + most)
        run[0] = stop
        if stop == run[1]:
            runs.popleft()
        return first, stop
