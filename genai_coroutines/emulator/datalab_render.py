"""What a Datalab job reads from its upload, and the body of the finished job.

Content: a PDF's own text layer, read with pypdf, page by page; HTML and CSV uploads
as their text. What has no text to read (a scan, an image, an office file, a
`file_url` the emulator does not fetch) gets one marked placeholder per page,
`[emulated OCR: no text layer] Page 3 of report.pdf, digest ab12...`, so a test can
still match every result to its input. The page count comes from pypdf too (from
`pdfpages.count_pdf_pages` only when pypdf cannot read the file), so the emulator
does not share the client's page arithmetic and cannot agree with its mistakes.

Shapes follow marker (`marker/renderers/{markdown,html,json,chunk}.py` in
datalab-to/marker): each line of text is a Text block; JSON pages hold
`<content-ref>` placeholders and the text lives in their children; paginated
markdown starts each page with `{N}` and 48 dashes; paginated HTML wraps pages in
`<div class='page' data-page-id='N'>`. A page without a text layer is a scan, so the
first such page also holds a Picture (unless `disable_image_extraction`).
"""

from __future__ import annotations

import base64
import html
import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import orjson

from ..pdfpages import count_pdf_pages, parse_page_range
from . import schema_fill
from .datalab_form import Options, ReceivedUpload, segment_names

PAGE_SEPARATOR = "-" * 48
"""marker's `MarkdownRenderer.page_separator`."""

PARSE_QUALITY_SCORE = 4.5
VERSIONS = {"marker": "emulator"}
NO_TEXT = "no text layer"
NOT_FETCHED = "file_url not fetched"
MAX_PAGE_CHARS = 100_000
"""A page's text beyond this is dropped: jobs keep their text for an hour."""

_HTML_HEAD = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"/></head><body>'
_PAGE_BOX = [0.0, 0.0, 612.0, 792.0]
_PAGE_POLYGON = [[0.0, 0.0], [612.0, 0.0], [612.0, 792.0], [0.0, 792.0]]
_LINE_HEIGHT = 24.0
_TEXT_TYPES = frozenset({"text/html", "text/csv"})


