"""`parse_documents`: the text of each OCR result, whatever output format was asked for.

One string per result, in order: `""` for a failed document, and for a payload
whose shape is not recognised, the raw JSON, so nothing is ever lost. What is taken
from a successful payload, first match wins:

1. `extraction_schema_json` (a `page_schema` request): the extraction, a JSON string;
   `segmentation_results` (a `/segment` job): as JSON, `{"segments": [...], ...}`.
2. `json`: the HTML of each page (`json.children[].html`), joined by newlines. marker
   writes a page's HTML as `<content-ref src=...>` placeholders for its child blocks;
   they are replaced by those blocks' HTML, so the text is there, not the template.
3. `html`, then `markdown`: as returned (with `paginate=True` they already carry
   marker's page separators).
4. `chunks`: the HTML of each block (`chunks.blocks[].html`), joined by newlines.
5. `pages`: older paginated payloads, a list of pages with `html`/`markdown`/`text`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from ..pdfpages import parse_page_range

_CONTENT_REF = re.compile(r"""<content-ref\s+src=(['"])(.*?)\1\s*(?:/>|>\s*</content-ref>)""")


def parse_documents(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """The content of each result of `DocumentProcessor.process_multiparts`, in order."""
    return [document_text(result) for result in results]


def document_text(result: Mapping[str, Any]) -> str:
    """The content of one result: see the module docstring for what is taken from where."""
    if not result.get("success"):
        return ""
    raw = result.get("json_response")
    if not isinstance(raw, str) or not raw:
        return ""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    return payload_text(payload, raw) if isinstance(payload, dict) else raw


def payload_text(payload: dict[str, Any], raw: str) -> str:
    """The content of a finished job's `payload` (its JSON text `raw`): see the module
    docstring for what is taken from where."""
    for extract in _EXTRACTORS:
        text = extract(payload)
        if text:
            return text
    return raw


def _extraction(payload: dict[str, Any]) -> str:
    value = payload.get("extraction_schema_json")
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value if isinstance(value, str) else ""


def _segmentation(payload: dict[str, Any]) -> str:
    value = payload.get("segmentation_results")
    return orjson.dumps(value).decode() if isinstance(value, dict | list) and value else ""


def segments_of(payload: Mapping[str, Any]) -> list[Any] | None:
    """The segments of a `/segment` job's payload as Datalab returns them, each naming its
    pages as `pages` (a list, Datalab's recipe) or `page_range` (a string, the SDK's tests);
    None when the payload has no segmentation. `segmentation_results` is an object holding
    `segments` (the recipe, the SDK's tests) or, on the SDK's docs page, the list itself."""
    results = payload.get("segmentation_results")
    if isinstance(results, dict):
        results = results.get("segments")
    return results if isinstance(results, list) else None


def segment_pages(segment: Mapping[str, Any]) -> list[int]:
    """The 0-indexed pages of one segment, whichever way it names them (`pages` or
    `page_range`, e.g. "0-2,5"); [] when it names none."""
    pages = segment.get("pages")
    if isinstance(pages, list):
        return [page for page in pages if isinstance(page, int) and not isinstance(page, bool)]
    text = segment.get("page_range")
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        spans = parse_page_range(text)
    except ValueError:
        return []
    return [page for start, end in spans for page in range(start, end + 1)]


def _json_tree(payload: dict[str, Any]) -> str:
    tree = payload.get("json")
    if not isinstance(tree, dict) or not isinstance(tree.get("children"), list):
        return ""
    return _joined(block_html(page) for page in tree["children"])


def block_html(block: Any) -> str:
    """A block's HTML with each `<content-ref>` replaced by the HTML of the child it names
    (marker's `json` pages and `chunks` blocks are such templates): the block's text, as
    `document_text` joins it and the pipeline's `page_texts` splits it by page."""
    if not isinstance(block, dict):
        return ""
    html = block.get("html")
    if not isinstance(html, str):
        return ""
    children = block.get("children") or []
    by_id = {child.get("id"): child for child in children if isinstance(child, dict)}
    return _CONTENT_REF.sub(lambda ref: block_html(by_id.get(ref.group(2))), html)


def _text_field(name: str) -> Callable[[dict[str, Any]], str]:
    def extract(payload: dict[str, Any]) -> str:
        value = payload.get(name)
        return value if isinstance(value, str) else ""

    return extract


def _chunks(payload: dict[str, Any]) -> str:
    chunks = payload.get("chunks")
    blocks = chunks.get("blocks") if isinstance(chunks, dict) else None
    if not isinstance(blocks, list):
        return ""
    return _joined(block_html(block) for block in blocks)


def _pages(payload: dict[str, Any]) -> str:
    pages = payload.get("pages")
    if not isinstance(pages, list):
        return ""
    return _joined(
        page
        if isinstance(page, str)
        else str(page.get("html") or page.get("markdown") or page.get("text") or "")
        if isinstance(page, dict)
        else ""
        for page in pages
    )


def _joined(parts: Iterable[str]) -> str:
    return "\n".join(part for part in parts if part)


_EXTRACTORS: tuple[Callable[[dict[str, Any]], str], ...] = (
    _extraction,
    _segmentation,
    _json_tree,
    _text_field("html"),
    _text_field("markdown"),
    _chunks,
    _pages,
)
