"""The batch runner: many inputs, bounded concurrency, results as they finish.

`run_streaming` pulls the next input only when a slot is free, so a batch of 100,000
prompts read from a file holds at most `concurrency` of them in memory. Results are
yielded in completion order; each carries the index of its input so callers can restore
input order (`collect_in_order`) or write them out at once.

An item that waits on the provider (a background response, a Datalab job being polled)
gives its slot up for the wait (`Slots.wait`): another input is admitted meanwhile, and
the item finishes without a slot once its wait ends. At most `max_waiting` items wait so
at once; the next ones wait in their slots, so at most `concurrency + max_waiting` items
wait or run at once (plus those finishing after their wait).

Cancelling the consumer (Ctrl-C, `task.cancel()`, breaking out of the loop) cancels the
in-flight work and waits for it to unwind, so no request is left running behind the
caller's back and every result already yielded stays yielded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sized,
)
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

from .replays import SCAN_TURN
from .stages import MAX_WAITING

T = TypeVar("T")
R = TypeVar("R")

BACKLOG_TURN = 256
"""Results `run_streaming` takes from its `backlog` in a row before it lets the loop run."""
QUEUED_RESULTS = 256
"""Results that arrived later (`Later.put`) waiting for the consumer before their stage
pauses for it."""

Source = Iterable[T] | AsyncIterable[T]


async def _aiter(source: Source[T]) -> AsyncGenerator[T, None]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item


class _Handoff(Generic[R]):
    """Finished results on their way from the workers to the one consumer, in the order
    they finished. At most `room` wait: a worker that finds it full waits until the
    consumer takes one. A deque and a future per wait instead of an `asyncio.Queue` and a
    future per result: this is on every item's path, and the waits happen only when the
    consumer is the slower side."""

    __slots__ = ("items", "room", "live", "failure", "_loop", "_consumer", "_workers")

    def __init__(self, room: int, live: int) -> None:
        self.items: deque[R] = deque()
        self.room = room
        self.live = live
        """Workers still running."""
        self.failure: BaseException | None = None
        """What ended a worker (a bug in `work`), raised to the consumer after the results
        that finished before it."""
        self._loop = asyncio.get_running_loop()
        self._consumer: asyncio.Future[None] | None = None
        self._workers: list[asyncio.Future[None]] = []

    def put(self, result: R) -> bool:
        """Hand a result over; True when that leaves no room (see `wait_for_room`)."""
        items = self.items
        items.append(result)
        consumer, self._consumer = self._consumer, None  # `_wake_consumer`, inlined
        if consumer is not None and not consumer.done():
            consumer.set_result(None)
        return len(items) >= self.room

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._wake_consumer()

    def retire(self) -> None:
        self.live -= 1
        self._wake_consumer()

    def take(self) -> R:
        result = self.items.popleft()
        if self._workers and len(self.items) < self.room:
            waiting, self._workers = self._workers, []
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        return result

    async def arrival(self) -> None:
        """Until a worker puts, fails or retires."""
        self._consumer = self._loop.create_future()
        await self._consumer

    async def wait_for_room(self) -> None:
        while len(self.items) >= self.room:
            future = self._loop.create_future()
            self._workers.append(future)
            await future

    def wake(self) -> None:
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not consumer.done():
            consumer.set_result(None)


class Later(Generic[R]):
    """Results that arrive after their worker moved on: an item the worker handed to a stage
    that answers it later (a grouped stage's line) costs no worker while it waits.
    `pending` counts them; `put` hands one over once its answer is in (waiting while the
    consumer is `QUEUED_RESULTS` behind), `fail` ends the batch with a bug. Once every
    worker has retired (the input is read), `close` is called once: the stages then send
    what they still hold, and the batch ends when nothing is pending."""

    __slots__ = ("pending", "close", "closed", "handoff")

    def wake(self) -> None:
        """Have the consumer look again (something for `run_streaming`'s `backlog`)."""
        assert self.handoff is not None
        self.handoff.wake()

    def __init__(self, close: Callable[[], None]) -> None:
        self.pending = 0
        self.close = close
        self.closed = False
        self.handoff: _Handoff[R] | None = None

    async def put(self, result: R) -> None:
        self.put_nowait(result)
        handoff = self.handoff
        assert handoff is not None
        if len(handoff.items) >= QUEUED_RESULTS:
            await handoff.wait_for_room()

    def put_nowait(self, result: R) -> None:
        self.pending -= 1
        assert self.handoff is not None
        self.handoff.put(result)

    def fail(self, exc: BaseException) -> None:
        assert self.handoff is not None
        self.handoff.fail(exc)


class Slots:
    """The runner's `concurrency` slots, which an item waiting on the provider leaves for
    the wait (`wait`; see the module docstring). `run_streaming` sets `spawn` (start a
    worker for a freed slot: False once the input ran out)."""

    __slots__ = ("max_waiting", "parked", "orphans", "spawn")

    def __init__(self, max_waiting: int = MAX_WAITING) -> None:
        self.max_waiting = max_waiting
        self.parked = 0
        """Items waiting without a slot."""
        self.orphans = 0
        """Workers finishing an item whose wait gave their slot away: as many workers retire
        after their item instead of taking another input."""
        self.spawn: Callable[[], bool] | None = None

    @asynccontextmanager
    async def wait(self) -> AsyncIterator[None]:
        """Run the body without holding a slot (in it, when `max_waiting` items already
        wait so, or outside a runner). The item then finishes without one: taking a slot
        back could deadlock with what it holds through the wait (a Datalab job's leased
        pages, which the items in the slots may be waiting for)."""
        spawn = self.spawn
        if spawn is None or self.parked >= self.max_waiting:
            yield
            return
        self.parked += 1
        spawned = spawn()
        try:
            yield
        finally:
            self.parked -= 1
            if spawned:
                self.orphans += 1


async def run_streaming(
    source: Source[T],
    work: Callable[[int, T], Awaitable[R | None]],
    *,
    concurrency: int,
    start: int = 0,
    slots: Slots | None = None,
    later: Later[R] | None = None,
    backlog: Callable[[], R | None] | None = None,
    kept: Callable[[int, T], bool] | None = None,
) -> AsyncGenerator[R, None]:
    """Run `work(index, item)` for every item with at most `concurrency` at once; yield results.

    `work` must not raise for per-item failures: it returns them as results. An exception
    escaping `work` is a bug and ends the batch (after cancelling the rest).

    `concurrency` workers each take the next input when they are free and run it, so an
    item costs a coroutine, not a task of its own. Up to `concurrency` finished results
    wait for the consumer; while that many wait, no worker takes another input, so a slow
    consumer holds the batch back instead of letting finished results pile up.

    `slots`: what `work` waits under (`Slots.wait`) to free its slot while it waits; a
    freed slot gets a worker of its own, and a worker retires for each item that
    finished without its slot.

    `later`: `work` returns None for an item whose result comes through `later.put`
    instead (see `Later`).

    `backlog`: results made when asked (a journal's answers, `engine.replays`): one is
    taken after each result of the workers, and while none waits (the loop runs every
    `BACKLOG_TURN` of them); `work` returns None for the items it keeps there, and calls
    `later.wake()` when it had none.

    `kept`: True for an item the `backlog` answers (a journal's answer to its very input),
    which then costs no `work` (no coroutine: a rerun passes a million of them); a worker
    lets the loop run after every `SCAN_TURN` of them.
    """
    numbered: Iterator[tuple[int, T]] | None = None
    items: AsyncGenerator[tuple[int, T], None] | None = None
    if isinstance(source, AsyncIterable):
        items = _numbered(source, start)
        turn = asyncio.Lock()

        async def next_item() -> tuple[int, T] | None:
            assert items is not None
            async with turn:  # an async generator runs one `__anext__` at a time
                return await anext(items, None)

    else:
        numbered = enumerate(source, start)

    size = max(1, concurrency)
    handoff: _Handoff[R] = _Handoff(size, size)
    ran_out = False
    if later is not None:
        later.handoff = handoff

    async def worker() -> None:
        nonlocal ran_out
        try:
            turn = 0
            if numbered is not None:  # a plain iterable: no coroutine per input
                for index, item in numbered:
                    if kept is not None and kept(index, item):
                        turn += 1
                        if not turn % SCAN_TURN:
                            await asyncio.sleep(0)
                        continue
                    result = await work(index, item)
                    if result is not None and handoff.put(result):
                        await handoff.wait_for_room()
                    if slots is not None and slots.orphans:  # its slot went to another
                        slots.orphans -= 1
                        break
                else:
                    ran_out = True
            else:
                while (numbered_item := await next_item()) is not None:
                    if kept is not None and kept(*numbered_item):
                        turn += 1
                        if not turn % SCAN_TURN:
                            await asyncio.sleep(0)
                        continue
                    result = await work(*numbered_item)
                    if result is not None and handoff.put(result):
                        await handoff.wait_for_room()
                    if slots is not None and slots.orphans:
                        slots.orphans -= 1
                        break
                else:
                    ran_out = True
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.fail(exc)
            raise
        handoff.retire()

    workers = {asyncio.ensure_future(worker()) for _ in range(size)}

    def spawn() -> bool:
        if ran_out:
            return False
        handoff.live += 1
        task = asyncio.ensure_future(worker())
        workers.add(task)
        task.add_done_callback(workers.discard)  # one per wait: not kept once it ends
        return True

    if slots is not None:
        slots.spawn = spawn
    try:
        taken = 0
        while True:
            if handoff.items:
                yield handoff.take()
                if backlog is None:
                    continue
            if backlog is not None and handoff.failure is None and (made := backlog()) is not None:
                yield made
                taken += 1
                if not taken % BACKLOG_TURN:
                    await asyncio.sleep(0)
            elif handoff.items:
                continue
            elif handoff.failure is not None:
                raise handoff.failure
            elif handoff.live:
                await handoff.arrival()
            elif later is None or (later.closed and not later.pending):
                return
            elif not later.closed:
                later.closed = True
                later.close()
            else:
                await handoff.arrival()
    finally:
        running = list(workers)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if items is not None:
            await items.aclose()


async def _numbered(source: AsyncIterable[T], start: int) -> AsyncGenerator[tuple[int, T], None]:
    index = start
    async for item in source:
        yield index, item
        index += 1


def count(source: object, unknown: str) -> int | str:
    """How many inputs a source holds, for a log line; `unknown` for a lazy one."""
    return len(source) if isinstance(source, Sized) else unknown


async def collect_in_order(results: AsyncIterator[R], index_of: Callable[[R], int]) -> list[R]:
    """Gather a stream of indexed results into a list in input order."""
    by_index: dict[int, R] = {}
    async for result in results:
        by_index[index_of(result)] = result
    return [by_index[i] for i in sorted(by_index)]
