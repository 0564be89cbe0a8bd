"""A budget that stops the batch: nothing more is sent once the next request could pass it.

Before an item is sent, the driver asks `Budget.reserve`: the item's estimated cost
(for OpenAI its input estimate plus its output allowance, `max_output_tokens`, priced
by the summary's table at the tier in force; for Datalab its pages at the price per
page) is admitted only if what has been spent, plus the estimates of what is in
flight, plus it, stays within `limit`. The first item refused exhausts the budget:
it and every later item end as `budget_exceeded` errors without being sent, a cheaper
one included (a batch told to stop stops; it does not trickle on with the small
items). When an item ends, `settle` replaces its estimate with what it really cost:
the usage of its answer priced the same way, or the provider's own figure (Datalab's
`cost_breakdown`).

So what is spent never passes the budget as long as each answer costs no more than
its estimate (true when `max_output_tokens` is set, since the input estimate is
generous), and sending stops within one request's estimate of it (a few estimates
when several are in flight). A budget counts the whole batch across reruns: results
answered from the journal were paid for by an earlier run and are charged as they are
replayed, so resuming with the same budget sends nothing more, and raising it
continues the items that were refused (a failure is never reused from a journal).
Work the API had already accepted (a journaled background response or Datalab job,
polled on resume) is admitted whatever the budget, being paid for already.

Amounts are in the caller's unit (US dollars for OpenAI, cents for Datalab); `Budget`
itself only adds them up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .bookkeeping import Result
from .outcome import Failure
from .summary import Price, price_for, tier_share, usage_cost

P = TypeVar("P")

DATALAB_CENTS_PER_PAGE = {"fast": 0.4, "balanced": 0.4, "accurate": 0.6}
"""Datalab's list price per page by `mode`, in cents, for `max_cost_cents` (Datalab
bills per page, "rounded up to the nearest cent", and publishes its prices on its pricing
page, which changes: pass `cents_per_page` for yours). The real `cost_breakdown` of each
result settles the budget, so the table only decides when to stop sending."""

DEFAULT_OUTPUT_ALLOWANCE = 4096
"""Output tokens an OpenAI request is estimated at when it sets no `max_output_tokens`
(then an answer may cost more than its estimate, and the budget is a softer bound)."""


@dataclass
class Budget(Generic[P]):
    """The ceiling of one batch (see the module docstring)."""

    limit: float
    estimate: Callable[[P], float]
    """The most an item may cost, before it is sent."""
    actual: Callable[[Result], float | None]
    """What a finished item cost; None when unknown (its estimate is kept as spent)."""
    show: Callable[[float], str] = field(default=lambda amount: f"${amount:.6g}")
    spent: float = 0.0
    in_flight: float = 0.0
    stop: Failure | None = None
    """The `budget_exceeded` failure of the first item refused, which every later one gets
    too: it quotes the figures that stopped the batch. A later item's own figures could fit
    within the budget (a cheaper item, or once what was in flight settled lower), which
    would contradict its refusal."""
    refused: int = 0
    """Items ended `budget_exceeded`."""

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int | float):
            raise TypeError(f"a budget must be a number, not {type(self.limit).__name__}")
        if not math.isfinite(self.limit) or self.limit < 0:
            raise ValueError(f"a budget must be a non-negative number, got {self.limit!r}")

    def reserve(self, prepared: P, *, paid: bool = False) -> float | Failure:
        """The estimate now held for this item, or the `budget_exceeded` failure that ends it.
        `paid`: the API accepted it earlier (it is polled, not sent), so it is admitted."""
        estimate = max(0.0, float(self.estimate(prepared)))
        if not paid:
            if self.stop is None and self.spent + self.in_flight + estimate > self.limit:
                self.stop = Failure(
                    f"not sent: the budget of {self.show(self.limit)} is reached (when sending "
                    f"stopped: spent {self.show(self.spent)}, in flight "
                    f"{self.show(self.in_flight)}, the next request up to {self.show(estimate)})"
                    "; raise it and resume to continue",
                    "budget_exceeded",
                    retriable=False,
                )
            if self.stop is not None:
                self.refused += 1
                return self.stop
        self.in_flight += estimate
        return estimate

    @property
    def exhausted(self) -> bool:
        return self.stop is not None

    def settle(self, reserved: float, result: Result) -> None:
        """The item ended: its estimate is replaced by what it cost."""
        self.in_flight = max(0.0, self.in_flight - reserved)
        cost = self.actual(result)
        self.spent += reserved if cost is None else cost

    def release(self, reserved: float) -> None:
        """The item never ended (the batch was cancelled): its estimate is freed."""
        self.in_flight = max(0.0, self.in_flight - reserved)

    def charge(self, result: Result) -> None:
        """A result paid for earlier (answered from the journal); a twin's cost nothing."""
        if result.get("duplicate_of") is None:
            self.spent += self.actual(result) or 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "spent": self.spent,
            "in_flight": self.in_flight,
            "exhausted": self.exhausted,
            "refused": self.refused,
        }


