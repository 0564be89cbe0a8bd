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

One budget across batches, processes and machines: a `budget_name` (`SharedBudget`)
moves the spent total and the reservations into the limits store under that name
(`LimitStore.budget_reserve` / `budget_settle`: atomic, on the store's clock), so every
batch on the name, in this process (the memory store) or any process using the same Redis,
reserves against one total and the rule above holds for all of them together. Each batch
is one holder there, renewed every `SharedBudget.ttl / 3` seconds while it runs; one whose
process died is dropped after `ttl` and what it held is freed. The total is kept a week
after its last write (`store.BUDGET_KEEP_SECS`). With a name, the store's total is the
truth: results answered from the journal are not charged again (the run that paid them
settled them there already), so a rerun with the same budget sends nothing more and one
with a higher budget continues, whichever process runs it. A store lost mid-batch refuses
the rest (`budget_exceeded`): a shared budget cannot be counted in one process.

An item of several requests (a pipeline's document: its OCR job, then its extraction
requests) reserves each one as it is about to be sent (`hold`) and settles it with what it
cost (`spend`), the same rule request by request.

Amounts are in the price model's unit (US dollars for tokens, cents for pages);
`Budget` itself only adds them up.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .limits import budget_key
from .outcome import Failure, ItemEnd, Outcome
from .pricing import PriceModel
from .store import BudgetView, LimitStore, LimitStoreUnavailable

P = TypeVar("P")


def budget_needs(limit: float | None, name: str | None, parameter: str) -> None:
    """A budget's arguments, refused before anything is sent, each error naming its
    parameter: `limit` (`parameter`, a non-negative number or None) and `name` (a
    `budget_name` names the total of a budget: it needs one)."""
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise TypeError(f"{parameter} must be a number, not {type(limit).__name__}")
        if not math.isfinite(limit) or limit < 0:
            raise ValueError(f"{parameter} must be a non-negative number, got {limit!r}")
    if name is not None and limit is None:
        raise ValueError(f"budget_name needs {parameter}: the budget the name shares")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"budget_name must be a string, not {type(name).__name__}")
    if name is not None and not name.strip():
        raise ValueError("budget_name must not be empty")


