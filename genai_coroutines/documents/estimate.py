"""What a batch of documents will cost and how long it will take, before anything is sent.

`estimate` reads each document as a batch would (paths, bytes, open files; an http(s) URL
is not fetched), counts its pages locally (a PDF read with pypdf, falling back to counting
its page objects; an image is one page; an Office file, HTML or a URL is unknown and
counts `max_pages`, or one page, as the pages-in-flight bound weighs it), bounds them by
`page_range`/`max_pages` as Datalab will, and prices them at Datalab's list cents per
page (`prices`) on each endpoint the documents could go to: `/convert` (the parse),
`/extract` (parse and extraction) and `/segment` (parse and segmentation), the configured
one named by `endpoint`. `minutes` is the submissions at `requests_per_minute` (None
without one: Datalab sends no limit headers to learn from, and its processing time per
page is not documented, so no figure is better than a guess).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ..pdfpages import count_pdf_pages
from .config import DocumentConfig
from .job import page_weight
from .path import CHECKPOINT_UPLOAD, check_input
from .prices import (
    DATALAB_CENTS_PER_PAGE,
    EXTRACT_CENTS_PER_PAGE,
    SEGMENT_CENTS_PER_PAGE,
    list_cents_per_page,
)
from .sources import SourceError, Upload

COUNTED_WITH = "pypdf for PDFs, 1 per image"


def pdf_pages(data: bytes) -> int | None:
    """The PDF's page count as pypdf reads it (compressed object streams too); the page
    objects counted when pypdf cannot read it; None for no PDF."""
    import pypdf

    try:
        return len(pypdf.PdfReader(io.BytesIO(data)).pages) or None
    except Exception:  # pypdf's errors on a damaged file are many kinds
        return count_pdf_pages(data)


async def counted(item: object, index: int, config: DocumentConfig) -> Upload:
    """Input `index` read as a batch reads it, its pages counted with pypdf."""
    source = check_input(item, index, config)
    if source is None:
        return CHECKPOINT_UPLOAD
    upload = await source.load()
    if upload.data is not None and upload.content_type == "application/pdf":
        pages = await asyncio.to_thread(pdf_pages, upload.data)
        upload = replace(upload, data=None, pages=pages)
    return replace(upload, data=None)  # only its pages are kept


async def estimate(inputs: Iterable[object], config: DocumentConfig) -> dict[str, Any]:
    """The estimate of `inputs` under `config` (see the module docstring)."""
    documents = pages = unknown = unreadable = 0
    for index, item in enumerate(inputs):
        documents += 1
        try:
            upload = await counted(item, index, config)
        except SourceError:
            unreadable += 1
            continue
        unknown += upload.pages is None
        pages += page_weight(upload, config)
    parse = DATALAB_CENTS_PER_PAGE[config.mode] if config.needs_file else 0.0
    cents = list_cents_per_page(config)
    endpoints = {
        "convert": parse,
        "extract": parse + EXTRACT_CENTS_PER_PAGE,
        "segment": parse + SEGMENT_CENTS_PER_PAGE,
    }
    rpm = config.requests_per_minute
    sent = documents - unreadable
    return {
        "documents": documents,
        "pages": pages,
        "pages_counted_with": COUNTED_WITH,
        "documents_of_unknown_pages": unknown,
        "unreadable": unreadable,
        "mode": config.mode,
        "endpoint": config.endpoint,
        "cents_per_page": cents,
        "cost_cents": round(pages * cents, 6),
        "cost_usd": round(pages * cents / 100, 8),
        "endpoints": {
            name: {
                "cents_per_page": per_page,
                "cost_cents": round(pages * per_page, 6),
                "cost_usd": round(pages * per_page / 100, 8),
            }
            for name, per_page in endpoints.items()
        },
        "limits": {
            "requests_per_minute": rpm,
            "max_pages_in_flight": config.max_pages_in_flight,
            "max_concurrent_requests": config.max_concurrent_requests,
        },
        "minutes": round(sent / rpm, 2) if rpm else None,
    }
