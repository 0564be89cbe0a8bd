"""How the journal stores a result: JSON, deflated against the journal's own dictionary.

A result dict of the Responses API is about 1.7 KB of JSON for a one-line answer (the raw
response is most of it, and it is nearly the same text every time: the same keys, the
same settings, an id, a number or two, the answer). Deflated alone it keeps 45% of that;
deflated against a preset dictionary holding one earlier record (zlib's `zdict`) it keeps
8% (about 135 bytes), because what every record repeats is then stored once, in the
dictionary. Measured on 20,000 such records (`benchmarks/million.py` writes them), per
record: zlib level 6 alone 738 bytes; with the dictionary 135 bytes, 15 us to compress
and 4 us to inflate; zstd (the `zstandard` package) alone 777 bytes, with the same
dictionary 127 bytes. zstd saves 8 bytes a record over the standard library, not worth a
dependency.

The dictionary is the journal's first record of at least `DICTIONARY_MIN` bytes, kept in
its `meta` table (`dictionary`); records written before it is chosen stay plain JSON.
So it is whatever this journal's API answers, never a table of one provider's keys.

A stored record is either:

- plain JSON (starts with `{`): every record a journal held before this encoding, and
  the small ones written before the dictionary was chosen;
- `DEFLATED` then raw deflate (`wbits=-15`) of the JSON against the dictionary.

Anything else is unreadable (a newer encoding, bit rot), which the journal treats as
an unfinished item (`Journal.load`).
"""

from __future__ import annotations

import sqlite3
import zlib
from typing import Any

import orjson

DEFLATED = b"\x01"
DICTIONARY_MIN = 256
"""A record this large (bytes of JSON) or larger may become the journal's dictionary."""
DICTIONARY_MAX = 32 * 1024
"""deflate looks back this far: a longer record gives its head and tail."""
LEVEL = 6


class RecordError(ValueError):
    """A stored record that cannot be read back (its reason is the message)."""


class Records:
    """The encoding of one journal's records (see the module docstring)."""

    __slots__ = ("dictionary",)

    def __init__(self, dictionary: bytes | None) -> None:
        self.dictionary = dictionary

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

    def encode(self, data: bytes) -> bytes:
        """A record's JSON as stored."""
        if self.dictionary is None:
            return data
        packer = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, zdict=self.dictionary)
        return DEFLATED + packer.compress(data) + packer.flush()

    def decode(self, blob: bytes | str) -> Any:
        """A stored record's JSON value; `RecordError` saying why it cannot be read."""
        if blob[:1] == DEFLATED and isinstance(blob, bytes):
            if self.dictionary is None:
                raise RecordError("deflated, but the journal holds no dictionary")
            # One `decompress` of the whole stream gives all of it: no `flush` and no
            # joining of its output (a replay inflates every record it yields).
            unpacker = zlib.decompressobj(-15, zdict=self.dictionary)
            try:
                blob = unpacker.decompress(blob[1:])
            except zlib.error as exc:
                raise RecordError(f"not deflate ({exc})") from None
            if not unpacker.eof:
                raise RecordError("deflate cut short")
        try:
            return orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"not JSON ({exc})") from None
