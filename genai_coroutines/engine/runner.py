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
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sized,
)
from typing import TypeVar

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
    item costs a coroutine, not a task of its own. A worker hands its result over and
    takes another input only when the consumer comes back for the next result: a slow
    consumer holds the batch back instead of letting finished results pile up.
    """
    finished: asyncio.Queue[tuple[R, asyncio.Future[None]] | BaseException | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    if isinstance(source, AsyncIterable):
        items: AsyncGenerator[tuple[int, T], None] | None = _numbered(source, start)
        turn = asyncio.Lock()

        async def next_item() -> tuple[int, T] | None:
            assert items is not None
            async with turn:  # an async generator runs one `__anext__` at a time
                return await anext(items, None)

    else:
        items, numbered = None, enumerate(source, start)

        async def next_item() -> tuple[int, T] | None:
            return next(numbered, None)

    async def worker() -> None:
        try:
            while (numbered_item := await next_item()) is not None:
                taken = loop.create_future()
                finished.put_nowait((await work(*numbered_item), taken))
                await taken
        except BaseException as exc:  # handed to the consumer, which raises it
            finished.put_nowait(exc)
            raise
        finished.put_nowait(None)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, concurrency))]
    live = len(workers)
    try:
        while live:
            entry = await finished.get()
            if entry is None:
                live -= 1
            elif isinstance(entry, BaseException):
                raise entry
            else:
                result, taken = entry
                yield result
                taken.set_result(None)
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
