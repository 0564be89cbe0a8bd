"""Grouped stages' own work: what a group (`engine.batch.Group`: the Batch API's files and
batches) runs beside the driver's items.

The driver hands a group its lines (`Group.add`) and takes each line's outcome back by its
`StageKey` (`GroupRun.emit`); between the two, the group runs its own concurrent work
(cutting files, submitting, polling, reading) in `Tasks`, whose first bug ends the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Tasks:
    """Coroutines running side by side in one group: `spawn` starts one (from any of them, at
    any time); an exception one of them raises (a bug) goes to `on_error` (the
    driver's `GroupRun.fail`: the batch ends with it); `cancel` ends those still running
    (on the way out)."""

    def __init__(self, on_error: Callable[[BaseException], None]) -> None:
        self._running: set[asyncio.Task[None]] = set()
        self._on_error = on_error

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._end)

    def _end(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._on_error(error)

    async def cancel(self) -> None:
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
