"""`PipelineSummary`: a pipeline batch's totals, each stage's share and the total cost.

The default summary of `ExtractionPipeline.stream` (kept as its `last_summary`): a
`BatchSummary` (each stage priced by its adapter's price model: the OCR's cents by
`DatalabPrices`, the extraction's tokens by `TokenPrices`) that also reads each row's `ocr`
and `extraction` detail, so it needs nothing from the adapter but the stages' names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine import ItemEnd
from ..summary import BatchSummary
from .path import EXTRACTION_STAGE, OCR_STAGE, Row


@dataclass
class PipelineSummary(BatchSummary):
    """A `BatchSummary` of pipeline rows, with each stage's share.

    The inherited counts are the documents'; `pages`/`cost_cents` are the OCR's,
    tokens/`cost_usd` the extraction's, `retries` both stages' (a row's `retries`).
    `total_cost_usd` adds the two. A plain `BatchSummary` fed the same rows counts all
    of it but the retries (a row has no single `attempts`).
    """

    ocr_done: int = 0
    """Documents whose OCR succeeded (this run or a journaled one)."""
    ocr_failed: int = 0
    extraction_failed: int = 0
    ocr_retries: int = 0
    extraction_retries: int = 0
    extraction_requests: int = 0
    ocr_reused: int = 0
    """OCR results reused from the journal (a row from the journal counts too)."""
    extractions_reused: int = 0
    stage_cents: dict[str, float] = field(default_factory=dict)
    """Datalab cents per stage: "ocr", and "extract:<schema>" with `DatalabExtraction`."""

    def add(self, end: ItemEnd[Any]) -> None:
        super().add(end)  # its retries too: a row's attempts are 1 + both stages' retries
        outcome = end.outcome
        row = outcome.value
        if not isinstance(row, Row) or end.duplicate_of is not None:
            return  # a twin (`dedupe`): its stages ran once, counted as its original's
        stage = row.failed_stage
        for name, cents in row.stage_cents.items():
            self.stage_cents[name] = self.stage_cents.get(name, 0.0) + cents
        self.ocr_failed += stage == OCR_STAGE
        self.extraction_failed += stage == EXTRACTION_STAGE
        whole = end.origin == "journal"
        if stage != OCR_STAGE:
            self.ocr_done += 1
            self.ocr_reused += whole or row.ocr_reused
        if not whole:
            self.ocr_retries += row.ocr_retries
        if stage != OCR_STAGE:
            self.extraction_requests += row.extraction_requests
            self.extractions_reused += row.extraction_reused
            if not whole:
                self.extraction_retries += row.extraction_retries

    @property
    def total_cost_usd(self) -> float:
        """Datalab's cents as dollars plus the estimated token cost."""
        return self.cost_cents / 100.0 + self.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "ocr": {
                "documents": self.ocr_done,
                "failed": self.ocr_failed,
                "reused_from_journal": self.ocr_reused,
                "retries": self.ocr_retries,
                "pages": self.pages,
                "cost_cents": self.ocr_cents,
            },
            "extraction": {
                "requests": self.extraction_requests,
                "failed": self.extraction_failed,
                "reused_from_journal": self.extractions_reused,
                "retries": self.extraction_retries,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "estimated_cost_usd": round(self.cost_usd, 6),
                **({"cost_cents": self.extraction_cents} if self.datalab_extraction else {}),
            },
            "cost_cents_by_stage": {name: round(c, 6) for name, c in self.stage_cents.items()},
            "total_cost_usd": round(self.total_cost_usd, 6),
        }

    @property
    def datalab_extraction(self) -> bool:
        """Whether Datalab ran the extraction (`DatalabExtraction`): its stages have cents."""
        return any(name != "ocr" for name in self.stage_cents)

    @property
    def extraction_cents(self) -> float:
        return round(sum(c for name, c in self.stage_cents.items() if name != "ocr"), 6)

    @property
    def ocr_cents(self) -> float:
        """Datalab's cents but the extraction's."""
        return round(self.cost_cents - self.extraction_cents, 6)

    def describe(self) -> str:
        failed = f"{self.failed} failed"
        if self.failed:
            failed += f": {self.ocr_failed} at OCR, {self.extraction_failed} at extraction"
        reused = f", {self.reused} from journal" if self.reused else ""
        return "\n".join(
            [
                f"documents: {self.total} ({self.succeeded} extracted, {failed}{reused})"
                f"  retries: {self.retries}  429s: {self.rate_limited}"
                f"  wall: {self.wall_seconds:.2f}s",
                f"OCR (Datalab):       {self.ocr_done} documents"
                f"{_from_journal(self.ocr_reused)}, {self.pages} pages, "
                f"Datalab cost: {self.ocr_cents:g} cents (${self.ocr_cents / 100:.4f}), "
                f"{_plural(self.ocr_retries, 'retry', 'retries')}",
                self._extraction_line(),
                f"total cost: ${self.total_cost_usd:.4f}",
            ]
        )

    def _extraction_line(self) -> str:
        requests = _plural(self.extraction_requests, "request")
        requests += _from_journal(self.extractions_reused)
        retries = _plural(self.extraction_retries, "retry", "retries")
        if self.datalab_extraction:
            split = ", ".join(
                f"{name} {cents:g}" for name, cents in self.stage_cents.items() if name != "ocr"
            )
            return (
                f"extraction (Datalab): {requests}, {self.extraction_cents:g} cents ({split}), "
                f"{retries}"
            )
        return (
            f"extraction (OpenAI): {requests}, "
            f"{self.input_tokens} tokens in ({self.cached_tokens} cached), "
            f"{self.output_tokens} out, estimated cost: ${self.cost_usd:.4f}, {retries}"
        )


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _from_journal(n: int) -> str:
    """A stage's reuse, said on a rerun (a row rebuilt from journaled stages reuses them
    without being a row from the journal itself)."""
    return f" ({n} from journal)" if n else ""
