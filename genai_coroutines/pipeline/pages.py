"""An OCR result read back: its JSON payload, and its text page by page.

`per_page=True` extracts each page on its own; pages come from the OCR output: `json`
pages, `chunks` blocks by page, or `paginate=True` markdown/HTML. Anything else is one
page, the document's whole text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from ..documents.parse import block_html, payload_text


def _payload(result: Mapping[str, Any]) -> dict[str, Any]:
    raw = result.get("json_response")
    if not isinstance(raw, str):
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


_MARKDOWN_PAGE = "-" * 48
"""marker's page separator: `{N}` and 48 dashes, opening each page of paginated markdown."""


def page_texts(result: Mapping[str, Any]) -> list[str]:
    """The text of each page of an OCR result: `json` pages, `chunks` blocks grouped by
    page, paginated HTML (`<div class='page'>`) or markdown (`{N}---...`); else the whole
    text as one page."""
    raw = result.get("json_response")
    if not result.get("success") or not isinstance(raw, str) or not raw:
        return [""]
    return payload_pages(_payload(result), raw)


def payload_pages(payload: dict[str, Any], raw: str) -> list[str]:
    """`page_texts` of a finished job's `payload` (its JSON text `raw`)."""
    tree = payload.get("json")
    if isinstance(tree, dict) and isinstance(tree.get("children"), list):
        return [block_html(page) for page in tree["children"]]
    chunks = payload.get("chunks")
    blocks = chunks.get("blocks") if isinstance(chunks, dict) else None
    if isinstance(blocks, list) and blocks:
        pages: dict[Any, list[str]] = {}
        for block in blocks:
            if isinstance(block, dict):
                pages.setdefault(block.get("page"), []).append(block_html(block))
        return ["\n".join(part for part in parts if part) for parts in pages.values()]
    html = payload.get("html")
    if isinstance(html, str) and "<div class='page'" in html:
        parts = re.split(r"<div class='page' data-page-id='\d+'>", html)[1:]
        return [re.sub(r"</div>\s*(</body></html>)?\s*$", "", part).strip() for part in parts]
    markdown = payload.get("markdown")
    if isinstance(markdown, str) and re.search(r"\{\d+\}" + _MARKDOWN_PAGE, markdown):
        parts = re.split(r"\{\d+\}" + _MARKDOWN_PAGE, markdown)
        return [part.strip() for part in parts if part.strip()]
    return [payload_text(payload, raw) if payload else raw]
