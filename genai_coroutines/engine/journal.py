"""A crash-safe record of a batch, so a rerun pays only for what is not finished.

Stored in SQLite (the standard library's `sqlite3`, WAL mode) rather than JSONL:
every write is one atomic transaction, so a kill -9 or Ctrl-C can never leave half a
record behind; an item's record is updated in place as it moves from "submitted" to
"finished" (a Datalab job's `request_check_url` is journaled before its first poll);
and a rerun looks each item up by its index instead of loading the whole journal into
memory, which keeps 100,000-item batches flat. With `synchronous=NORMAL` a commit
survives the process dying at any point (it is in the OS page cache at once); only a
power cut can lose the last few.

An item is matched by its index AND a digest of the request it would send, so an
edited prompt, schema or file at the same position is sent again rather than answered
from a stale record. Nothing here ever sees an API key: requests are digested without
their headers and results do not carry keys.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    request_id TEXT,
    check_url TEXT,
    result BLOB
);
"""


def request_digest(*parts: bytes) -> str:
    """Digest of everything that determines an item's answer (never its credentials)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little"))
        hasher.update(part)
    return hasher.hexdigest()


class JournalMismatch(ValueError):
    """The journal at this path belongs to another kind of batch."""


class Journal:
    """Finished results and submitted jobs of one batch, keyed by input index."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('kind', ?)", (kind,))
        elif row[0] != kind:
            raise JournalMismatch(f"journal {self.path} holds a {row[0]} batch, not {kind}")

    def finished(self, index: int, digest: str) -> dict[str, Any] | None:
        """The journaled result for this item, if it succeeded with this very request.

        Failures are journaled too (the journal is the batch's full record) but never
        reused: a rerun tries them again.
        """
        row = self._db.execute(
            "SELECT result FROM items WHERE idx = ? AND digest = ? AND result IS NOT NULL",
            (index, digest),
        ).fetchone()
        if row is None:
            return None
        result: dict[str, Any] = orjson.loads(row[0])
        return result if result.get("success") else None

    def submitted(self, index: int, digest: str) -> tuple[str, str] | None:
        """(request_id, request_check_url) of a job submitted for this item and not finished."""
        row = self._db.execute(
            "SELECT request_id, check_url FROM items"
            " WHERE idx = ? AND digest = ? AND result IS NULL AND check_url IS NOT NULL",
            (index, digest),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def record_submission(self, index: int, digest: str, request_id: str, check_url: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO items (idx, digest, request_id, check_url, result)"
            " VALUES (?, ?, ?, ?, NULL)",
            (index, digest, request_id, check_url),
        )

    def record_result(self, index: int, digest: str, result: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO items (idx, digest, result) VALUES (?, ?, ?)"
            " ON CONFLICT(idx) DO UPDATE SET digest = excluded.digest, result = excluded.result",
            (index, digest, orjson.dumps(result)),
        )

    def results(self) -> list[dict[str, Any]]:
        """Every finished result, in input order (for inspection and export)."""
        rows = self._db.execute("SELECT result FROM items WHERE result IS NOT NULL ORDER BY idx")
        return [orjson.loads(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
