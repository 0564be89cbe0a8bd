"""`InputScan`: a journal's input digests, read one window ahead on a thread of their own.

A rerun asks `Journal.input_digest` for every item in input order: sampled in a rerun of a
finished 1,000,000-item journal, the scan's query was 12% of the samples, on the thread that
also decodes, revives and yields every record. It is one SQLite query per window of
`SCAN_ROWS` indices that needs no Python while it runs: SQLite evaluates it whole inside
one `sqlite3_step`, which the `sqlite3` module calls without the GIL. So it runs on a reader
thread, with its own read-only connection, one window ahead of the workers, on another core
when there is one: the event loop's thread only decodes each window's hex and slices it. (A
query that called into Python for every row, as the record's CRC-32 once did, would take
the GIL back for each and gain nothing here.)

A window is `SCAN_ROWS` slots of `INPUT_DIGEST` bytes, by index: an answer's input digest,
or zeros for an index with none (no row, not an answer, or a row rewritten by a version
that knows nothing of input digests; see `Journal.input_digest`).
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

SCAN_ROWS = 4096
"""Indices whose input digests are read in one query."""
INPUT_DIGEST = 16
"""Bytes of an `Adapter.input_digest`."""
TIED = 8
"""Bytes of its request digest that the journal keeps after an input digest: a row
rewritten by a version that knows nothing of input digests (its `digest` replaced, its
`input_digest` left) no longer matches by it (see `Journal.input_digest`)."""
NONE = bytes(INPUT_DIGEST)
"""A window's slot of an index with no input digest."""

_SCAN = (
    "WITH RECURSIVE wanted(idx) AS (SELECT ? UNION ALL SELECT idx + 1 FROM wanted"
    " WHERE idx + 1 < ?)"
    f" SELECT group_concat(coalesce((SELECT hex(substr(input_digest, 1, {INPUT_DIGEST}))"
    " FROM items WHERE items.idx = wanted.idx AND input_digest IS NOT NULL"
    f" AND answer_crc >= 0 AND substr(input_digest, {INPUT_DIGEST + 1}) = substr(digest, 1,"
    f" {TIED})), '{NONE.hex()}'), '') FROM wanted"
)
"""A window's input digests in one value (hex: `group_concat` makes text), slot by slot."""


class InputScan:
    """Windows of a journal's input digests, each read while the one before is in use."""

    __slots__ = ("_path", "_thread", "_db", "_ahead")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="journal-scan")
        self._db: sqlite3.Connection | None = None
        """The reader thread's connection (used by that thread alone)."""
        self._ahead: tuple[int, Future[str]] | None = None
        """The window being read ahead: its first index, and its hex."""

    def window(self, first: int) -> bytearray:
        """The slots of the indices `[first, first + SCAN_ROWS)`; the next window is read
        meanwhile. Raises `sqlite3.DatabaseError` when the file cannot be read."""
        ahead = self._ahead
        if ahead is not None and ahead[0] == first:
            reading = ahead[1]
        else:
            reading = self._thread.submit(self._read, first)
        following = first + SCAN_ROWS
        self._ahead = (following, self._thread.submit(self._read, following))
        return bytearray.fromhex(reading.result())

    def drop_ahead(self) -> None:
        """Forget the window read ahead (a row in it was rewritten since): the next
        `window` reads it again."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    def close(self) -> None:
        """Stop reading ahead and close the reader's connection (in its thread)."""
        self.drop_ahead()
        self._thread.submit(self._close)
        self._thread.shutdown(wait=True)

    def _read(self, first: int) -> str:
        db = self._db
        if db is None:
            db = self._db = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        (text,) = db.execute(_SCAN, (first, first + SCAN_ROWS)).fetchone()
        assert isinstance(text, str)
        return text

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
