"""What a Datalab job costs: the cents Datalab reports in each result's `cost_breakdown`,
and its list price per page, by what the job does (parse, extract, segment), to estimate a
document before it is sent.

`DatalabPrices` is the adapter's `engine.pricing.PriceModel`: the summary and the budget
call it and hold no price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..engine.budget import Budget
from ..engine.outcome import Answered, Outcome
from ..engine.pricing import Charges

if TYPE_CHECKING:
    from .config import DocumentConfig

P = TypeVar("P")

DATALAB_CENTS_PER_PAGE = {"fast": 0.4, "balanced": 0.4, "accurate": 0.6}
"""Datalab's list price per page for parsing (OCR) by `mode`, in cents, for `max_cost_cents`
(Datalab bills per page, "rounded up to the nearest cent", and publishes its prices on its
pricing page, which changes: pass `cents_per_page` for yours). The real `cost_breakdown` of
each result settles the budget, so the prices only decide when to stop sending."""

EXTRACT_CENTS_PER_PAGE = 0.6
"""Schema extraction, per page, on top of the parse: a third-party summary of Datalab's
pricing gives $6 per 1,000 pages for "fast" extraction (not on Datalab's own pages)."""

SEGMENT_CENTS_PER_PAGE = 0.2
"""Segmentation, per page, on top of the parse: no source prices it; a guess below
extraction, as the emulator bills it."""


def list_cents_per_page(config: DocumentConfig) -> float:
    """What a page of this config's jobs lists at: the parse (none for a job reading a
    `checkpoint_id`, which "skips re-parsing"), plus extraction with a schema (`/extract`,
    or `/marker`'s `page_schema`), plus segmentation with a `segmentation_schema`."""
    cents = DATALAB_CENTS_PER_PAGE[config.mode] if config.needs_file else 0.0
    if config.endpoint == "extract" or config.page_schema is not None:
        cents += EXTRACT_CENTS_PER_PAGE
    if config.segmentation_schema is not None:
        cents += SEGMENT_CENTS_PER_PAGE
    return cents


def cents_of(cost: object) -> float | None:
    """Datalab's figure in a `cost_breakdown`: its final cost, else its list cost."""
    if not isinstance(cost, Mapping):
        return None
    cents = cost.get("final_cost_cents", cost.get("list_cost_cents"))
    return float(cents) if isinstance(cents, int | float) and not isinstance(cents, bool) else None


@dataclass(eq=False, slots=True)
class DatalabPrices:
    """The Datalab price model: pages and cents as each outcome's `Bill` reports them."""

    def read(self, outcome: Outcome[Any], charges: Charges) -> None:
        bill = outcome.bill
        if bill is None:
            return
        if bill.pages:
            charges.pages += bill.pages
        if bill.cents is not None:
            charges.cost_cents += bill.cents

    def cost(self, outcome: Outcome[Any]) -> float | None:
        """Cents of a success's `cost_breakdown` (None when it has none: the estimate
        stands); a document that failed costs nothing."""
        if not isinstance(outcome, Answered):
            return 0.0
        return None if outcome.bill is None else outcome.bill.cents


def page_budget(
    limit_cents: float, *, cents_per_page: float, pages: Callable[[P], int]
) -> Budget[P]:
    """A budget in cents for Datalab jobs: estimated at their pages times `cents_per_page`,
    settled by `DatalabPrices.cost`."""
    if isinstance(cents_per_page, bool) or not isinstance(cents_per_page, int | float):
        raise TypeError("cents_per_page must be a number")
    if not math.isfinite(cents_per_page) or cents_per_page < 0:
        raise ValueError(f"cents_per_page must be a non-negative number, got {cents_per_page!r}")

    def estimate(prepared: P) -> float:
        return pages(prepared) * cents_per_page

    return Budget(limit_cents, estimate, DatalabPrices(), show=lambda cents: f"{cents:.6g} cents")
