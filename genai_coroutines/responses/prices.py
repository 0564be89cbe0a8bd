"""What a Responses answer costs: OpenAI's list prices by model, at the tier that served it,
cached input at its own rate.

`TokenPrices` is the adapter's `engine.pricing.PriceModel`: the summary and the budget
call it and hold no table. The prices are an estimate the caller can override
(`BatchSummary(prices=...)`): providers change prices, and the table does not know your
discounts.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import orjson

from ..engine.budget import Budget
from ..engine.logs import log_event
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


@dataclass(frozen=True, slots=True)
class PriceTable:
    """A price file read: each model's `Price`, each tier's share of the standard price
    (`tiers`: a result served at another tier costs the standard price), and the date the
    prices were taken, so that a figure can say how old its prices are."""

    models: Mapping[str, Price]
    tiers: Mapping[str, float]
    date: str | None = None


PricesArg = Union[Mapping[str, Any], "PriceTable", str, "os.PathLike[str]", None]
"""What `prices=` takes: a dict in the price file's shape (or `{model: Price}`), a
`PriceTable`, the path of a JSON price file, or None for the built-in table."""

PRICES_FILE = Path(__file__).with_name("prices.json")
"""The built-in table, shipped in the package: its shape is the price file's."""


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"prices: {where} must be a number, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"prices: {where} must be a non-negative number, got {value!r}")
    return float(value)


def _price(model: str, entry: object) -> Price:
    if isinstance(entry, Price):
        return entry
    if not isinstance(entry, Mapping):
        raise TypeError(
            f"prices: models[{model!r}] must be an object of input, cached_input and output "
            f"(USD per million tokens), not {type(entry).__name__}"
        )
    missing = [name for name in ("input", "cached_input", "output") if name not in entry]
    if missing:
        raise ValueError(f"prices: models[{model!r}] lacks {', '.join(missing)}")
    unknown = sorted(set(entry) - {"input", "cached_input", "output"})
    if unknown:
        raise ValueError(f"prices: models[{model!r}] has unknown fields {unknown}")
    return Price(*(_number(f"models[{model!r}].{name}", entry[name]) for name in Price.__slots__))


def price_table(data: Mapping[str, Any]) -> PriceTable:
    """A `PriceTable` from a price file's JSON (`{"date", "models", "tiers"}`; `models` is
    required), or from a plain `{model: Price}` mapping (then the built-in tiers)."""
    if "models" not in data:
        return PriceTable({m: _price(m, p) for m, p in data.items()}, BUILT_IN.tiers)
    unknown = sorted(set(data) - {"date", "source", "models", "tiers"})
    if unknown:
        raise ValueError(f"prices: unknown fields {unknown} (date, source, models, tiers)")
    models, date = data["models"], data.get("date")
    tiers = data["tiers"] if "tiers" in data else BUILT_IN.tiers  # the built-in file has its own
    if not isinstance(models, Mapping) or not isinstance(tiers, Mapping):
        raise TypeError("prices: models and tiers must be JSON objects")
    if date is not None and not isinstance(date, str):
        raise TypeError(f"prices: date must be a str, not {type(date).__name__}")
    return PriceTable(
        {str(model): _price(str(model), entry) for model, entry in models.items()},
        {str(tier): _number(f"tiers[{tier!r}]", share) for tier, share in tiers.items()},
        date,
    )


def load_prices(prices: PricesArg) -> PriceTable:
    """The prices `prices=` names: your table replaces the built-in one whole (a model it
    does not name has no price: its cost is None, never a guess)."""
    if prices is None:
        return BUILT_IN
    if isinstance(prices, PriceTable):
        return prices
    if isinstance(prices, str | os.PathLike):
        try:
            data = orjson.loads(Path(prices).read_bytes())
        except OSError as exc:
            raise ValueError(f"prices: cannot read {os.fspath(prices)}: {exc.strerror}") from None
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"prices: {os.fspath(prices)} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise TypeError(f"prices: {os.fspath(prices)} must hold a JSON object")
        return price_table(data)
    if not isinstance(prices, Mapping):
        raise TypeError(
            "prices must be a dict, a PriceTable or the path of a JSON price file, "
            f"not {type(prices).__name__}"
        )
    return price_table(prices)


BUILT_IN = price_table(orjson.loads(PRICES_FILE.read_bytes()))
"""The built-in table, read from `prices.json` (dated snapshots map to their family)."""

