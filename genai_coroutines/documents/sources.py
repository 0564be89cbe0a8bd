"""Where a document comes from, and reading it only when its turn comes.

A batch may name 10,000 files on disk; holding them all in memory before the first
upload would be the first thing to fail. Each input becomes a `Source` that knows how
to produce its `Upload` (bytes, file name, MIME type, page count) but does nothing
until `load()` is awaited, which `DocumentProcessor` does when a concurrency slot
frees. Reading and sniffing happen on a worker thread, so a 200 MB PDF does not
stall every other request while its pages are counted.

Inputs: bytes-like objects, paths (`str` or `os.PathLike`), open binary files and
http(s) URLs (a `str` starting with "http://" or "https://"), which Datalab fetches
itself (`file_url`), so they are never downloaded here.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Union
from urllib.parse import urlsplit, urlunsplit

from ..pdfpages import count_pdf_pages
from .detect import detect

DocumentInput = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", BinaryIO]
"""Anything `DocumentProcessor.process` accepts as one document."""


@dataclass(frozen=True, slots=True)
class Upload:
    """One document ready to send: bytes with a name and type, or a URL for Datalab to fetch."""

    data: bytes | None
    filename: str | None
    content_type: str | None
    url: str | None = None
    pages: int | None = None
    """The document's own page count, when it can be known without Datalab (PDFs, images)."""


class SourceError(Exception):
    """A document that could not be read (missing file, closed handle, empty content)."""


class Source(Protocol):
    @property
    def label(self) -> str:
        """How logs name this document: a file name or a URL without its query, never bytes."""

    async def load(self) -> Upload: ...


def describe(data: bytes, name: str | None = None) -> Upload:
    """Name, type and page count of a document's bytes (run on a worker thread)."""
    if not data:
        raise SourceError("the document is empty")
    kind = detect(data, name)
    if kind.mime == "application/pdf":
        pages = count_pdf_pages(data)
    elif kind.mime.startswith("image/") and kind.mime != "image/tiff":  # TIFFs may hold many
        pages = 1
    else:
        pages = None
    if not name:
        name = f"document{kind.extension}"
    elif not os.path.splitext(name)[1]:
        name += kind.extension  # Datalab may go by the extension; "scan" becomes "scan.png"
    return Upload(data, name, kind.mime, pages=pages)


@dataclass(frozen=True, slots=True)
class BytesSource:
    data: bytes
    label = "bytes"

    async def load(self) -> Upload:
        return await asyncio.to_thread(describe, self.data)


@dataclass(frozen=True, slots=True)
class PathSource:
    path: Path

    @property
    def label(self) -> str:
        return self.path.name

    async def load(self) -> Upload:
        return await asyncio.to_thread(self._read)

    def _read(self) -> Upload:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return describe(data, self.path.name)


@dataclass(frozen=True, slots=True)
class FileSource:
    file: BinaryIO

    @property
    def label(self) -> str:
        return _file_name(self.file) or "file"

    async def load(self) -> Upload:
        return await asyncio.to_thread(self._read)

    def _read(self) -> Upload:
        try:
            data = self.file.read()
        except (OSError, ValueError) as exc:  # ValueError: I/O operation on closed file
            raise SourceError(f"cannot read {self.label}: {exc}") from None
        if not isinstance(data, bytes):
            raise SourceError(f"{self.label} is open in text mode; open it with 'rb'")
        return describe(data, _file_name(self.file))


@dataclass(frozen=True, slots=True)
class UrlSource:
    url: str

    @property
    def label(self) -> str:
        """Without query or fragment: signed URLs carry their credentials there."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    async def load(self) -> Upload:
        return Upload(None, None, None, url=self.url)


def as_source(item: object, index: int) -> Source:
    """The `Source` for one input; ValueError naming `index` for anything else."""
    if isinstance(item, bytes | bytearray | memoryview):
        return BytesSource(bytes(item))
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        return UrlSource(item)
    if isinstance(item, str | os.PathLike):
        return PathSource(Path(item))
    if hasattr(item, "read"):
        return FileSource(item)  # type: ignore[arg-type]  # duck-typed: anything with read()
    raise ValueError(
        f"inputs[{index}] is {type(item).__name__}: expected bytes, a path, "
        "an open binary file or an http(s) URL"
    )


def _file_name(file: BinaryIO) -> str | None:
    name = getattr(file, "name", None)
    return os.path.basename(name) if isinstance(name, str) and name else None
