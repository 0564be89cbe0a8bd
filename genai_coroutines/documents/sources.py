"""Where a document comes from, and reading it only when its turn comes.

A batch may name 10,000 files on disk; holding them all in memory before the first
upload would be the first thing to fail. Each input becomes a `Source` that knows how
to produce its `Upload` (bytes, file name, MIME type, page count) but does nothing
until `load()` is awaited, which `DocumentProcessor` does when a concurrency slot
frees. Reading and sniffing happen on a worker thread, so a 200 MB PDF does not
stall every other request while its pages are counted.

Inputs: bytes-like objects, paths (`str` or `os.PathLike`), open binary files (anything
with `read()`: one that takes no size is read whole, then bounded) and
http(s) URLs (a `str` starting with "http://" or "https://"), which Datalab fetches
itself (`file_url`), so they are never downloaded here. A `str` that starts like a URL
(`scheme://`) must be an http(s) URL with a host: "http://", "http:///path" or "ftp://x"
is a `ValueError` naming its index, not a request Datalab answers with an error (or a
path that cannot exist); a file whose name really looks so is passed as a `Path`.

Whatever is wrong with one input ends as that document's `SourceError` from `load()`,
never the batch's: a path with a NUL byte, something other than a regular file (a
directory, `/dev/zero`, a FIFO: checked with `stat` before opening, and opened
non-blocking, so a FIFO without a writer cannot hang the batch), a file object whose
`read` fails or is not a method, and anything larger than Datalab's documented 200 MB
limit (checked from the file's size, so it is never read whole).
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Union
from urllib.parse import urlsplit, urlunsplit

from .. import validation as check
from ..pdfpages import count_pdf_pages
from .detect import detect

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
"""Datalab refuses files over 200 MB (its limits page); read as MiB, the larger reading,
so no file Datalab would take is refused here."""

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
    if len(data) > MAX_UPLOAD_BYTES:
        raise SourceError(_too_large(len(data)))
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
            data = _read_regular_file(self.path)
        except ValueError:  # os.stat and open refuse a NUL byte this way
            shown = repr(str(self.path))
            raise SourceError(f"cannot read {shown}: the path contains a NUL byte") from None
        except OSError as exc:
            raise SourceError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return describe(data, self.path.name)


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path` if it is a regular file of at most `MAX_UPLOAD_BYTES`.

    Checked with `stat` before opening, and again on the open descriptor (the path
    may have been replaced in between): opening a FIFO without a writer would block
    forever, and reading a device like /dev/zero would never end. O_NONBLOCK makes
    even that race's open return at once.
    """
    _check_regular(path, os.stat(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", closefd=True) as handle:
        info = os.fstat(fd)
        _check_regular(path, info)
        data = handle.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:  # grew after the stat
        raise SourceError(f"{path}: {_too_large(len(data))}")
    return data


def _check_regular(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path} is not a regular file (it is {_file_kind(info.st_mode)})")
    if info.st_size > MAX_UPLOAD_BYTES:
        raise SourceError(f"{path}: {_too_large(info.st_size)}")


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def _too_large(size: int) -> str:
    return (
        f"the document is {size / 1024 / 1024:,.1f} MB; Datalab takes at most "
        f"{MAX_UPLOAD_BYTES // 1024 // 1024} MB per file (split it, or send a page_range of it)"
    )


@dataclass(frozen=True, slots=True)
class FileSource:
    file: BinaryIO

    @property
    def label(self) -> str:
        return _file_name(self.file) or "file"

    async def load(self) -> Upload:
        return await asyncio.to_thread(self._read)

    def _read(self) -> Upload:
        read = getattr(self.file, "read", None)
        if not callable(read):
            raise SourceError(f"{self.label}: its 'read' attribute is not a method")
        _check_file_object(self.file, self.label)
        try:
            try:
                # One byte more than Datalab takes: a larger file (or an endless stream) is
                # refused without being read whole.
                data = read(MAX_UPLOAD_BYTES + 1)
            except TypeError:  # a read() without a size ("anything with read()"): read it all
                data = read()
        except Exception as exc:  # a file object is user code: whatever it raises is its own
            reason = str(exc) or type(exc).__name__
            raise SourceError(f"cannot read {self.label}: {reason}") from None
        if isinstance(data, str):
            raise SourceError(f"{self.label} is open in text mode; open it with 'rb'")
        if not isinstance(data, bytes | bytearray | memoryview):
            kind = type(data).__name__
            raise SourceError(f"{self.label}: read() returned {kind}, not bytes")
        return describe(bytes(data), _file_name(self.file))


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


_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""A URL's scheme and `//` (RFC 3986), which no ordinary path starts with."""


def as_source(item: object, index: int) -> Source:
    """The `Source` for one input; TypeError naming `index` for anything else, ValueError
    for a `str` that starts like a URL but is no http(s) URL with a host."""
    if isinstance(item, bytes | bytearray | memoryview):
        return BytesSource(bytes(item))
    if isinstance(item, str) and _URL_START.match(item):
        check.http_url(f"inputs[{index}]", item)
        return UrlSource(item)
    if isinstance(item, str | os.PathLike):
        return PathSource(Path(item))
    if hasattr(item, "read"):
        return FileSource(item)  # type: ignore[arg-type]  # duck-typed: anything with read()
    raise TypeError(
        f"inputs[{index}] is {type(item).__name__}: expected bytes, a path, "
        "an open binary file or an http(s) URL"
    )


def _check_file_object(file: BinaryIO, label: str) -> None:
    """Refuse, from its descriptor, an open file too large or one that never ends.

    Pipes and sockets pass (a PDF may come down stdin); a device like /dev/zero or a
    terminal does not. Objects without a descriptor (BytesIO...) are only bounded by
    the read itself.
    """
    try:
        info = os.fstat(file.fileno())
        position = file.tell() if stat.S_ISREG(info.st_mode) else 0
    except Exception:  # no descriptor, or not seekable: nothing to check beforehand
        return
    if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) or stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{label} is not a regular file (it is {_file_kind(info.st_mode)})")
    if stat.S_ISREG(info.st_mode) and info.st_size - position > MAX_UPLOAD_BYTES:
        raise SourceError(f"{label}: {_too_large(info.st_size - position)}")


def _file_name(file: BinaryIO) -> str | None:
    name = getattr(file, "name", None)
    return os.path.basename(name) if isinstance(name, str) and name else None