DISCOUNTED_TIERS = BUILT_IN.tiers
"""Share of the standard price a result billed at this tier costs (the built-in file's
`tiers`): the Batch API charges half, and flex is billed at Batch API rates (on the models
that offer it). A result's `service_tier` says which tier served it: a flex request that
fell back to standard is priced at standard. A price file without `tiers` keeps these."""

PRICES: dict[str, Price] = dict(BUILT_IN.models)
"""List prices (standard tier) of the built-in table, by model."""

DEFAULT_OUTPUT_ALLOWANCE = 4096
"""Output tokens a request is estimated at by the budget when it sets no
`max_output_tokens` (then an answer may cost more than its estimate, and the budget is a
softer bound)."""


def tier_share(tier: object, tiers: Mapping[str, float] = DISCOUNTED_TIERS) -> float:
    """Share of the standard price an answer served at `tier` costs (a table's `tiers`)."""
    return tiers.get(tier, 1.0) if isinstance(tier, str) else 1.0


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


SNAPSHOT = re.compile(r"(.+)-(\d{4}-\d{2}-\d{2}|\d{4})")
"""A dated snapshot's name: its family, then a date ("gpt-4o-2024-08-06", "gpt-4-0613")."""


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of `model`, or of its family when it is a dated snapshot
    ("gpt-4o-2024-08-06" is priced as "gpt-4o"; "gpt-4o-mini" is not, unless named)."""
    if model in prices:
        return prices[model]
    snapshot = SNAPSHOT.fullmatch(model)
    return prices.get(snapshot.group(1)) if snapshot else None


@dataclass(eq=False, slots=True)
class TokenPrices:
    """The Responses price model: each answer's `usage` at `table`'s price for its `model`
    (`model` here when it names none), times its tier's share in `tiers`."""

    table: Mapping[str, Price] = field(default_factory=lambda: PRICES)
    model: str = ""
    tiers: Mapping[str, float] = field(default_factory=lambda: DISCOUNTED_TIERS)

    @classmethod
    def of(cls, prices: PriceTable, model: str = "") -> TokenPrices:
        return cls(prices.models, model, prices.tiers)

    def read(self, outcome: Outcome[Any], charges: Charges) -> None:
        bill = outcome.bill
        if bill is None:
            return
        tier = bill.tier
        share = 1.0
        if tier is not None:
            tiers = charges.tiers
            tiers[tier] = tiers.get(tier, 0) + 1
            share = self.tiers.get(tier, 1.0)
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
            tier_share(bill.tier, self.tiers),
        )


def table_of(summary: Summary) -> PriceTable:
    """The token prices `summary` is kept at (the built-in table when it has none), so that
    a budget spends by the same figures the summary reports."""
    pricer = next((m for m in summary.pricing if isinstance(m, TokenPrices)), None)
    return BUILT_IN if pricer is None else PriceTable(pricer.table, pricer.tiers)


def warn_unpriced(logger: logging.Logger, model: str, prices: PriceTable) -> None:
    """One warning, before a batch of `model` starts, when its prices do not name it: its
    cost will be None, not a guessed number."""
    if price_for(model, prices.models) is None:
        log_event(
            logger,
            logging.WARNING,
            "unpriced_model",
            model=model,
            action='"cost_usd is None: pass prices= naming the model (a price file or dict)"',
        )


def token_budget(
    limit_usd: float,
    *,
    model: str,
    prices: PriceTable,
    share: float,
    output_allowance: int,
    input_tokens: Callable[[P], int],
) -> Budget[P]:
    """A budget in US dollars for requests of `model`.

    An item is estimated at `input_tokens(prepared)` plus `output_allowance` output tokens
    at the standard price times `share` (the tier in force: 0.5 for flex without fallback
    or the Batch API), and settled by `TokenPrices.cost`.
    """
    price = price_for(model, prices.models)
    if price is None:
        raise ValueError(
            f"max_cost_usd needs a price for model {model!r}: pass prices= naming it "
            "(a price file, or a dict in its shape)"
        )
    known = price

    def estimate(prepared: P) -> float:
        tokens_in = input_tokens(prepared)
        return share * (tokens_in * known.input + output_allowance * known.output) / 1_000_000

    return Budget(limit_usd, estimate, TokenPrices.of(prices, model))
