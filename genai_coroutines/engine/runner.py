"""The batch runner: many inputs, bounded concurrency, results as they finish.

`run_streaming` pulls the next input only when a slot is free, so a batch of 100,000
prompts read from a file holds at most `concurrency` of them (and their tasks) in
memory. Results are yielded in completion order; each carries the index of its input
so callers can restore input order (`collect_in_order`) or write them out at once.

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

    Finished tasks report themselves to a queue (a done callback), so each completion
    costs O(1); `asyncio.wait` would re-register callbacks on every pending task each
    time, O(concurrency) per item, which is most of the runner's CPU at high concurrency.
    """
    pending: set[asyncio.Task[R]] = set()
    finished: asyncio.Queue[asyncio.Task[R]] = asyncio.Queue()
    items = _aiter(source)
    index = start
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < concurrency:
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                task = asyncio.ensure_future(work(index, item))
                task.add_done_callback(finished.put_nowait)
                pending.add(task)
                index += 1
            if not pending:
                return
            task = await finished.get()
            pending.discard(task)
            yield task.result()
    finally:
        for task in pending:
            task.remove_done_callback(finished.put_nowait)
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await items.aclose()


def count(source: object, unknown: str) -> int | str:
    """How many inputs a source holds, for a log line; `unknown` for a lazy one."""
    return len(source) if isinstance(source, Sized) else unknown


async def collect_in_order(results: AsyncIterator[R], index_of: Callable[[R], int]) -> list[R]:
    """Gather a stream of indexed results into a list in input order."""
    by_index: dict[int, R] = {}
    async for result in results:
        by_index[index_of(result)] = result
    return [by_index[i] for i in sorted(by_index)]
