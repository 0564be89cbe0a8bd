"""The extraction stage's slot: the pipeline bounds the extraction requests it sends with
its own semaphore, and a background extraction being polled leaves that slot as it leaves
its driver slot (`runner.Slots.wait`), so at extraction concurrency 1 the next document's
request is POSTed during the poll. (The OCR keeps its slot through the poll: it bounds the
documents at Datalab at once.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..engine import ItemRun


class StageSlot:
    """One item's hold on a stage's semaphore, left for good once it waits on the provider:
    like its driver slot, the item finishes without it rather than queue for it again."""

    __slots__ = ("semaphore", "held")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = False

    async def __aenter__(self) -> StageSlot:
        await self.semaphore.acquire()
        self.held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.leave()

    def leave(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


@dataclass(slots=True)
class StageRun(ItemRun):
    """An item's run of one stage: its waits leave the stage's slot and the driver's."""

    slot: StageSlot | None = None

    @asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        async with ItemRun.waiting(self):
            if self.slot is not None:
                self.slot.leave()
            yield
