"""What a batch cost and how it went: counts, retries, 429s, tokens, dollars, cents.

`BatchSummary` is fed every result dict as it finishes (in any order), so it works
the same for a list returned at the end and for a stream written to disk, and holds
only running totals. Token prices are an estimate from a table the caller can
override (`prices={"my-model": Price(...)}`): providers change prices, the table
does not know your discounts, and the Datalab figure (`cost_breakdown`, in cents) is
the provider's own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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


def usage_cost(usage: Mapping[str, Any], price: Price, share: float = 1.0) -> float:
    """US dollars of one answer's `usage` at `price` times `share`: cached input at its
    own rate, reasoning tokens within the output tokens (as OpenAI bills them)."""
    inputs, cached, outputs, _ = usage_tokens(usage)
    return token_cost(inputs, cached, outputs, price, share)


def token_cost(inputs: int, cached: int, outputs: int, price: Price, share: float) -> float:
    """US dollars of these tokens (`cached` among the `inputs`) at `price` times `share`."""
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


@dataclass
class BatchSummary:
    model: str = ""
    """Model priced when a result does not name its own."""
    prices: Mapping[str, Price] = field(default_factory=lambda: PRICES)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0
    reused: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    """Results counted by the `service_tier` that served them (when they say)."""
    pages: int = 0
    cost_cents: float = 0.0
    duplicates: int = 0
    """Results given a twin's answer (`dedupe`): counted, but neither priced nor tiered."""
    _billed: dict[tuple[str, float], list[int]] = field(
        default_factory=dict, init=False, repr=False
    )
    """[input, cached input, output, reasoning] tokens by (model, tier share): the token
    counts and what `cost_usd` prices. Cost is linear in tokens, so an item adds four
    integers and the pricing happens once, when the cost is read."""

    def add(self, result: Mapping[str, Any]) -> None:
        """Count one finished item (a Responses or a Documents result dict)."""
        get = result.get
        self.total += 1
        if get("success"):
            self.succeeded += 1
        else:
            self.failed += 1
        attempts = get("attempts")
        if attempts and attempts != 1:
            self.retries += int(attempts) - 1
        rate_limited = get("rate_limited")
        if rate_limited:
            self.rate_limited += int(rate_limited)
        if get("from_journal"):
            self.reused += 1
        if get("duplicate_of") is not None:
            self.duplicates += 1
            return  # a twin of an item sent once (`dedupe`): its tokens are that item's
        tier = get("service_tier")
        share = 1.0
        if isinstance(tier, str):
            tiers = self.tiers
            tiers[tier] = tiers.get(tier, 0) + 1
            share = DISCOUNTED_TIERS.get(tier, 1.0)
        usage = get("usage")
        if usage:
            model = get("model") or self.model
            key = (model if isinstance(model, str) else str(model), share)
            billed = self._billed.get(key)
            if billed is None:
                billed = self._billed[key] = [0, 0, 0, 0]
            inputs, cached, outputs, reasoning = usage_tokens(usage)
            billed[0] += inputs
            billed[1] += cached
            billed[2] += outputs
            billed[3] += reasoning
        pages = get("page_count")
        if pages:
            self.pages += int(pages)
        cost = get("cost_breakdown")
        if cost is not None and isinstance(cost, Mapping):  # an ABC check: only when present
            cents = cost.get("final_cost_cents", cost.get("list_cost_cents"))
            if isinstance(cents, int | float):
                self.cost_cents += cents

    def _tokens(self, kind: int) -> int:
        return sum(billed[kind] for billed in self._billed.values())

    @property
    def input_tokens(self) -> int:
        return self._tokens(0)

    @property
    def cached_tokens(self) -> int:
        return self._tokens(1)

    @property
    def output_tokens(self) -> int:
        return self._tokens(2)

    @property
    def reasoning_tokens(self) -> int:
        return self._tokens(3)

    @property
    def cost_usd(self) -> float:
        """Estimated US dollars of the tokens counted, at `prices`."""
        return sum(
            token_cost(inputs, cached, outputs, price, share)
            for (model, share), (inputs, cached, outputs, _) in self._billed.items()
            if (price := price_for(model, self.prices)) is not None
        )

    @property
    def unpriced_models(self) -> set[str]:
        """Models of counted tokens that `prices` does not name (their tokens cost 0 here)."""
        return {
            model for model, _ in self._billed if model and price_for(model, self.prices) is None
        }

    def finish(self) -> BatchSummary:
        self.finished = time.monotonic()
        return self

    @property
    def wall_seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "reused_from_journal": self.reused,
            "wall_seconds": round(self.wall_seconds, 3),
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated_cost_usd": round(self.cost_usd, 6),
            "unpriced_models": sorted(self.unpriced_models),
            "service_tiers": dict(self.tiers),
            "pages": self.pages,
            "cost_cents": self.cost_cents,
            "duplicates": self.duplicates,
        }

    def describe(self) -> str:
        """A short human-readable report for the end of a batch."""
        lines = [
            f"items: {self.total} ({self.succeeded} ok, {self.failed} failed"
            + (f", {self.reused} from journal" if self.reused else "")
            + (f", {self.duplicates} duplicates sent once" if self.duplicates else "")
            + f")  retries: {self.retries}  429s: {self.rate_limited}"
            + f"  wall: {self.wall_seconds:.2f}s"
        ]
        if self.input_tokens or self.output_tokens:
            lines.append(
                f"tokens: {self.input_tokens} in ({self.cached_tokens} cached), "
                f"{self.output_tokens} out ({self.reasoning_tokens} reasoning)  "
                f"estimated cost: ${self.cost_usd:.4f}"
            )
        if self.pages or self.cost_cents:
            lines.append(f"pages: {self.pages}  Datalab cost: {self.cost_cents:g} cents")
        return "\n".join(lines)
