"""`genai-coroutines demo`: the whole pipeline on the built-in emulator, no key needed.

OCR the bundled sample documents with the Datalab Marker API, extract invoice fields
from each page text with a JSON-schema Responses call, and print a table and what the
batch cost. Both services are the local emulator, so the figures are made up but the
requests, retries and result shapes are the real ones.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson

from .documents import DocumentConfig, DocumentProcessor, parse_documents
from .emulator import Emulator, EmulatorConfig
from .responses import ResponsesProcessor, ResponsesRequest, parse_responses

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


def sample_documents() -> list[tuple[str, bytes]]:
    folder = resources.files("genai_coroutines") / "samples"
    return sorted(
        (entry.name, entry.read_bytes())
        for entry in folder.iterdir()
        if entry.name.endswith(".pdf")
    )


async def run_demo() -> int:
    """Run the demo; return the number of failed items."""
    documents = sample_documents()
    config = EmulatorConfig(seconds_per_page=0.05, latency=0.05)
    async with Emulator(config) as emu:
        ocr_config = DocumentConfig(
            api_key=config.datalab_api_key,
            api_url=emu.marker_url,
            output_format="markdown",
            mode="balanced",
            poll_interval_secs=0.05,
        )
        emu.faults.schedule("marker_poll", "503")
        ocr = DocumentProcessor(ocr_config)
        ocr_results = await ocr.process_multiparts([d for _, d in documents])
        texts = parse_documents(ocr_results)

        request = ResponsesRequest(
            api_key=config.openai_api_key,
            base_url=emu.openai_base_url,
            model="gpt-4o-mini",
            system_prompt="Extract the invoice fields from the OCR text.",
            user_prompts=texts,
            retry_delay_min_ms=200,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "invoice", "schema": INVOICE_SCHEMA, "strict": True},
            },
        )
        emu.faults.schedule("responses", "503")
        llm = ResponsesProcessor()
        extraction = await llm.process_batch(request)

    assert ocr.last_summary is not None and llm.last_summary is not None
    _print_table(documents, ocr_results, parse_responses(extraction))
    print("\nOCR (Datalab Marker)\n" + ocr.last_summary.describe())
    print("\nExtraction (OpenAI Responses)\n" + llm.last_summary.describe())
    return ocr.last_summary.failed + llm.last_summary.failed


def _print_table(
    documents: list[tuple[str, bytes]], ocr_results: list[dict[str, Any]], extracted: list[str]
) -> None:
    header = ("file", "pages", "vendor", "number", "date", "total", "currency")
    rows = [header]
    for (name, _), ocr, text in zip(documents, ocr_results, extracted, strict=True):
        fields = orjson.loads(text) if text else {}
        rows.append(
            (
                name,
                str(ocr.get("page_count") or "-"),
                str(fields.get("vendor", "-"))[:24],
                str(fields.get("document_number", "-"))[:12],
                str(fields.get("date", "-")),
                f"{fields['total']:.2f}" if "total" in fields else "-",
                str(fields.get("currency", "-")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
