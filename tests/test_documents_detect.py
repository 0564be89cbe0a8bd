"""MIME detection: each type Datalab accepts is named and labelled from its content."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from genai_coroutines import DocumentProcessor
from genai_coroutines.documents.detect import detect
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from tests import samples
from tests.documents_support import config_for

OOXML = "application/vnd.openxmlformats-officedocument"
ODF = "application/vnd.oasis.opendocument"


def zipped(members: dict[str, str], *, mimetype: str | None = None) -> bytes:
    """A ZIP container; `mimetype` goes first and uncompressed, as ODF and EPUB require."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if mimetype is not None:
            archive.writestr(zipfile.ZipInfo("mimetype"), mimetype, zipfile.ZIP_STORED)
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def ooxml(main_part: str, main_type: str) -> bytes:
    """A minimal Office Open XML package: content types naming the main part, and the part."""
    types = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/{main_part}" ContentType="{main_type}.main+xml"/>'
        "</Types>"
    )
    return zipped({"[Content_Types].xml": types, main_part: "<root/>"})


def gif() -> bytes:
    return b"GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x00;"


def tiff() -> bytes:
    return b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 0) + b"\x00\x00\x00\x00"


def webp() -> bytes:
    chunk = b"VP8L" + struct.pack("<I", 5) + b"\x2f\x00\x00\x00\x00" + b"\x00"
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


DOCUMENTS: dict[str, tuple[bytes, str, str]] = {
    "pdf": (samples.pdf(2), "application/pdf", ".pdf"),
    "png": (samples.png(), "image/png", ".png"),
    "jpeg": (samples.jpeg(), "image/jpeg", ".jpg"),
    "gif": (gif(), "image/gif", ".gif"),
    "tiff": (tiff(), "image/tiff", ".tiff"),
    "webp": (webp(), "image/webp", ".webp"),
    "docx": (
        ooxml("word/document.xml", f"{OOXML}.wordprocessingml.document"),
        f"{OOXML}.wordprocessingml.document",
        ".docx",
    ),
    "xlsx": (
        ooxml("xl/workbook.xml", f"{OOXML}.spreadsheetml.sheet"),
        f"{OOXML}.spreadsheetml.sheet",
        ".xlsx",
    ),
    "pptx": (
        ooxml("ppt/presentation.xml", f"{OOXML}.presentationml.presentation"),
        f"{OOXML}.presentationml.presentation",
        ".pptx",
    ),
    "odt": (
        zipped({"content.xml": "<office:document-content/>"}, mimetype=f"{ODF}.text"),
        f"{ODF}.text",
        ".odt",
    ),
    "epub": (
        zipped({"META-INF/container.xml": "<container/>"}, mimetype="application/epub+zip"),
        "application/epub+zip",
        ".epub",
    ),
    "html": (b"<!DOCTYPE html><html><body><p>hi</p></body></html>", "text/html", ".html"),
}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_detects_each_accepted_type_from_content(name: str) -> None:
    data, mime, extension = DOCUMENTS[name]
    kind = detect(data)
    assert (kind.mime, kind.extension) == (mime, extension)


def test_html_after_a_byte_order_mark_and_blank_lines() -> None:
    assert detect(b"\xef\xbb\xbf\n\n  <!doctype html><html></html>").mime == "text/html"


def test_bmp_and_legacy_office_are_named_too() -> None:
    assert detect(b"BM" + bytes(60)).extension == ".bmp"
    assert detect(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)).mime == "application/msword"


def test_unknown_content_falls_back_to_the_file_name_then_octet_stream() -> None:
    assert detect(b"a,b\n1,2\n", "table.csv").mime == "text/csv"
    assert (detect(b"just words").mime, detect(b"just words").extension) == (
        "application/octet-stream",
        ".bin",
    )
    assert detect(zipped({"notes.txt": "hi"})).mime == "application/zip"


async def test_upload_parts_carry_the_detected_name_and_type(emulator: Emulator) -> None:
    config = config_for(emulator)
    batch = [data for data, _, _ in DOCUMENTS.values()]
    results = await DocumentProcessor(config).process_multiparts(batch)

    assert [r["success"] for r in results] == [True] * len(batch), [r["error"] for r in results]
    received = {
        seen["digest"]: (seen["content_type"], seen["filename"])
        for seen in emulator.stats.received
        if seen.get("status") == 200
    }
    for data, mime, extension in DOCUMENTS.values():
        assert received[digest(data)] == (mime, f"document{extension}")
