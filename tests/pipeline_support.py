"""Documents with real text layers for the pipeline's tests and benchmark.

`text_pdf` writes a well-formed PDF whose pages hold the given lines of text, so the
emulated OCR (which reads the text layer with pypdf) returns exactly those lines and
the emulated model extracts what they state. `invoice_pdf` is such a PDF for one
invoice, its fields spread over its pages as a real invoice's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genai_coroutines import DocumentConfig, ExtractionPipeline, extraction_request
from genai_coroutines.emulator import Emulator
from tests.samples import assemble

MODEL = "gpt-4o-mini"


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def text_pdf(pages: Sequence[Sequence[str]], *, extra: bytes = b"") -> bytes:
    """A PDF with one page per item of `pages`, each showing its lines top to bottom;
    `extra` is appended as a comment (e.g. the emulator's failure marker)."""
    if not pages:
        raise ValueError("a PDF needs at least one page")
    first_page = 4
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(pages)))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(pages),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        shown = b" 0 -18 Td ".join(b"(" + _escape(line) + b") Tj" for line in lines)
        stream = b"BT /F1 12 Tf 72 720 Td " + shown + b" ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
            % (first_page + 2 * i + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return assemble(objects, extra)


INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "invoice_number": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "total": {"type": "number"},
        "currency": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
    },
    "required": ["vendor", "invoice_number", "date", "total", "currency"],
    "additionalProperties": False,
}


def invoice_fields(number: int) -> dict[str, object]:
    """The fields `invoice_pdf(number, ...)` states."""
    return {
        "vendor": f"Vendor {number} Ltd",
        "invoice_number": f"INV-{1000 + number}",
        "date": f"2026-{1 + number % 12:02d}-{1 + number % 28:02d}",
        "total": float(100 + number),
        "currency": ("EUR", "USD", "GBP")[number % 3],
    }


def invoice_pdf(number: int, pages: int = 1, *, extra: bytes = b"") -> bytes:
    """An invoice of `pages` pages: the header on the first, the total on the last."""
    fields = invoice_fields(number)
    first = [
        f"{fields['vendor']} - Invoice {fields['invoice_number']}",
        f"Date: {fields['date']}",
    ]
    last = [f"Total due: {fields['total']:.2f} {fields['currency']}"]
    middle = [[f"Line items, continued ({page + 1} of {pages})"] for page in range(1, pages - 1)]
    body = [first + last] if pages == 1 else [first, *middle, last]
    return text_pdf(body, extra=extra)


def convert_url(emulator: Emulator) -> str:
    return f"{emulator.datalab_base_url}/api/v1/convert"


def pipeline_for(
    emulator: Emulator,
    *,
    per_page: bool = False,
    schema: dict[str, Any] = INVOICE_SCHEMA,
    ocr: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
) -> ExtractionPipeline:
    ocr_options: dict[str, Any] = {
        "api_key": emulator.config.datalab_api_key,
        "api_url": convert_url(emulator),
        "output_format": "markdown",
        "poll_interval_secs": 0.01,
        "base_retry_delay_secs": 0.01,
        **(ocr or {}),
    }
    request_options: dict[str, Any] = {
        "api_key": emulator.config.openai_api_key,
        "base_url": emulator.openai_base_url,
        "retry_delay_min_ms": 10,
        "retry_delay_max_ms": 50,
        **(request or {}),
    }
    return ExtractionPipeline(
        DocumentConfig(**ocr_options),
        extraction_request(**{"model": MODEL, "schema": schema, **request_options}),
        per_page=per_page,
    )
