"""What a Responses answer costs: OpenAI's list prices by model, at the tier that served it,
cached input at its own rate.

`TokenPrices` is the adapter's `engine.pricing.PriceModel`: the summary and the budget
call it and hold no table. The prices are an estimate the caller can override
(`BatchSummary(prices=...)`): providers change prices, and the table does not know your
discounts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engine.budget import Budget
from ..engine.outcome import Answered, Bill, Outcome
from ..engine.pricing import Charges
from ..engine.summary import Summary

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input: float
    cached_input: float
    output: float


PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "o1": Price(15.00, 7.50, 60.00),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
}
"""List prices (standard tier) used for the estimate; dated snapshots map to their family."""

DISCOUNTED_TIERS = {"batch": 0.5, "flex": 0.5}
"""Share of the standard price a result billed at this tier costs: the Batch API charges
half, and flex is billed at Batch API rates (on the models that offer it). A result's
`service_tier` says which tier served it: a flex request that fell back to standard is
priced at standard."""

DEFAULT_OUTPUT_ALLOWANCE = 4096
"""Output tokens a request is estimated at by the budget when it sets no
`max_output_tokens` (then an answer may cost more than its estimate, and the budget is a
softer bound)."""


def tier_share(tier: object) -> float:
    """Share of the standard price an answer served at `tier` costs (`DISCOUNTED_TIERS`)."""
    return DISCOUNTED_TIERS.get(tier, 1.0) if isinstance(tier, str) else 1.0


def usage_tokens(usage: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(input, cached input, output, reasoning) tokens of one answer's `usage`. (On every
    result's path: a count that is already an int is taken as it is, without `int()`.)"""
    get = usage.get
    details, more = get("input_tokens_details"), get("output_tokens_details")
    inputs, outputs = get("input_tokens"), get("output_tokens")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    reasoning = more.get("reasoning_tokens") if isinstance(more, dict) else 0
    return (
        inputs if type(inputs) is int else int(inputs or 0),
        cached if type(cached) is int else int(cached or 0),
        outputs if type(outputs) is int else int(outputs or 0),
        reasoning if type(reasoning) is int else int(reasoning or 0),
    )


def bill_of(model: str, usage: Mapping[str, Any] | None, tier: str | None) -> Bill:
    """What an answer of `model` served at `tier` with this `usage` was billed."""
    if not usage:
        return Bill(model, tier)
    inputs, cached, outputs, reasoning = usage_tokens(usage)
    return Bill(model, tier, inputs, cached, outputs, reasoning, True)


def token_cost(inputs: int, cached: int, outputs: int, price: Price, share: float) -> float:
    """US dollars of these tokens (`cached` among the `inputs`) at `price` times `share`:
    cached input at its own rate, reasoning tokens within the output tokens (as OpenAI
    bills them)."""
    return (
        share
        * ((inputs - cached) * price.input + cached * price.cached_input + outputs * price.output)
        / 1_000_000
    )


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`, matching dated snapshots ("gpt-4o-2024-08-06") to their family."""
    if model in prices:
        return prices[model]
    family = max((name for name in prices if model.startswith(name + "-")), key=len, default=None)
    return prices[family] if family else None


@dataclass(eq=False, slots=True)
class TokenPrices:
    """The Responses price model: each answer's `usage` at `table`'s price for its `model`
    (`model` here when it names none), times its tier's share."""

    table: Mapping[str, Price] = field(default_factory=lambda: PRICES)
    model: str = ""

    def read(self, outcome: Outcome[Any], charges: Charges) -> None:
        bill = outcome.bill
        if bill is None:
            return
        tier = bill.tier
        share = 1.0
        if tier is not None:
            tiers = charges.tiers
            tiers[tier] = tiers.get(tier, 0) + 1
            share = DISCOUNTED_TIERS.get(tier, 1.0)
        if bill.tokens:
            key = (self, bill.model or self.model, share)
            billed = charges.billed.get(key)
            if billed is None:
                billed = charges.billed[key] = [0, 0, 0, 0]
            billed[0] += bill.input_tokens
            billed[1] += bill.cached_tokens
            billed[2] += bill.output_tokens
            billed[3] += bill.reasoning_tokens

    def usd(self, model: str, share: float, inputs: int, cached: int, outputs: int) -> float | None:
        price = price_for(model, self.table)
        return None if price is None else token_cost(inputs, cached, outputs, price, share)

    def cost(self, outcome: Outcome[Any]) -> float | None:
        """Dollars of a success's usage at the tier its response reports (at `model`'s price
        when its own model has none); a failure with an HTTP status costs nothing (a refused
        request is not billed), one without (a timeout, a reset: the answer may have been
        produced and billed) is unknown."""
        if not isinstance(outcome, Answered):
            return None if outcome.failure.status is None and outcome.attempts else 0.0
        bill = outcome.bill
        if bill is None or not bill.tokens:
            return None
        table = self.table
        price = price_for(bill.model or self.model, table) or price_for(self.model, table)
        if price is None:
            return None
        return token_cost(
            bill.input_tokens,
            bill.cached_tokens,
            bill.output_tokens,
            price,
            tier_share(bill.tier),
        )


def table_of(summary: Summary) -> Mapping[str, Price]:
    """The token prices `summary` is kept at (the list prices when it has none), so that a
    budget spends by the same figures the summary reports."""
    return next((m.table for m in summary.pricing if isinstance(m, TokenPrices)), PRICES)


def token_budget(
    limit_usd: float,
    *,
    model: str,
    prices: Mapping[str, Price],
    share: float,
    output_allowance: int,
    input_tokens: Callable[[P], int],
) -> Budget[P]:
    """A budget in US dollars for requests of `model`.

    An item is estimated at `input_tokens(prepared)` plus `output_allowance` output tokens
    at the standard price times `share` (the tier in force: 0.5 for flex without fallback
    or the Batch API), and settled by `TokenPrices.cost`.
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

    return Budget(limit_usd, estimate, TokenPrices(prices, model))
