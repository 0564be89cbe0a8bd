"""`ResponsesClients`: what `ResponsesProcessor` and the pipeline (whose extraction is a
Responses stage) hold for all their batches besides their `Clients`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine.clients import ClientOptions, UsesClients
from .cache_keys import CacheKeys
from .prices import PricesArg, load_prices

if TYPE_CHECKING:
    from typing_extensions import Unpack


class ResponsesClients(UsesClients):
    """Its `Clients`, its price table and its `prompt_cache_key="auto"` plan."""

    def __init__(self, prices: PricesArg = None, **clients: Unpack[ClientOptions]) -> None:
        self.prices = load_prices(prices)
        """The table its summaries and budgets price tokens with (`prices.load_prices`)."""
        super().__init__(**clients)
        self.cache_keys = CacheKeys()
        """The `prompt_cache_key="auto"` plan shared by every batch of this object."""
