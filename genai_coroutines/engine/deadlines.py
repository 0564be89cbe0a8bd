"""Attempt deadlines: one watchdog task per timeout, in place of one timer per request.

aiohttp's `ClientTimeout(total=...)` puts a timer on the event loop for each request,
wrapped in aiohttp's own timer context, and cancels it when the request ends. On
asyncio's default loop the timer is also a push onto the loop's heap (its entries
compared in Python), a cancelled entry left behind and a share of the heap's periodic
rebuild. Measured with callgrind, a request's transport cost about 30,000 instructions
less without it, on the default loop and on uvloop alike (some 6% of a whole request),
all spent on a timer that almost never fires.

Attempts given the same timeout get their deadlines in the order they start, so a FIFO
holds them sorted for free. One watchdog per (event loop, timeout) sleeps until the
oldest unfinished deadline and cancels the attempts that reach theirs; it stops when no
attempt is left. Starting and ending an attempt is an append and a flag. Finished
entries are dropped as the watchdog passes them, and the FIFO compacted when they pile
up behind one slow attempt, so it stays within a small multiple of those in flight.

The cancellation is `asyncio.timeout`'s: the watchdog cancels the task and marks the
attempt expired, and `Deadline.timed_out` turns that `CancelledError` into a timeout
only if nobody else cancelled the task too (`Task.uncancel`), so Ctrl-C still stops a
batch whose attempt was expiring at the same moment.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

COMPACT_SLACK = 64
"""Finished entries a FIFO may hold beyond its attempts in flight before it is compacted."""


class Deadline:
    """One attempt's deadline (see `start`); `end` it when the attempt returns."""

    __slots__ = ("when", "task", "watch", "done", "expired")

    def __init__(self, when: float, task: asyncio.Task[object], watch: _Watch) -> None:
        self.when = when
        self.task = task
        self.watch = watch
        self.done = False
        self.expired = False

    def end(self) -> None:
        """The attempt returned (or raised): its deadline no longer applies."""
        self.done = True
        watch = self.watch
        watch.live -= 1
        if not watch.live and watch.watchdog is not None:
            watch.watchdog.cancel()
            watch.watchdog = None
            watch.queue.clear()

    def timed_out(self) -> bool:
        """Whether the `CancelledError` just caught is this deadline's (and only its)."""
        if not self.expired:
            return False
        uncancel = getattr(self.task, "uncancel", None)  # Python 3.11+
        return uncancel is None or uncancel() == 0


class _Watch:
    """The attempts of one loop with one timeout, oldest first, and their watchdog."""

    __slots__ = ("seconds", "queue", "live", "watchdog")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.queue: deque[Deadline] = deque()
        self.live = 0
        self.watchdog: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[object]) -> Deadline:
        """(No reference to `loop` is kept: `_watches` holds this weakly by its loop.)"""
        deadline = Deadline(loop.time() + self.seconds, task, self)
        queue = self.queue
        queue.append(deadline)
        self.live += 1
        if self.watchdog is None:
            self.watchdog = loop.create_task(self._watch())
        elif len(queue) > 2 * self.live + COMPACT_SLACK:
            self.queue = deque(d for d in queue if not d.done)
        return deadline

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self.queue:
            head = self.queue[0]
            if head.done:
                self.queue.popleft()
                continue
            wait = head.when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self.queue.popleft()
            head.expired = True
            head.task.cancel()
        self.watchdog = None


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, _Watch]] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[asyncio.AbstractEventLoop | None, dict[float, _Watch]] = (None, {})
"""The loop `start` served last and its watches (a batch runs on one loop throughout);
one tuple, replaced whole, so a thread running another loop never reads half of it."""


def start(seconds: float) -> Deadline:
    """A deadline `seconds` from now for the current task's attempt."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last
    if last[0] is loop:
        watches = last[1]
    else:
        watches = _watches.setdefault(loop, {})
        _last = (loop, watches)
    watch = watches.get(seconds)
    if watch is None:
        watch = watches[seconds] = _Watch(seconds)
    task = asyncio.current_task(loop)
    assert task is not None, "a deadline needs a task to cancel"
    return watch.start(loop, task)
