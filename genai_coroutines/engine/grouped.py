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
which groups them as its API needs and yields their results as its groups end.

`run` gets a `GroupRun`: the batch's shared state, the journal (to record each group the
moment the API accepts it; `journaled` stops the batch when it cannot be written, as a
result that cannot be journaled does), each admitted item's journal digest, and `note`
to show the groups' state on the progress bar.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .batch import Admission, Admitted, BatchOptions, BatchRun, DriverCore
from .bookkeeping import Result
from .journal import Journal
from .runner import Source, _aiter

P = TypeVar("P")

QUEUED_RESULTS = 256
"""Results waiting for the consumer before the groups' downloads pause for it."""


@dataclass(slots=True)
class GroupRun:
    """What a grouped path's `run` shares with the driver."""

    batch: BatchRun
    journal: Journal | None
    digests: Mapping[int, str]
    """The journal digest of each admitted item until its result is recorded (empty
    without a journal)."""
    note: Callable[..., None]
    """`note(key=value, ...)`: shown after the progress bar's counts (None removes one)."""
    _journaled: Callable[[Callable[[Journal], object]], bool]

    def journaled(self, write: Callable[[Journal], object]) -> bool:
        """Run `write(journal)` (nothing without a journal); False, with the batch stopped,
        when the journal cannot take it."""
        return self._journaled(write)


class GroupedAdapter(Admission[P], Protocol[P]):
    """What a grouped path adds to the driver's admission (see the module docstring)."""

    def run(self, run: GroupRun, items: AsyncIterator[Admitted[P]]) -> AsyncIterator[Result]:
        """Consume the admitted items; yield each one's result exactly once, in any order.
        Per-item failures are results; an exception is a bug and ends the batch."""
        ...


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None


class GroupedDriver(DriverCore[P]):
    """One batch of a grouped adapter; `stream` runs it."""

    def __init__(self, adapter: GroupedAdapter[P], source: Source[Any], options: BatchOptions):
        super().__init__(adapter, source, options)
        self.grouped = adapter

    async def _results(self, run: BatchRun) -> AsyncIterator[Result]:
        out: asyncio.Queue[Result | _End] = asyncio.Queue(QUEUED_RESULTS)
        books = self.books
        group = GroupRun(run, books.journal, books.digests, books.progress.note, self._journaled)

        twins: set[asyncio.Task[None]] = set()

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
                    waiting = asyncio.ensure_future(twin(decided))
                    twins.add(waiting)
                    waiting.add_done_callback(twins.discard)
                else:
                    yield decided

        async def execute() -> None:
            error: BaseException | None = None
            try:
                async for result in self.grouped.run(group, admitted()):
                    await out.put(self._finish(result))
                if twins:
                    await asyncio.gather(*twins)
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
            for pending in (task, *twins):
                if not pending.done():
                    pending.cancel()
            await asyncio.gather(task, *twins, return_exceptions=True)

    def _journaled(self, write: Callable[[Journal], object]) -> bool:
        journal = self.books.journal
        if journal is None:
            return True
        return self._journal(lambda _index, _what: write(journal), -1, None)
