"""What a batch cost and how it went: counts, retries, 429s, and what its answers were billed.

`Summary` is fed every item's end (`ItemEnd`: its typed outcome) as it finishes (in any
order), so it works the same for a list returned at the end and for a stream written to
disk, and holds only running totals. It knows no price: its price models
(`engine.pricing`, one per API, given by the adapter or the caller) read what each
outcome was billed into its `Charges` and price the tokens when the cost is read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .logs import log_event
from .outcome import Answered, ItemEnd
from .pricing import Charges, PriceModel

REPORTED = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
"""The token figures a provider reports, in `Summary.reported`'s order."""


@dataclass
class Summary(Charges):
    """The totals of one batch, or of several sharing it (see the module docstring)."""

    pricing: tuple[PriceModel, ...] = ()
    """What reads each result's charges (none: items are counted, not what they cost)."""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    rate_limited: int = 0
    reused: int = 0
    duplicates: int = 0
    """Results given a twin's answer (`dedupe`): counted, but not charged."""
    reported: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """The provider's own token figures, in `REPORTED`'s order (see the module docstring)."""
    reported_cents: float = 0.0
    """The cents of the providers' `cost_breakdown`s, as they reported them."""
    unreported: int = 0
    """Groups whose provider reported no usage: the figures cannot be checked then."""
    warned: bool = field(default=False, repr=False)

    def add(self, end: ItemEnd[Any]) -> None:
        """Count one finished item, and have each price model read its charges."""
        outcome = end.outcome
        self.total += 1
        if isinstance(outcome, Answered):
            self.succeeded += 1
        else:
            self.failed += 1
        attempts, rate_limited = outcome.attempts, outcome.rate_limited
        if attempts > 1:
            self.retries += attempts - 1
        if rate_limited:
            self.rate_limited += rate_limited
        journaled = end.origin == "journal"
        if journaled:
            self.reused += 1
        if end.duplicate_of is not None:
            self.duplicates += 1
            return  # a twin of an item sent once (`dedupe`): its charges are that item's
        for model in self.pricing:
            model.read(outcome, self)
        bill = outcome.bill
        if bill is None:
            return
        ids = outcome.ids
        if journaled or ids is None or ids.group is None:  # else: `report_group`
            reported = self.reported
            reported[0] += bill.input_tokens
            reported[1] += bill.cached_tokens
            reported[2] += bill.output_tokens
            reported[3] += bill.reasoning_tokens
        cents = bill.cents
        if cents:  # a group reports tokens, never cents
            self.reported_cents += cents

    def report_group(self, usage: tuple[int, int, int, int] | None) -> None:
        """What the provider reports a group it answered (a Batch API batch's `usage`) used:
        (input, cached, output, reasoning) tokens, None when it reports nothing."""
        if usage is None:
            self.unreported += 1
            return
        for kind, tokens in enumerate(usage):
            self.reported[kind] += tokens

    def differences(self) -> dict[str, tuple[float, float]]:
        """(our sum, the provider's) of each figure where they differ; none when nothing
        prices this summary or a group reported no usage (nothing to check against)."""
        if not self.pricing or self.unreported:
            return {}
        ours = (self.input_tokens, self.cached_tokens, self.output_tokens, self.reasoning_tokens)
        found: dict[str, tuple[float, float]] = {
            name: (mine, theirs)
            for name, mine, theirs in zip(REPORTED, ours, self.reported, strict=True)
            if mine != theirs
        }
        if round(self.cost_cents, 6) != round(self.reported_cents, 6):
            found["cost_cents"] = (self.cost_cents, self.reported_cents)
        return found

    def check_reported(self, logger: logging.Logger) -> None:
        """Log one warning (once per summary) naming each figure where our sums and the
        provider's differ."""
        differences = self.differences()
        if differences and not self.warned:
            self.warned = True
            log_event(
                logger,
                logging.WARNING,
                "provider_totals_differ",
                **{
                    name: f"ours={mine:g},provider={theirs:g}"
                    for name, (mine, theirs) in differences.items()
                },  # fmt: skip
            )

    def finish(self) -> Summary:
        self.finished = time.monotonic()
        return self

    @property
    def wall_seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self) -> dict[str, Any]:
        """The totals; `cost_usd` is None when a model has no price (never a guess), while
        `estimated_cost_usd` sums the priced models only."""
        unpriced = self.unpriced_models
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
            "cost_usd": None if unpriced else round(self.cost_usd, 6),
            "estimated_cost_usd": round(self.cost_usd, 6),
            "unpriced_models": sorted(unpriced),
            "cache_saving_usd": round(self.cache_saving_usd, 6),
            "service_tiers": dict(self.tiers),  # the public key (the tiers of any API)
            "pages": self.pages,
            "cost_cents": self.cost_cents,
            "duplicates": self.duplicates,
            "provider_reported": None
            if self.unreported
            else {
                **dict(zip(REPORTED, self.reported, strict=True)),
                "cost_cents": self.reported_cents,
            },
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
            unpriced = ", ".join(sorted(self.unpriced_models))
            saved = self.cache_saving_usd
            cost = (
                f"cost: unknown (no price for {unpriced})"
                if unpriced
                else f"estimated cost: ${self.cost_usd:.4f}"
            )
            lines.append(
                f"tokens: {self.input_tokens} in ({self.cached_tokens} cached), "
                f"{self.output_tokens} out ({self.reasoning_tokens} reasoning)  {cost}"
                + (f" (prompt cache saved ${saved:.4f})" if saved else "")
            )
        if self.pages or self.cost_cents:
            lines.append(f"pages: {self.pages}  Datalab cost: {self.cost_cents:g} cents")
        return "\n".join(lines)
