"""What a document is, from its bytes: the MIME type and file extension of its upload part.

Datalab chooses how to convert a file from what it receives, so a PNG sent as
"file.bin, application/octet-stream" is at best guessed at. Signature matching is
puremagic's (a maintained, pure-Python library with a large signature table); two
things it cannot tell from a file's first and last bytes are settled here, without
signature tables of our own:

- ZIP-based formats (DOCX, XLSX, PPTX, ODT, ODS, ODP, EPUB) all begin "PK\\x03\\x04",
  and puremagic offers the Office formats side by side at equal confidence. Each of
  them names its own type inside the archive: ODF and EPUB in the `mimetype` member,
  Office Open XML as the content type of its main part in `[Content_Types].xml`
  ("...wordprocessingml.document.main+xml"). That declaration picks the candidate.
- Text formats (HTML) are matched at offset 0, so a leading BOM or blank line hides
  them; the match is retried on the text without it.

Extensions come from Python's built-in MIME table where it knows the type (".jpg",
not puremagic's first pick ".jfif"), else from puremagic; never from the host's
/etc/mime.types, so every machine names a file the same way.
"""

from __future__ import annotations

import io
import mimetypes
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import puremagic

_ZIP = b"PK\x03\x04"
_LEADING_TEXT_NOISE = b"\xef\xbb\xbf \t\r\n"
_MAIN_PART = re.compile(rb'ContentType="([^"]+)\.main\+xml"')
_DECLARATION_LIMIT = 1 << 16
"""Bytes read from a declaring member: enough for any real one, little for a zip bomb."""

_BUILTIN = mimetypes.MimeTypes(filenames=())


@dataclass(frozen=True, slots=True)
class Kind:
    mime: str
    extension: str
    """With its leading dot, e.g. ".pdf"."""


UNKNOWN = Kind("application/octet-stream", ".bin")
ZIP = Kind("application/zip", ".zip")


def detect(data: bytes, filename: str | None = None) -> Kind:
    """The type of `data`; `filename`, when known, only breaks ties between equal matches."""
    candidates = _candidates(data, filename)
    if data.startswith(_ZIP):
        declared = _declared_in_zip(data)
        if declared is None:
            return ZIP
        chosen = next((c for c in candidates if _same_type(c.mime_type, declared)), None)
        if chosen is None:
            return Kind(declared, _BUILTIN.guess_extension(declared) or ZIP.extension)
        return _kind(chosen)
    if candidates:
        return _kind(candidates[0])
    if filename:
        guessed, _ = _BUILTIN.guess_type(filename)
        if guessed:
            return Kind(guessed, _BUILTIN.guess_extension(guessed) or UNKNOWN.extension)
    return UNKNOWN


def _candidates(data: bytes, filename: str | None) -> list[Any]:
    """puremagic's matches, best first, keeping only those that name a MIME type."""
    for attempt in (data, data.lstrip(_LEADING_TEXT_NOISE)):
        if not attempt:
            continue
        try:
            matches = puremagic.magic_string(attempt, filename=filename)
        except puremagic.PureError:
            continue
        named = [match for match in matches if match.mime_type]
        if named:
            return named
    return []


def _kind(match: Any) -> Kind:
    mime: str = match.mime_type
    extension = _BUILTIN.guess_extension(mime) or str(match.extension)
    return Kind(mime, extension if extension.startswith(".") else f".{extension}")


def _same_type(candidate: str, declared: str) -> bool:
    """Equal, or a versioned spelling of it ("...macroEnabled.12" for "...macroEnabled")."""
    candidate, declared = candidate.lower(), declared.lower()
    return candidate == declared or candidate.startswith(declared + ".")


def _declared_in_zip(data: bytes) -> str | None:
    """The MIME type a ZIP-based document declares inside itself, if it does."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if "mimetype" in names:
                with archive.open("mimetype") as member:
                    return member.read(_DECLARATION_LIMIT).decode("ascii").strip() or None
            if "[Content_Types].xml" in names:
                with archive.open("[Content_Types].xml") as member:
                    found = _MAIN_PART.search(member.read(_DECLARATION_LIMIT))
                return found.group(1).decode("ascii") if found else None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError, OSError, EOFError):
        return None
    return None
