"""How the journal stores a result: JSON, compressed against the journal's own dictionary.

A result dict of the Responses API is about 1.7 KB of JSON for a one-line answer (the raw
response is most of it, and it is nearly the same text every time: the same keys, the
same settings, an id, a number or two, the answer). Compressed alone it keeps 45% of that;
compressed against a preset dictionary holding one earlier record it keeps 8% (about 130
bytes), because what every record repeats is then stored once, in the dictionary.

zstd (the `zstandard` package), not the standard library's deflate, because a rerun
decompresses every record it replays. Measured on 20,000 such records
(`benchmarks/million.py` writes them) with the same dictionary, per record:

| encoding | bytes | compress | decompress |
|---|---|---|---|
| deflate, level 6 | 135 | 6.9 us | 2.8 us |
| zstd, level 3 | 124 | 4.8 us | 1.5 us |
| zstd, level -1 (what is written) | 165 | 2.0 us | 0.45 us |

zstd's negative levels store literals as they are, with no Huffman table for each frame
to build on the way back, which is most of what decompressing a record this small
costs. 41 bytes a record more buys a microsecond off each replayed item (about a tenth
of a replay's time) and about five off compressing each journaled one. A large record (a document's
Markdown) is another matter: there the table is paid once for many bytes, and literals
left raw cost a third more space than deflate took (a 200 KB Markdown result: 90 KB
at level -1, 70 KB deflated, 59 KB at level 3, each decompressed in about 140 us). So a
record of `SMALL` bytes or more is written at level 3.

The dictionary is the journal's first record of at least `DICTIONARY_MIN` bytes, kept in
its `meta` table (`dictionary`); records written before it is chosen stay plain JSON.
So it is whatever this journal's API answers, never a table of one provider's keys.

A stored record is either:

- plain JSON (starts with `{`): every record a journal held before any encoding, and
  the small ones written before the dictionary was chosen;
- `DEFLATED` then raw deflate (`wbits=-15`) of the JSON against the dictionary: what
  earlier versions wrote, still read;
- `ZSTD` then a magicless zstd frame of the JSON against the dictionary (as raw content).

Anything else is unreadable (a newer encoding, bit rot), which the journal treats as
an unfinished item (`Journal.load`).
"""

from __future__ import annotations

import sqlite3
import zlib
from typing import Any

import orjson
import zstandard

DEFLATED = b"\x01"
ZSTD = b"\x02"
DICTIONARY_MIN = 256
"""A record this large (bytes of JSON) or larger may become the journal's dictionary."""
DICTIONARY_MAX = 32 * 1024
"""A longer record gives its head and tail (deflate, which earlier versions wrote with, looks
back no further)."""
SMALL = 4096
"""Records shorter than this (JSON bytes) are written at `FAST`, longer ones at `LEVEL`."""
FAST = -1
"""zstd's level for small records (see the module docstring; levels -2 to -5 save no time
and take more bytes)."""
LEVEL = 3
"""zstd's level for larger records (levels 6 to 19 save a few percent at twice the time)."""
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS
"""Frames without zstd's 4-byte magic number: `ZSTD` says what the record is."""


class RecordError(ValueError):
    """A stored record that cannot be read back (its reason is the message)."""


class Records:
    """The encoding of one journal's records (see the module docstring)."""

    __slots__ = ("dictionary", "_fast", "_compressor", "_decompressor")

    def __init__(self, dictionary: bytes | None) -> None:
        self.dictionary: bytes | None = None
        self._fast: zstandard.ZstdCompressor | None = None
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None
        if dictionary is not None:
            self.adopt(dictionary)

    @classmethod
    def of(cls, db: sqlite3.Connection) -> Records:
        """The encoding of the journal open on `db` (read-only is enough)."""
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'dictionary'").fetchone()
        except sqlite3.OperationalError:  # no meta table: a journal of nothing yet
            row = None
        return cls(row[0] if row is not None and isinstance(row[0], bytes) else None)

    def choose(self, data: bytes) -> bytes | None:
        """The dictionary `data` (a record's JSON) becomes, when none is chosen yet and it
        is large enough; the caller stores it (`meta`) with the record, then `adopt`s it."""
        if self.dictionary is not None or len(data) < DICTIONARY_MIN:
            return None
        if len(data) <= DICTIONARY_MAX:
            return data
        half = DICTIONARY_MAX // 2
        return data[:half] + data[-half:]

    def adopt(self, dictionary: bytes | None) -> None:
        """Encode with `dictionary` (`choose`'s, once stored) from now on; a journal keeps
        the dictionary it has, so a second one (None included) changes nothing."""
        if self.dictionary is not None or dictionary is None:
            return
        shared = zstandard.ZstdCompressionDict(dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        self._fast, self._compressor = (
            zstandard.ZstdCompressor(
                dict_data=shared,
                compression_params=zstandard.ZstdCompressionParameters.from_level(
                    level, format=_FORMAT, write_content_size=True, write_dict_id=False
                ),
            )
            for level in (FAST, LEVEL)
        )
        self._decompressor = zstandard.ZstdDecompressor(dict_data=shared, format=_FORMAT)
        self.dictionary = dictionary

    def encode(self, data: bytes) -> bytes:
        """A record's JSON as stored."""
        packer = self._fast if len(data) < SMALL else self._compressor
        if packer is None:
            return data
        return ZSTD + packer.compress(data)

    def decode(self, blob: bytes | str) -> Any:
        """A stored record's JSON value; `RecordError` saying why it cannot be read."""
        if isinstance(blob, bytes):
            kind = blob[:1]
            if kind == ZSTD:
                if self._decompressor is None:
                    raise RecordError("compressed, but the journal holds no dictionary")
                try:
                    blob = self._decompressor.decompress(blob[1:])
                except zstandard.ZstdError as exc:
                    raise RecordError(f"not zstd ({exc})") from None
            elif kind == DEFLATED:
                blob = self._inflated(blob)
        try:
            return orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"not JSON ({exc})") from None

    def _inflated(self, blob: bytes) -> bytes:
        """A record an earlier version deflated."""
        if self.dictionary is None:
            raise RecordError("deflated, but the journal holds no dictionary")
        # One `decompress` of the whole stream gives all of it: no `flush` and no
        # joining of its output.
        unpacker = zlib.decompressobj(-15, zdict=self.dictionary)
        try:
            data = unpacker.decompress(blob[1:])
        except zlib.error as exc:
            raise RecordError(f"not deflate ({exc})") from None
        if not unpacker.eof:
            raise RecordError("deflate cut short")
        return data
