"""`BatchSummary`: a batch's totals priced by both APIs' price models.

The `engine.summary.Summary` a caller builds (`summary=` of any processor, or to `add`
results to itself): it prices Responses tokens at `prices` (OpenAI's list prices unless
overridden) and sums the cents Datalab reports, so one summary can total batches of
both APIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .documents.prices import DatalabPrices
from .engine.pricing import PriceModel
from .engine.summary import Summary
from .responses.prices import PricesArg, TokenPrices, load_prices


@dataclass
class BatchSummary(Summary):
    """A `Summary` priced by `TokenPrices` at `prices` and `DatalabPrices`."""

    pricing: tuple[PriceModel, ...] = field(init=False, default=())
    model: str = ""
    """Model priced when a result does not name its own."""
    prices: PricesArg = None
    """`{model: Price}`, a dict in the price file's shape, a `PriceTable`, a price file's
    path, or None for the built-in table (see `responses.prices.load_prices`)."""

    def __post_init__(self) -> None:
        self.pricing = (TokenPrices.of(load_prices(self.prices), self.model), DatalabPrices())
