"""A live progress bar for long batches (tqdm), fed the same results as the summary."""

from __future__ import annotations

import asyncio
from typing import Any

from tqdm import tqdm

from .outcome import ItemEnd
from .summary import Summary


class Progress:
    """Done, failed and retrying counts, plus tokens (Responses) or pages and cents (Datalab).

    Adapters sleep their backoff waits through `wait`, so the bar shows how many items
    are waiting to try again right now.
    """

    def __init__(self, summary: Summary, *, total: int | None, enabled: bool, unit: str) -> None:
        self.summary = summary
        self.retrying = 0
        self.notes: dict[str, Any] = {}
        """What an execution path adds to the counts (the Batch API: each batch's state)."""
        self._bar = tqdm(total=total, disable=not enabled, unit=unit, dynamic_ncols=True)

    def note(self, **fields: Any) -> None:
        """Show `fields` after the counts (a None value removes one), redrawing the bar."""
        for key, value in fields.items():
            if value is None:
                self.notes.pop(key, None)
            else:
                self.notes[key] = value
        if not self._bar.disable:
            self._bar.set_postfix(self._postfix(), refresh=True)

    async def wait(self, seconds: float) -> None:
        """A backoff sleep, counted as "retrying" while it lasts."""
        self.retrying += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.retrying -= 1

    def add(self, end: ItemEnd[Any]) -> None:
        self.summary.add(end)
        if self._bar.disable:
            return
        self._bar.set_postfix(self._postfix(), refresh=False)
        self._bar.update(1)

    def _postfix(self) -> dict[str, Any]:
        s = self.summary
        postfix: dict[str, Any] = {"ok": s.succeeded, "failed": s.failed, "retrying": self.retrying}
        if s.input_tokens or s.output_tokens:
            postfix["tokens"] = s.input_tokens + s.output_tokens
        if s.pages or s.cost_cents:
            postfix["pages"] = s.pages
            postfix["cents"] = f"{s.cost_cents:g}"
        return {**postfix, **self.notes}

    def close(self) -> None:
        self.summary.finish()
        self._bar.close()
