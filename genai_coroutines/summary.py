"""`BatchSummary`: a batch's totals priced by both APIs' price models.

The `engine.summary.Summary` a caller builds (`summary=` of any processor, or to `add`
results to itself): it prices Responses tokens at `prices` (OpenAI's list prices unless
overridden) and sums the cents Datalab reports, so one summary can total batches of
both APIs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .documents.prices import DatalabPrices
from .engine.pricing import PriceModel
from .engine.summary import Summary
from .responses.prices import PRICES, Price, TokenPrices


@dataclass
class BatchSummary(Summary):
    """A `Summary` priced by `TokenPrices(prices, model)` and `DatalabPrices`."""

    pricing: tuple[PriceModel, ...] = field(init=False, default=())
    model: str = ""
    """Model priced when a result does not name its own."""
    prices: Mapping[str, Price] = field(default_factory=lambda: PRICES)

    def __post_init__(self) -> None:
        self.pricing = (TokenPrices(self.prices, self.model), DatalabPrices())