def token_budget(
    limit_usd: float,
    *,
    model: str,
    prices: Mapping[str, Price],
    share: float,
    output_allowance: int,
    input_tokens: Callable[[P], int],
) -> Budget[P]:
    """A budget in US dollars for OpenAI requests of `model`.

    An item is estimated at `input_tokens(prepared)` plus `output_allowance` output tokens
    at the standard price times `share` (the tier in force: 0.5 for flex without fallback
    or the Batch API). A finished item costs its usage at the tier its response reports;
    a failure with an HTTP status costs nothing (a refused request is not billed), one
    without (a timeout, a reset: the answer may have been produced and billed) keeps its
    estimate.
    """
    price = price_for(model, prices)
    if price is None:
        raise ValueError(
            f"max_cost_usd needs a price for model {model!r}: pass a BatchSummary whose "
            "prices name it (summary=BatchSummary(prices={...}))"
        )
    known = price

    def estimate(prepared: P) -> float:
        tokens_in = input_tokens(prepared)
        return share * (tokens_in * known.input + output_allowance * known.output) / 1_000_000

    def actual(result: Result) -> float | None:
        usage = result.get("usage")
        if result.get("success"):
            if not isinstance(usage, Mapping):
                return None
            own = price_for(str(result.get("model") or model), prices) or known
            return usage_cost(usage, own, tier_share(result.get("service_tier")))
        if result.get("status") is None and result.get("attempts"):
            return None  # sent, and no answer said it was refused: it may have been billed
        return 0.0

    return Budget(limit_usd, estimate, actual)


def page_budget(
    limit_cents: float, *, cents_per_page: float, pages: Callable[[P], int]
) -> Budget[P]:
    """A budget in cents for Datalab jobs: estimated at their pages times `cents_per_page`,
    settled by the `cost_breakdown` Datalab reports (its final cost, else its list cost);
    a document that failed costs nothing."""
    if isinstance(cents_per_page, bool) or not isinstance(cents_per_page, int | float):
        raise TypeError("cents_per_page must be a number")
    if not math.isfinite(cents_per_page) or cents_per_page < 0:
        raise ValueError(f"cents_per_page must be a non-negative number, got {cents_per_page!r}")

    def estimate(prepared: P) -> float:
        return pages(prepared) * cents_per_page

    def actual(result: Result) -> float | None:
        if not result.get("success"):
            return 0.0
        cost = result.get("cost_breakdown")
        if isinstance(cost, Mapping):
            cents = cost.get("final_cost_cents", cost.get("list_cost_cents"))
            if isinstance(cents, int | float) and not isinstance(cents, bool):
                return float(cents)
        return None  # no figure from Datalab: the estimate stands

    return Budget(limit_cents, estimate, actual, show=lambda cents: f"{cents:.6g} cents")