def _tiny_png() -> str:
    """A valid 1x1 grey PNG, base64: the picture every scanned page holds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    return base64.b64encode(raw + chunk(b"IEND", b"")).decode()


_PICTURE = _tiny_png()


@dataclass(frozen=True, slots=True)
class Content:
    """What a job processes: which pages of how many, and the text of each (None: no text)."""

    filename: str
    digest: str
    total_pages: int
    pages: tuple[int, ...]
    texts: tuple[str | None, ...]
    missing: str = NO_TEXT
    """Why a page without text has none, for its placeholder."""

    def text(self, index: int) -> str:
        """The text of the `index`-th processed page, or its placeholder."""
        text = self.texts[index]
        if text is not None:
            return text
        page = self.pages[index]
        where = f"Page {page} of {self.filename}, digest {self.digest}."
        return f"[emulated OCR: {self.missing}] {where}"

    def full_text(self) -> str:
        return "\n\n".join(self.text(i) for i in range(len(self.pages)))

    def select(self, options: Options) -> Content:
        """The processed pages of this content that `options` selects (an extract from a
        checkpoint reads what the conversion read)."""
        wanted = set(selected_pages(options, self.total_pages))
        kept = [i for i, page in enumerate(self.pages) if page in wanted]
        if options.page_range is None and options.max_pages is not None:
            kept = kept[: options.max_pages]
        return Content(
            filename=self.filename,
            digest=self.digest,
            total_pages=self.total_pages,
            pages=tuple(self.pages[i] for i in kept),
            texts=tuple(self.texts[i] for i in kept),
            missing=self.missing,
        )


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


def read(upload: ReceivedUpload, options: Options, digest: str) -> Content:
    """The pages `options` selects from `upload` and their text. Blocking: PDFs are parsed."""
    filename = upload.filename or upload.file_url or "document"
    data = upload.data
    if data is None:
        return _content(filename, digest, 1, options, lambda _: None, NOT_FETCHED)
    if data.find(b"%PDF-", 0, 1024) >= 0:
        return _read_pdf(data, filename, digest, options)
    text = _plain_text(data, upload)
    return _content(filename, digest, 1, options, lambda _: text)


def _content(
    filename: str,
    digest: str,
    total: int,
    options: Options,
    text_of: Callable[[int], str | None],
    missing: str = NO_TEXT,
) -> Content:
    pages = selected_pages(options, total)
    texts = tuple(_clean(text_of(page)) for page in pages)
    return Content(filename, digest, total, tuple(pages), texts, missing)


def _read_pdf(data: bytes, filename: str, digest: str, options: Options) -> Content:
    import pypdf  # imported here: only the emulator needs it

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        total = len(reader.pages)
    except Exception:  # a damaged PDF: count what can be seen, read nothing
        return _content(filename, digest, count_pdf_pages(data) or 1, options, lambda _: None)

    def text_of(page: int) -> str | None:
        try:
            return str(reader.pages[page].extract_text())
        except Exception:  # one unreadable page is a scan, not a failed job
            return None

    return _content(filename, digest, max(total, 1), options, text_of if total else lambda _: None)


def _clean(text: str | None) -> str | None:
    """Text with its lines trimmed and blank ones dropped; None when nothing is left."""
    if text is None:
        return None
    lines = [" ".join(line.split()) for line in text[:MAX_PAGE_CHARS].splitlines()]
    kept = "\n".join(line for line in lines if line)
    return kept or None


def _plain_text(data: bytes, upload: ReceivedUpload) -> str | None:
    """The text of an HTML or CSV upload; None for binary formats (images, office files)."""
    name = (upload.filename or "").lower()
    is_text = upload.content_type in _TEXT_TYPES or name.endswith((".html", ".htm", ".csv"))
    if not is_text:
        return None
    text = data[: MAX_PAGE_CHARS * 4].decode("utf-8", errors="replace")
    if "html" in (upload.content_type or "") or name.endswith((".html", ".htm")):
        return _HTMLText.of(text)
    return text


class _HTMLText(HTMLParser):
    """The visible text of an HTML page, one line per block element."""

    _BREAKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    @classmethod
    def of(cls, text: str) -> str:
        parser = cls()
        parser.feed(text)
        parser.close()
        return "".join(parser.parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


# -- the finished job -----------------------------------------------------------------


def failed_payload(error: str) -> dict[str, Any]:
    return {"status": "failed", "success": False, "error": error}


def complete_payload(
    options: Options,
    content: Content,
    *,
    runtime: float,
    cost_breakdown: dict[str, Any],
    segment_pages: str = "pages",
    checkpoint_id: str | None = None,
) -> dict[str, Any]:
    """Everything `GET request_check_url` returns once the job is done. `/segment` answers
    its segments, not the document's text."""
    doc = _Document(options, content)
    payload: dict[str, Any] = {"status": "complete", "success": True, "error": None}
    if options.endpoint != "segment":
        payload["output_format"] = options.output_format
        renderers = {
            "markdown": doc.markdown, "html": doc.html, "json": doc.json, "chunks": doc.chunks
        }  # fmt: skip
        for fmt in options.formats:
            payload[fmt] = renderers[fmt]()
        payload.update(images=doc.images(), metadata=doc.metadata())
    if options.page_schema is not None:
        payload["extraction_schema_json"] = orjson.dumps(extraction(options, content)).decode()
    if options.segmentation_schema is not None:
        payload["segmentation_results"] = segmentation(options, content, segment_pages)
    payload.update(
        page_count=len(content.pages),
        parse_quality_score=PARSE_QUALITY_SCORE,
        runtime=round(runtime, 3),
        cost_breakdown=cost_breakdown,
        versions=VERSIONS,
    )
    if checkpoint_id is not None:
        payload["checkpoint_id"] = checkpoint_id
    return payload


def extraction(options: Options, content: Content) -> Any:
    """`page_schema` filled from the pages' text; what the text lacks is generated, with
    strings naming the upload (`report.pdf [digest]`)."""
    label = f"{content.filename} [{content.digest}]"
    return schema_fill.instance(
        options.page_schema, random.Random(label), [label], text=content.full_text()
    )


def segmentation(options: Options, content: Content, spelling: str) -> dict[str, Any]:
    """The document cut into runs of pages by the schema's segment names: a page whose text
    names a segment (case-blind; the earliest name on the page wins) starts a run of it, a
    page naming none continues the run before it (the first such page: the first segment).
    `spelling` "pages" lists each run's pages, "page_range" writes them as Datalab's page
    range ("0-2,5")."""
    assert options.segmentation_schema is not None
    names = segment_names(options.segmentation_schema)
    runs: list[tuple[str, list[int], bool]] = []
    for index, page in enumerate(content.pages):
        text = content.text(index).lower()
        found = [(text.find(name.lower()), name) for name in names if name.lower() in text]
        if found:
            runs.append((min(found)[1], [page], True))
        elif runs:
            runs[-1][1].append(page)
        else:
            runs.append((names[0], [page], False))
    segments = []
    for name, pages, named in runs:
        where: Any = pages if spelling == "pages" else _page_range(pages)
        segments.append({"name": name, spelling: where, "confidence": "high" if named else "low"})
    metadata = {"total_pages": len(content.pages), "segmentation_method": "schema"}
    return {"segments": segments, "metadata": metadata}


def _page_range(pages: list[int]) -> str:
    """Pages as Datalab writes a page range: `[0, 1, 2, 5]` is "0-2,5"."""
    spans: list[list[int]] = []
    for page in pages:
        if spans and page == spans[-1][1] + 1:
            spans[-1][1] = page
        else:
            spans.append([page, page])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


