"""The body of a finished Datalab job, shaped like marker's renderers.

Each page says which page of which upload it is ("Page 3 of report.pdf, digest
ab12..."), so a test can match every result to its input. Shapes follow marker
(`marker/renderers/{markdown,html,json,chunk}.py` in datalab-to/marker): JSON pages
hold `<content-ref>` placeholders and the text lives in their children; paginated
markdown starts each page with `{N}` and 48 dashes; paginated HTML wraps pages in
`<div class='page' data-page-id='N'>`.
"""

from __future__ import annotations

import base64
import html
import random
import struct
import zlib
from typing import Any

import orjson

from ..pdfpages import parse_page_range
from . import schema_fill
from .datalab_form import Options

PAGE_SEPARATOR = "-" * 48
"""marker's `MarkdownRenderer.page_separator`."""

PRICE_CENTS_PER_PAGE = {"fast": 0.4, "balanced": 0.4, "accurate": 0.6}
"""Emulator prices, not Datalab's (see datalab.to/pricing); only their shape matters."""

PARSE_QUALITY_SCORE = 4.5
VERSIONS = {"marker": "emulator"}

_HTML_HEAD = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"/></head><body>'
_PAGE_BOX = [0.0, 0.0, 612.0, 792.0]
_PAGE_POLYGON = [[0.0, 0.0], [612.0, 0.0], [612.0, 792.0], [0.0, 792.0]]
_TEXT_BOX = [72.0, 72.0, 540.0, 96.0]
_TEXT_POLYGON = [[72.0, 72.0], [540.0, 72.0], [540.0, 96.0], [72.0, 96.0]]


