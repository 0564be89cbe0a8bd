"""A budget that stops the batch: nothing more is sent once the next request could pass it.

Before an item is sent, the driver asks `Budget.reserve`: the item's estimated cost
(the adapter's `estimate`: an OpenAI request's input estimate plus its output allowance
at the tier in force, a document's pages at the price per page) is admitted only if what
has been spent, plus the estimates of what is in flight, plus it, stays within `limit`.
The first item refused exhausts the budget: it and every later item end as
`budget_exceeded` errors without being sent, a cheaper one included (a batch told to
stop stops; it does not trickle on with the small items). When an item ends, `settle`
replaces its estimate with what it really cost, as the adapter's price model says
(`engine.pricing`: the answer's usage priced the same way, or the provider's own figure).

So what is spent never passes the budget as long as each answer costs no more than
its estimate (true when `max_output_tokens` is set, since the input estimate is
generous), and sending stops within one request's estimate of it (a few estimates
when several are in flight). A budget counts the whole batch across reruns: results
answered from the journal were paid for by an earlier run and are charged as they are
replayed, so resuming with the same budget sends nothing more, and raising it
continues the items that were refused (a failure is never reused from a journal).
Work the API had already accepted (a journaled background response or Datalab job,
polled on resume) is admitted whatever the budget, being paid for already.

Amounts are in the price model's unit (US dollars for tokens, cents for pages);
`Budget` itself only adds them up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .outcome import Failure, ItemEnd, Outcome
from .pricing import PriceModel

P = TypeVar("P")


@dataclass
class Budget(Generic[P]):
    """The ceiling of one batch (see the module docstring)."""

    limit: float
    estimate: Callable[[P], float]
    """The most an item may cost, before it is sent."""
    pricing: PriceModel
    """What a finished item cost (`PriceModel.cost`, in the budget's unit): the adapter's."""
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

    def settle(self, reserved: float, outcome: Outcome[Any]) -> None:
        """The item ended: its estimate is replaced by what it cost."""
        self.in_flight = max(0.0, self.in_flight - reserved)
        cost = self.pricing.cost(outcome)
        self.spent += reserved if cost is None else cost

    def release(self, reserved: float) -> None:
        """The item never ended (the batch was cancelled): its estimate is freed."""
        self.in_flight = max(0.0, self.in_flight - reserved)

    def charge(self, end: ItemEnd[Any]) -> None:
        """An item paid for earlier (answered from the journal); a twin's cost nothing."""
        if end.duplicate_of is None:
            self.spent += self.pricing.cost(end.outcome) or 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "spent": self.spent,
            "in_flight": self.in_flight,
            "exhausted": self.exhausted,
            "refused": self.refused,
        }