class _Document:
    """The blocks of each processed page: its lines of text, or a placeholder and a Picture."""

    def __init__(self, options: Options, content: Content) -> None:
        self.options = options
        self.content = content
        self.pages = content.pages
        scans = [i for i, text in enumerate(content.texts) if text is None]
        self.picture_index = None if options.disable_image_extraction or not scans else scans[0]

    def lines(self, index: int) -> list[str]:
        return self.content.text(index).split("\n")

    def picture_name(self, page: int) -> str:
        return f"_page_{page}_Picture_1.png"

    def _attr(self, block_id: str) -> str:
        return f' data-block-id="{block_id}"' if self.options.add_block_ids else ""

    def page_html(self, index: int) -> str:
        page = self.pages[index]
        body = "".join(
            f"<p{self._attr(f'/page/{page}/Text/{n}')}>{html.escape(line)}</p>"
            for n, line in enumerate(self.lines(index))
        )
        if index == self.picture_index:
            picture_id = f"/page/{page}/Picture/{len(self.lines(index))}"
            body += f"<p{self._attr(picture_id)}><img src='{self.picture_name(page)}'/></p>"
        return body

    def page_markdown(self, index: int) -> str:
        efficient = self.options.token_efficient_markdown
        text = ("\n" if efficient else "\n\n").join(self.lines(index))
        if index == self.picture_index and not efficient:
            text += f"\n\n![]({self.picture_name(self.pages[index])})"
        return text

    def markdown(self) -> str:
        parts = []
        for index, page in enumerate(self.pages):
            text = self.page_markdown(index)
            if self.options.paginate:
                text = f"\n\n{{{page}}}{PAGE_SEPARATOR}\n\n{text}"
            parts.append(text)
        return "".join(parts) if self.options.paginate else "\n\n".join(parts)

    def html(self) -> str:
        pages = [
            f"<div class='page' data-page-id='{page}'>{self.page_html(index)}</div>"
            if self.options.paginate
            else self.page_html(index)
            for index, page in enumerate(self.pages)
        ]
        body = "\n".join(pages)
        return f"{_HTML_HEAD}\n{body}\n</body></html>"

    def blocks(self, index: int) -> list[dict[str, Any]]:
        """The leaf blocks of a page, as marker's `JSONBlockOutput`, laid out top to bottom."""
        page = self.pages[index]
        leaves = []
        lines = self.lines(index)
        for n, line in enumerate(lines):
            leaf = _block(f"/page/{page}/Text/{n}", "Text", f"<p>{html.escape(line)}</p>", n)
            if self.options.include_markdown_in_chunks:
                leaf["markdown"] = line
            leaves.append(leaf)
        if index == self.picture_index:
            name = self.picture_name(page)
            picture = _block(f"/page/{page}/Picture/{len(lines)}", "Picture", "", len(lines))
            picture["images"] = {name: _PICTURE}
            if self.options.include_markdown_in_chunks:
                picture["markdown"] = f"![]({name})"
            leaves.append(picture)
        return leaves

    def json(self) -> dict[str, Any]:
        children = []
        for index, page in enumerate(self.pages):
            leaves = self.blocks(index)
            refs = "".join(f"<content-ref src='{leaf['id']}'></content-ref>" for leaf in leaves)
            block = _block(f"/page/{page}/Page/{page}", "Page", refs, None)
            block["children"] = leaves
            children.append(block)
        return {"block_type": "Document", "children": children, "metadata": self.metadata()}

    def chunks(self) -> dict[str, Any]:
        blocks = []
        for index, page in enumerate(self.pages):
            for leaf in self.blocks(index):
                flat = {key: value for key, value in leaf.items() if key != "children"}
                blocks.append({**flat, "page": page})
        page_info = {
            str(page): {"bbox": _PAGE_BOX, "polygon": _PAGE_POLYGON} for page in self.pages
        }
        return {"blocks": blocks, "page_info": page_info, "metadata": self.metadata()}

    def images(self) -> dict[str, str]:
        if self.picture_index is None:
            return {}
        return {self.picture_name(self.pages[self.picture_index]): _PICTURE}

    def metadata(self) -> dict[str, Any]:
        stats = []
        for index, page in enumerate(self.pages):
            counts: list[list[Any]] = [["Page", 1], ["Text", len(self.lines(index))]]
            if index == self.picture_index:
                counts.append(["Picture", 1])
            method = "pdftext" if self.content.texts[index] is not None else "surya"
            stats.append(
                {"page_id": page, "text_extraction_method": method, "block_counts": counts}
            )
        return {"table_of_contents": [], "page_stats": stats}


def _block(block_id: str, kind: str, body: str, line: int | None) -> dict[str, Any]:
    """A block; `line` places it on the page (None: the whole page)."""
    if line is None:
        bbox, polygon = _PAGE_BOX, _PAGE_POLYGON
    else:
        top = 72.0 + line * _LINE_HEIGHT
        bottom = top + _LINE_HEIGHT
        bbox = [72.0, top, 540.0, bottom]
        polygon = [[72.0, top], [540.0, top], [540.0, bottom], [72.0, bottom]]
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