def _tiny_png() -> str:
    """A valid 1x1 grey PNG, base64: the one picture every emulated document holds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    return base64.b64encode(raw + chunk(b"IEND", b"")).decode()


_PICTURE = _tiny_png()


def selected_pages(options: Options, total: int) -> list[int]:
    """The 0-based pages a job processes: `page_range` wins over `max_pages` (Datalab docs)."""
    if options.page_range is not None:
        pages = {
            page
            for start, end in parse_page_range(options.page_range)
            for page in range(start, min(end, total - 1) + 1)
        }
        return sorted(pages)
    limit = total if options.max_pages is None else min(total, options.max_pages)
    return list(range(limit))


def failed_payload(error: str) -> dict[str, Any]:
    return {"status": "failed", "success": False, "error": error}


def complete_payload(
    options: Options, *, filename: str, digest: str, total_pages: int, runtime: float
) -> dict[str, Any]:
    """Everything `GET request_check_url` returns once the job is done."""
    doc = _Document(options, filename, digest, selected_pages(options, total_pages))
    cost = round(len(doc.pages) * PRICE_CENTS_PER_PAGE[options.mode], 4)
    payload: dict[str, Any] = {
        "status": "complete",
        "success": True,
        "error": None,
        "output_format": options.output_format,
    }
    renderers = {"markdown": doc.markdown, "html": doc.html, "json": doc.json, "chunks": doc.chunks}
    for fmt in options.formats:
        payload[fmt] = renderers[fmt]()
    if options.page_schema is not None:
        label = f"{filename} [{digest}]"  # every string names the upload it came from
        instance = schema_fill.instance(options.page_schema, random.Random(label), [label])
        payload["extraction_schema_json"] = orjson.dumps(instance).decode()
    payload.update(
        images=doc.images(),
        metadata=doc.metadata(),
        page_count=len(doc.pages),
        parse_quality_score=PARSE_QUALITY_SCORE,
        runtime=round(runtime, 3),
        cost_breakdown={"list_cost_cents": cost, "final_cost_cents": cost},
        versions=VERSIONS,
    )
    return payload


class _Document:
    """One Text block per page, plus a Picture on the first page unless images are off."""

    def __init__(self, options: Options, filename: str, digest: str, pages: list[int]) -> None:
        self.options = options
        self.filename = filename
        self.digest = digest
        self.pages = pages
        self.picture_page = None if options.disable_image_extraction or not pages else pages[0]

    def text(self, page: int) -> str:
        return f"Page {page} of {self.filename}, digest {self.digest}."

    def picture_name(self, page: int) -> str:
        return f"_page_{page}_Picture_1.png"

    def _attr(self, block_id: str) -> str:
        return f' data-block-id="{block_id}"' if self.options.add_block_ids else ""

    def page_html(self, page: int) -> str:
        text_id = f"/page/{page}/Text/0"
        body = f"<p{self._attr(text_id)}>{html.escape(self.text(page))}</p>"
        if page == self.picture_page:
            picture_id = f"/page/{page}/Picture/1"
            body += f"<p{self._attr(picture_id)}><img src='{self.picture_name(page)}'/></p>"
        return body

    def markdown(self) -> str:
        parts = []
        for page in self.pages:
            text = self.text(page)
            if page == self.picture_page:
                text += f"\n\n![]({self.picture_name(page)})"
            if self.options.paginate:
                text = f"\n\n{{{page}}}{PAGE_SEPARATOR}\n\n{text}"
            parts.append(text)
        return "".join(parts) if self.options.paginate else "\n\n".join(parts)

    def html(self) -> str:
        pages = [
            f"<div class='page' data-page-id='{page}'>{self.page_html(page)}</div>"
            if self.options.paginate
            else self.page_html(page)
            for page in self.pages
        ]
        body = "\n".join(pages)
        return f"{_HTML_HEAD}\n{body}\n</body></html>"

    def blocks(self, page: int) -> list[dict[str, Any]]:
        """The leaf blocks of a page, as marker's `JSONBlockOutput`."""
        text_id = f"/page/{page}/Text/0"
        leaves = [
            _block(
                text_id, "Text", f"<p>{html.escape(self.text(page))}</p>", _TEXT_POLYGON, _TEXT_BOX
            )
        ]
        if page == self.picture_page:
            name = self.picture_name(page)
            picture = _block(f"/page/{page}/Picture/1", "Picture", "", _TEXT_POLYGON, _TEXT_BOX)
            picture["images"] = {name: _PICTURE}
            leaves.append(picture)
        return leaves

    def json(self) -> dict[str, Any]:
        children = []
        for page in self.pages:
            leaves = self.blocks(page)
            refs = "".join(f"<content-ref src='{leaf['id']}'></content-ref>" for leaf in leaves)
            block = _block(f"/page/{page}/Page/{page}", "Page", refs, _PAGE_POLYGON, _PAGE_BOX)
            block["children"] = leaves
            children.append(block)
        return {"block_type": "Document", "children": children, "metadata": self.metadata()}

    def chunks(self) -> dict[str, Any]:
        blocks = []
        for page in self.pages:
            for leaf in self.blocks(page):
                flat = {key: value for key, value in leaf.items() if key != "children"}
                blocks.append({**flat, "page": page})
        page_info = {
            str(page): {"bbox": _PAGE_BOX, "polygon": _PAGE_POLYGON} for page in self.pages
        }
        return {"blocks": blocks, "page_info": page_info, "metadata": self.metadata()}

    def images(self) -> dict[str, str]:
        if self.picture_page is None:
            return {}
        return {self.picture_name(self.picture_page): _PICTURE}

    def metadata(self) -> dict[str, Any]:
        stats = []
        for page in self.pages:
            counts = [["Page", 1], ["Text", 1]] + (
                [["Picture", 1]] if page == self.picture_page else []
            )
            stats.append(
                {"page_id": page, "text_extraction_method": "pdftext", "block_counts": counts}
            )
        return {"table_of_contents": [], "page_stats": stats}


def _block(
    block_id: str, kind: str, body: str, polygon: list[list[float]], bbox: list[float]
) -> dict[str, Any]:
    return {
        "id": block_id,
        "block_type": kind,
        "html": body,
        "polygon": polygon,
        "bbox": bbox,
        "children": None,
        "section_hierarchy": {},
        "images": None,
    }
