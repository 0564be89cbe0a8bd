"""Page arithmetic for Datalab jobs: how many pages a PDF has and a `page_range` selects.

Datalab limits *pages in flight*, not files, so a client has to know a job's page
count before it submits. Parsing PDFs properly needs a real library; counting the
`/Type /Page` objects is enough for budgeting and costs nothing. The emulator counts
pages by reading the PDF with pypdf instead (this count only when pypdf cannot read
it), so a mistake here shows up as a disagreement rather than agreeing with itself.
"""

from __future__ import annotations

import re

__all__ = ["count_pdf_pages", "pages_in_range", "parse_page_range"]

_PDF_MAGIC = b"%PDF-"
_HEADER_WINDOW = 1024
"""Readers accept junk before the header; Acrobat looks in the first 1024 bytes."""

_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![^\s/<>\[\]()%{}])")
"""`/Type /Page` or `/Type/Page`, but not `/Type /Pages` (the tree nodes)."""

_RANGE_ITEM = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


def count_pdf_pages(data: bytes) -> int | None:
    """Count the page objects of a PDF; None when `data` is not a PDF or shows no pages.

    PDFs whose objects sit in compressed object streams show no `/Type /Page` in
    their bytes; None ("unknown") lets the caller pick its own fallback.
    """
    if data.find(_PDF_MAGIC, 0, _HEADER_WINDOW) < 0:
        return None
    pages = len(_PAGE_OBJECT.findall(data))
    return pages or None


def parse_page_range(text: str) -> list[tuple[int, int]]:
    """Parse Datalab's `page_range` ("0-5", "0,2,4-6"; 0-indexed, inclusive) into spans.

    Raises ValueError for anything else: empty items, negative numbers, a span
    whose end comes before its start.
    """
    spans: list[tuple[int, int]] = []
    for item in text.split(","):
        match = _RANGE_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"invalid page range {text!r}: bad item {item!r}")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        if end < start:
            raise ValueError(f"invalid page range {text!r}: {start}-{end} ends before it starts")
        spans.append((start, end))
    return spans


def pages_in_range(page_range: str, total: int) -> int:
    """How many distinct pages of a `total`-page document `page_range` selects.

    Overlaps count once and pages past the end are ignored, as marker does; spans
    are merged, never expanded, so "0-999999999" costs nothing.
    """
    selected = 0
    reached = 0  # first page not yet counted
    for start, end in sorted(parse_page_range(page_range)):
        start, end = max(start, reached), min(end, total - 1)
        if start <= end:
            selected += end - start + 1
            reached = end + 1
    return selected
