"""What answers cost, as the adapter that sent them knows it: the `PriceModel` contract.

The summary and the budget hold no price. Each adapter brings a price model that reads
what its items' outcomes were billed (their `Bill`: tokens by model and tier, pages,
cents, into the summary's `Charges`) and says what one finished item cost (the budget's
`settle`), so adding an API adds a price model beside its adapter and changes nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .outcome import Outcome


class TokenPricer(Protocol):
    """Prices the tokens a price model counted in `Charges.billed`, when they are read:
    cost is linear in tokens, so an item adds integers and pricing happens once."""

    def usd(self, model: str, share: float, inputs: int, cached: int, outputs: int) -> float | None:
        """US dollars of these tokens (`cached` among the `inputs`) of `model` at `share` of
        its standard price; None when `model` has no price."""
        ...


class PriceModel(Protocol):
    """One API's prices, called by the summary (`read`) and the budget (`cost`)."""

    def read(self, outcome: Outcome[Any], charges: Charges) -> None:
        """Add what `outcome` was billed (its `Bill`) to `charges`, in this model's terms
        (another API's bill adds nothing). (Called for every item a summary counts: keep it
        cheap.)"""
        ...

    def cost(self, outcome: Outcome[Any]) -> float | None:
        """What a finished item cost, in the unit of the budget this model settles; None
        when unknown (the budget then keeps the item's estimate as spent)."""
        ...


@dataclass
class Charges:
    """What a batch's answers were billed, in the units APIs bill them, filled by the
    summary's price models."""

    tiers: dict[str, int] = field(default_factory=dict)
    """Results counted by the tier of service that served them (when they say)."""
    pages: int = 0
    cost_cents: float = 0.0
    """The providers' own figures, in cents."""
    billed: dict[tuple[TokenPricer, str, float], list[int]] = field(
        default_factory=dict, repr=False
    )
    """[input, cached input, output, reasoning] tokens by (pricer, model, share of the
    standard price): the token counts, and what the pricer prices when the cost is read."""

    def _tokens(self, kind: int) -> int:
        return sum(billed[kind] for billed in self.billed.values())

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
        """Estimated US dollars of the tokens counted, at their pricers' prices."""
        return sum(
            usd
            for (pricer, model, share), (inputs, cached, outputs, _) in self.billed.items()
            if (usd := pricer.usd(model, share, inputs, cached, outputs)) is not None
        )

    @property
    def cache_saving_usd(self) -> float:
        """US dollars the cached input tokens saved: what they would have cost as fresh
        input, less what they cost at the cached rate."""
        saved = 0.0
        for (pricer, model, share), (inputs, cached, outputs, _) in self.billed.items():
            fresh = pricer.usd(model, share, inputs, 0, outputs) if cached else None
            paid = pricer.usd(model, share, inputs, cached, outputs) if fresh is not None else None
            if fresh is not None and paid is not None:
                saved += fresh - paid
        return saved

    @property
    def unpriced_models(self) -> set[str]:
        """Models of counted tokens their pricer has no price for (they cost 0 here)."""
        return {
            model
            for (pricer, model, share), (inputs, cached, outputs, _) in self.billed.items()
            if model and pricer.usd(model, share, inputs, cached, outputs) is None
        }
