"""The batch runner: many inputs, bounded concurrency, results as they finish.

`run_streaming` pulls the next input only when a slot is free, so a batch of 100,000
prompts read from a file holds at most `concurrency` of them in memory. Results are
yielded in completion order; each carries the index of its input so callers can restore
input order (`collect_in_order`) or write them out at once.

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
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

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
        self.items.append(result)
        self._wake_consumer()
        return len(self.items) >= self.room

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

    def _wake_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not consumer.done():
            consumer.set_result(None)


async def run_streaming(
    source: Source[T],
    work: Callable[[int, T], Awaitable[R]],
    *,
    concurrency: int,
    start: int = 0,
) -> AsyncIterator[R]:
    """Run `work(index, item)` for every item with at most `concurrency` at once; yield results.

    `work` must not raise for per-item failures: it returns them as results. An exception
    escaping `work` is a bug and ends the batch (after cancelling the rest).

    `concurrency` workers each take the next input when they are free and run it, so an
    item costs a coroutine, not a task of its own. Up to `concurrency` finished results
    wait for the consumer; while that many wait, no worker takes another input, so a slow
    consumer holds the batch back instead of letting finished results pile up.
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

    async def worker() -> None:
        try:
            if numbered is not None:  # a plain iterable: no coroutine per input
                for index, item in numbered:
                    if handoff.put(await work(index, item)):
                        await handoff.wait_for_room()
            else:
                while (numbered_item := await next_item()) is not None:
                    if handoff.put(await work(*numbered_item)):
                        await handoff.wait_for_room()
        except BaseException as exc:  # handed to the consumer, which raises it
            handoff.fail(exc)
            raise
        handoff.retire()

    workers = [asyncio.ensure_future(worker()) for _ in range(size)]
    try:
        while True:
            if handoff.items:
                yield handoff.take()
            elif handoff.failure is not None:
                raise handoff.failure
            elif not handoff.live:
                return
            else:
                await handoff.arrival()
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
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
