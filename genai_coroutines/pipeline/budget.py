"""`max_cost_usd` of a pipeline batch: one budget in US dollars over both stages.

A document costs Datalab's cents for its OCR and OpenAI's tokens for its extraction, so
the budget is reserved stage by stage, not per document: before its OCR job is uploaded
(its pages at Datalab's list price, as `DocumentProcessor`'s `max_cost_cents` estimates,
as dollars) and before each extraction request (its input estimate and output allowance,
as `ResponsesProcessor`'s `max_cost_usd`), each settled by its stage's own price model
(the job's `cost_breakdown`, the answer's usage). With `batch_api` an extraction request
is reserved at the Batch API's share (half) before its line goes into a file and settled
when its batch answers it (released when it ends unanswered: `responses_stage`).
Everything else is `engine.budget`'s rule: once the next request could pass the budget,
nothing more is sent and the rest end `budget_exceeded` (a document whose OCR finished
keeps it, journaled); a `budget_name` shares the total through the limits store (in
dollars, so with `ResponsesProcessor` batches on that name too); a rerun with a higher
budget continues.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..documents import DocumentConfig
from ..documents.path import pages_budget
from ..documents.sources import Upload
from ..engine import Failure, Outcome
from ..engine.budget import Budget
from ..engine.pricing import Charges, PriceModel
from ..responses import ResponsesRequest
from ..responses.direct import Prepared, budget_for
from ..responses.prices import PriceTable, tier_share


@dataclass(eq=False, slots=True)
class PipelinePrices:
    """Both stages' price models, in US dollars: `ocr` counts cents, `extraction` dollars."""

    ocr: PriceModel
    extraction: PriceModel

    def read(self, outcome: Outcome[Any], charges: Charges) -> None:
        self.ocr.read(outcome, charges)
        self.extraction.read(outcome, charges)

    def cost(self, outcome: Outcome[Any]) -> float | None:
        """What a row (or one stage's answer) paid for earlier cost: the cents and the
        tokens its `Bill` holds, each priced by its own model (a bill has what it has)."""
        return (self.ocr.cost(outcome) or 0.0) / 100.0 + (self.extraction.cost(outcome) or 0.0)

    def ocr_cost(self, outcome: Outcome[Any]) -> float | None:
        cents = self.ocr.cost(outcome)
        return None if cents is None else cents / 100.0


@dataclass
class StageBudget(Budget[Upload]):
    """The budget of a pipeline batch (see the module docstring). `estimate` is a document's
    OCR in dollars, `extraction` an extraction request's. The stages `hold` and `spend` it;
    the driver only charges it the rows the journal answers."""

    pricing: PipelinePrices
    extraction: Callable[[Prepared], float] = field(default=lambda _: 0.0)

    async def reserve(self, prepared: Upload, *, paid: bool = False) -> float | Failure:
        """Every document is admitted: its stages reserve each request, and know which
        ones the API accepted earlier (polled whatever the budget)."""
        return 0.0

    def settle(self, reserved: float, outcome: Outcome[Any]) -> None:
        """Nothing: each of the document's requests was settled as it ended."""

    def weigh(
        self, request: Upload | Prepared
    ) -> tuple[float, Callable[[Outcome[Any]], float | None]]:
        """A stage request's estimate in dollars, and what its outcome cost in dollars: a
        document's OCR job (its `Upload`), or an extraction request."""
        if isinstance(request, Upload):
            return self.estimate(request), self.pricing.ocr_cost
        return self.extraction(request), self.pricing.extraction.cost


def stage_budget(
    ocr: DocumentConfig,
    request: ResponsesRequest,
    limit_usd: float,
    prices: PriceTable,
    *,
    batch_api: bool = False,
) -> StageBudget:
    """The stages' estimates and price models as each processor's own budget has them (an
    extraction request at the Batch API's share with `batch_api`); `ValueError` when the
    extraction's model has no price."""
    pages = pages_budget(ocr, limit_usd * 100.0, None)
    share = tier_share("batch", prices.tiers) if batch_api else None
    tokens = budget_for(request, limit_usd, prices, share=share)
    return StageBudget(
        limit_usd,
        lambda upload: pages.estimate(upload) / 100.0,
        PipelinePrices(pages.pricing, tokens.pricing),
        extraction=tokens.estimate,
    )
