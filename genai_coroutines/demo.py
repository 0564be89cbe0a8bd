"""`genai-coroutines demo`: the extraction pipeline on the built-in emulator, no key needed.

The bundled sample invoices go through `ExtractionPipeline`: each is converted by the
emulated Datalab `/convert`, and the moment its OCR text arrives it is sent to the
emulated `POST /responses` with an invoice JSON schema. The table shows each
document's fields, the summary what each stage and the whole cost. The emulated OCR
returns each PDF's own text layer and the emulated model fills the schema from that text
(a deterministic extractor, not a language model), so the fields are the invoices' real
values; latency and prices are made up.

One fault per side is injected on purpose (a 503 on a Datalab upload, a 503 on a
Responses request): both are retried, and counted in the summary's retries rather than
logged, so a clean run prints no log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from .documents import DocumentConfig
from .emulator import Emulator, EmulatorConfig
from .pipeline import ExtractionPipeline, PipelineSummary, extraction_request

INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "document_number": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "total": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
    },
    "required": ["vendor", "document_number", "date", "total", "currency"],
    "additionalProperties": False,
}

COLUMNS = ("file", "pages", "vendor", "number", "date", "total", "currency")
INJECTED = (("marker_submit", "503"), ("responses", "503"))
"""The faults the demo injects: one Datalab upload and one Responses request answer 503."""
RETRY_EVENTS = frozenset({"retry", "poll_retry", "rate_limit"})


def sample_documents() -> list[tuple[str, bytes]]:
    folder = resources.files("genai_coroutines") / "samples"
    return sorted(
        (entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.name.endswith(".pdf")
    )


class _InjectedRetries(logging.Filter):
    """Drops the retry log lines of the faults the demo injects on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        event = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (record.levelno == logging.WARNING and event in RETRY_EVENTS)


@contextmanager
def _quiet_injected_retries() -> Iterator[None]:
    loggers = [logging.getLogger(f"genai_coroutines.{name}") for name in ("ocr", "responses")]
    quiet = _InjectedRetries()
    for each in loggers:
        each.addFilter(quiet)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(quiet)


async def run_demo() -> int:
    """Run the demo; return the number of documents that failed."""
    documents = sample_documents()
    config = EmulatorConfig(seconds_per_page=0.05, latency=0.05)
    async with Emulator(config) as emu:
        ocr = DocumentConfig(
            api_key=config.datalab_api_key,
            api_url=f"{emu.datalab_base_url}/api/v1/convert",
            output_format="markdown",
            mode="balanced",
            poll_interval_secs=0.05,
            base_retry_delay_secs=0.1,
        )
        extraction = extraction_request(
            model="gpt-4o-mini",
            schema=INVOICE_SCHEMA,
            schema_name="invoice",
            system_prompt="Extract the invoice fields from the OCR text.",
            api_key=config.openai_api_key,
            base_url=emu.openai_base_url,
            retry_delay_min_ms=100,
        )
        for endpoint, fault in INJECTED:
            emu.faults.schedule(endpoint, fault)
        pipeline = ExtractionPipeline(ocr, extraction)
        with _quiet_injected_retries():
            rows = await pipeline.process([data for _, data in documents])
    summary = pipeline.last_summary
    assert isinstance(summary, PipelineSummary)
    print_table([name for name, _ in documents], rows)
    print()
    print(summary.describe())
    print(
        "faults injected on purpose: a 503 on one Datalab upload and one Responses request; "
        f"survived with {summary.ocr_retries} OCR and {summary.extraction_retries} extraction "
        f"{'retry' if summary.extraction_retries == 1 else 'retries'}"
    )
    return summary.failed


def table_rows(names: list[str], rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The demo's table: a header, then one row of cells per document."""
    lines: list[tuple[str, ...]] = [COLUMNS]
    for name, row in zip(names, rows, strict=True):
        fields = row.get("fields") or {}
        total = fields.get("total")
        lines.append(
            (
                name,
                str(row.get("page_count") or "-"),
                str(fields.get("vendor", "-")),
                str(fields.get("document_number", "-")),
                str(fields.get("date", "-")),
                f"{total:.2f}" if isinstance(total, int | float) else "-",
                str(fields.get("currency", "-")),
            )
            if row.get("success")
            else (name, "-", f"failed at {row.get('failed_stage')}: {row.get('error')}")
            + ("",) * (len(COLUMNS) - 3)
        )
    return lines


def print_table(names: list[str], rows: list[dict[str, Any]]) -> None:
    lines = table_rows(names, rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    for number, line in enumerate(lines):
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))
