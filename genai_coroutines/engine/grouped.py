"""Grouped execution: items the API answers many at a time, behind the same driver.

`batch.Driver` runs each item on its own, waiting for its own answer. Some paths
cannot work that way: the OpenAI Batch API takes a file of up to 50,000 requests and
answers all of them when its batch ends, hours later, so items that each wait for their
own answer would all be held in memory at once, and nothing would say when the last
item of a file has arrived. `GroupedDriver` is the driver with only that middle
replaced. Every item is still admitted by the driver (`DriverCore._admit`: the batch
stop, `prepare`, the journal's replay of a finished item) and every result still goes
through it (journal, progress, summary, the `batch_start`/`batch_done` log lines,
cancellation); the admitted items are handed, in input order, to the adapter's `run`,
which groups them as its API needs and emits their results as its groups end.

`run` gets a `GroupRun`: the batch's shared state (`BatchRun`: its session, stop, journal
to record each group the moment the API accepts it, `note` for the progress bar), each
admitted item's journal digest, and `emit`, which hands an item's end (its `ItemEnd`:
index, typed outcome, start) to the driver. The
driver owns the one queue of results between the groups and the consumer, so a path
keeps none of its own: `emit` waits while `QUEUED_RESULTS` results wait for the
consumer, and the groups' downloads pause with it. `Tasks` runs a path's concurrent
work (its files, its batches) as the driver runs its own: the first bug ends them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .batch import Admission, Admitted, BatchOptions, BatchRun, DriverCore, Ended
from .outcome import ItemEnd
from .runner import Source, _aiter

P = TypeVar("P")

QUEUED_RESULTS = 256
"""Results waiting for the consumer before the groups' downloads pause for it."""


@dataclass(slots=True)
class GroupRun:
    """What a grouped path's `run` shares with the driver."""

    batch: BatchRun
    digests: Mapping[int, str]
    """The journal digest of each admitted item until its result is recorded (empty
    without a journal)."""
    emit: Callable[[ItemEnd[Any]], Awaitable[None]]
    """Hand an item's end to the driver (rendering, journal, budget, dedupe, then the
    consumer); waits while the consumer is `QUEUED_RESULTS` results behind."""


class GroupedAdapter(Admission[P], Protocol[P]):
    """What a grouped path adds to the driver's admission (see the module docstring)."""

    async def run(self, run: GroupRun, items: AsyncIterator[Admitted[P]]) -> None:
        """Consume the admitted items and `run.emit` each one's end exactly once, in any
        order; return once all are emitted. Per-item failures are outcomes; an exception is
        a bug and ends the batch."""
        ...


class Tasks:
    """Coroutines running side by side in one grouped run: `spawn` starts one (from any of
    them, at any time); `join` returns once all have ended, or raises the first exception
    one of them raised (a bug: the batch ends with it); `cancel` ends those still running
    (on the way out)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self._ended = asyncio.Event()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._end)

    def _end(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None and self._error is None:
            self._error = error
        self._ended.set()

    async def join(self) -> None:
        while self._running and self._error is None:
            self._ended.clear()
            await self._ended.wait()
        if self._error is not None:
            raise self._error

    async def cancel(self) -> None:
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None


class GroupedDriver(DriverCore[P]):
    """One batch of a grouped adapter; `stream` runs it."""

    def __init__(self, adapter: GroupedAdapter[P], source: Source[Any], options: BatchOptions):
        super().__init__(adapter, source, options)
        self.grouped = adapter

    async def _results(self, run: BatchRun) -> AsyncIterator[Ended]:
        out: asyncio.Queue[Ended | _End] = asyncio.Queue(QUEUED_RESULTS)
        twins = Tasks()

        async def emit(end: ItemEnd[Any]) -> None:
            await out.put(self._finish(end))

        async def twin(item: Admitted[P]) -> None:
            await out.put(await self._twin_of(item))

        async def admitted() -> AsyncIterator[Admitted[P]]:
            index = 0
            async for item in _aiter(self.source):
                decided = await self._admit(index, item)
                index += 1
                if not isinstance(decided, Admitted):  # stopped, unsendable, from the journal
                    await out.put(decided)
                elif decided.twin is not None:  # dedupe: its identical item answers it
                    twins.spawn(twin(decided))
                else:
                    yield decided

        async def execute() -> None:
            error: BaseException | None = None
            try:
                await self.grouped.run(GroupRun(run, self.books.digests, emit), admitted())
                await twins.join()
            except Exception as exc:  # a bug: the consumer raises it
                error = exc
            await out.put(_End(error))

        task = asyncio.ensure_future(execute())
        try:
            while True:
                got = await out.get()
                if isinstance(got, _End):
                    if got.error is not None:
                        raise got.error
                    return
                yield got
        finally:
            task.cancel()
            await twins.cancel()
            await asyncio.gather(task, return_exceptions=True)