@dataclass(eq=False)
class SharedBudget:
    """A budget's total in the limits store, under `name` (see the module docstring):
    this batch is one `holder` of reservations there."""

    store: LimitStore
    name: str
    unit: str
    """"usd" or "cents": part of the store key, so the two never add up."""
    ttl: float = 60.0
    """Seconds this batch's reservations outlive its last renewal (its process died)."""
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    _renewing: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"budget_name must be a string, not {type(self.name).__name__}")
        if not self.name.strip():
            raise ValueError("budget_name must not be empty")
        self.key = budget_key(self.name, self.unit)

    async def reserve(self, amount: float, limit: float, force: bool) -> BudgetView:
        """Hold `amount` for this batch if the name's total allows it (see `Budget`)."""
        if self._pending:  # settled first, so the store holds this batch's real figures
            await asyncio.gather(*list(self._pending))
        store, key = self.store, self.key
        view = await store.budget_reserve(key, self.holder, amount, limit, self.ttl, force)
        if view.granted and self._renewing is None:
            self._renewing = asyncio.create_task(self._renew())
        return view

    def settle(self, release: float, spend: float) -> None:
        """Written to the store in the background (an item's end is not awaited); `close`
        and the next `reserve` wait for it."""
        task = asyncio.get_running_loop().create_task(
            self.store.budget_settle(self.key, self.holder, release, spend, self.ttl)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.store.budget_settle(self.key, self.holder, 0.0, 0.0, self.ttl)

    async def close(self) -> None:
        """The batch ended: its settlements written, what it still holds freed."""
        if self._renewing is not None:
            self._renewing.cancel()
            self._renewing = None
        if self._pending:
            await asyncio.gather(*list(self._pending))
        await self.store.budget_settle(self.key, self.holder, 0.0, 0.0, 0.0)


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
    """What this batch spent and holds (a named budget's totals are the store's)."""
    stop: Failure | None = None
    """The `budget_exceeded` failure of the first item refused, which every later one gets
    too: it quotes the figures that stopped the batch. A later item's own figures could fit
    within the budget (a cheaper item, or once what was in flight settled lower), which
    would contradict its refusal."""
    refused: int = 0
    """Items ended `budget_exceeded`."""
    shared: SharedBudget | None = None
    """The name the total is kept under in the limits store (None: this batch's own)."""

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int | float):
            raise TypeError(f"a budget must be a number, not {type(self.limit).__name__}")
        if not math.isfinite(self.limit) or self.limit < 0:
            raise ValueError(f"a budget must be a non-negative number, got {self.limit!r}")

    async def reserve(self, prepared: P, *, paid: bool = False) -> float | Failure:
        """The estimate now held for this item, or the `budget_exceeded` failure that ends it.
        `paid`: the API accepted it earlier (it is polled, not sent), so it is admitted."""
        return await self.hold(self.estimate(prepared), paid=paid)

    async def hold(self, estimate: float, *, paid: bool = False) -> float | Failure:
        """`reserve` of an amount already estimated (an item of several requests reserves
        each one so, and `spend`s what it cost)."""
        estimate = max(0.0, float(estimate))
        if self.stop is not None and not paid:
            self.refused += 1
            return self.stop
        if self.shared is None:
            spent, in_flight = self.spent, self.in_flight
            granted = paid or spent + in_flight + estimate <= self.limit
        else:
            try:
                granted, spent, in_flight = await self.shared.reserve(estimate, self.limit, paid)
            except LimitStoreUnavailable as exc:
                if paid:
                    self.in_flight += estimate
                    return estimate
                self.stop = Failure(
                    f"not sent: the budget {self.shared.name!r} cannot be counted ({exc})"
                    "; resume once the store is back to continue",
                    "budget_exceeded",
                    retriable=False,
                )
                self.refused += 1
                return self.stop
        if granted:
            self.in_flight += estimate
            return estimate
        named = "" if self.shared is None else f" {self.shared.name!r}"
        everyone = "" if self.shared is None else " by every batch on it"
        self.stop = Failure(
            f"not sent: the budget{named} of {self.show(self.limit)} is reached (when sending "
            f"stopped: spent {self.show(spent)}, in flight {self.show(in_flight)}{everyone}, "
            f"the next request up to {self.show(estimate)}); raise it and resume to continue",
            "budget_exceeded",
            retriable=False,
        )
        self.refused += 1
        return self.stop

    @property
    def exhausted(self) -> bool:
        return self.stop is not None

    def settle(self, reserved: float, outcome: Outcome[Any]) -> None:
        """The item ended: its estimate is replaced by what it cost."""
        self.spend(reserved, self.pricing.cost(outcome))

    def spend(self, reserved: float, cost: float | None) -> None:
        """What `hold` reserved is replaced by `cost` (None: unknown, the estimate stays)."""
        self.in_flight = max(0.0, self.in_flight - reserved)
        spend = reserved if cost is None else cost
        self.spent += spend
        if self.shared is not None:
            self.shared.settle(reserved, spend)

    def release(self, reserved: float) -> None:
        """The item never ended (the batch was cancelled): its estimate is freed."""
        self.in_flight = max(0.0, self.in_flight - reserved)
        if self.shared is not None:
            self.shared.settle(reserved, 0.0)

    def charge(self, end: ItemEnd[Any]) -> None:
        """An item paid for earlier (answered from the journal); a twin's cost nothing.
        A named budget's store holds it already (see the module docstring)."""
        if end.duplicate_of is None and self.shared is None:
            self.spent += self.pricing.cost(end.outcome) or 0.0

    async def close(self) -> None:
        """The batch ended (however): a named budget's settlements are written and what
        this batch still holds there is freed."""
        if self.shared is not None:
            await self.shared.close()

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "spent": self.spent,
            "in_flight": self.in_flight,
            "exhausted": self.exhausted,
            "refused": self.refused,
            **({} if self.shared is None else {"name": self.shared.name}),
        }
