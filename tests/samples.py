"""Small, valid documents built in memory, so tests need no fixture files.

Every builder takes a `tag` that ends up in the bytes: different tags give different
digests, which is how a test tells its uploads apart in `Stats.submissions_by_digest`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import replace
from importlib import resources
from typing import Any

import pypdf

from genai_coroutines.engine import Answered, Failed, Failure, ItemEnd
from genai_coroutines.responses.prices import bill_of

FAIL_MARKER = b"%%FAIL%%"
"""Bytes the Datalab emulator treats as "this document fails to process"."""


def pdf(pages: int = 1, *, tag: str = "", compact: bool = False, extra: bytes = b"") -> bytes:
    """A well-formed PDF with `pages` pages, each showing "Page i" (and `tag`).

    `compact` writes `/Type/Page` without a space, as some producers do; `extra` is
    appended as a comment line before the trailer (e.g. `FAIL_MARKER`).
    """
    if pages < 1:
        raise ValueError("a PDF needs at least one page")
    page_type = b"/Type/Page" if compact else b"/Type /Page"
    first_page = 3
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids ["
        + b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(pages))
        + b"] /Count %d >>" % pages,
    ]
    for i in range(pages):
        text = f"Page {i} {tag}".strip().encode("latin-1")
        stream = b"BT /F1 12 Tf 72 720 Td (" + text + b") Tj ET"
        objects.append(
            b"<< "
            + page_type
            + b" /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>"
            % (first_page + 2 * i + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")

    return assemble(objects, extra)


def assemble(objects: list[bytes], extra: bytes = b"") -> bytes:
    """A PDF file of these numbered objects (1 is the catalog), with its xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    if extra:
        out += b"% " + extra + b"\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def bundle() -> bytes:
    """Globex's 2-page invoice then Initech's 3-page receipt, as one 5-page PDF."""
    writer = pypdf.PdfWriter()
    for name in ("invoice-globex.pdf", "receipt-initech.pdf"):
        writer.append(
            io.BytesIO((resources.files("genai_coroutines") / "samples" / name).read_bytes())
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def png(*, tag: str = "") -> bytes:
    """A valid 1x1 grey PNG; `tag` goes into a tEXt chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    text = chunk(b"tEXt", b"Comment\x00" + tag.encode()) if tag else b""
    pixels = zlib.compress(b"\x00\x80")
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + text
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def jpeg(*, tag: str = "") -> bytes:
    """JPEG-shaped bytes: SOI, a COM segment holding `tag`, EOI.

    Enough for anything that sniffs the magic number; no decoder will show a picture.
    """
    comment = f"genai-coroutines sample {tag}".encode()
    return b"\xff\xd8" + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + b"\xff\xd9"


def text(content: str = "plain text, not a document") -> bytes:
    """Bytes that are no document format Datalab accepts."""
    return content.encode()


def ended(
    usage: dict[str, Any] | None = None,
    *,
    model: str = "",
    tier: str | None = None,
    attempts: int = 1,
    rate_limited: int = 0,
    pages: int | None = None,
    cents: float | None = None,
    value: Any = None,
    success: bool = True,
) -> ItemEnd[Any]:
    """An item's end as a summary or a budget reads it: answered with this usage (billed as
    the Responses adapter bills it) or these pages and cents; else failed."""
    bill = bill_of(model, usage, tier)
    if pages is not None or cents is not None:
        bill = replace(bill, pages=pages, cents=cents)
    if not success:
        failure = Failure("failed", "server_error", True, status=500)
        return ItemEnd(0, Failed(failure, attempts, rate_limited), 0.0)
    return ItemEnd(0, Answered(value, attempts, rate_limited, bill), 0.0)
