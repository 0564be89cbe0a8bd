"""A crash-safe record of a batch, so a rerun pays only for what is not finished.

Stored in SQLite (the standard library's `sqlite3`, WAL mode) rather than JSONL:
every write is one atomic transaction, so a kill -9 or Ctrl-C can never leave half a
record behind; an item's record is updated in place as it moves from "submitted" to
"finished" (a Datalab job's `request_check_url` is journaled before its first poll);
and a rerun reads the items by index, `WINDOW` of them per query as its input comes,
instead of loading the whole journal (or its digests) into memory. With
`synchronous=NORMAL` a commit survives the process dying at any point (it is in the OS
page cache at once); only a power cut can lose the last few.

A result is stored compressed (zstd) against a dictionary the journal keeps (its first
large record: `engine.records`), about 170 bytes for a one-line answer's 1.7 KB of JSON, and
a request digest as its 32 bytes; an answer's record has its CRC-32 beside it
(`answer_crc`, -1 for a failure's), so a rerun tells what it may reuse from the row alone
and reads the record only when it yields it (`replayable`, `engine.replays`). An answer
also keeps its input's digest (`input_digest`: the adapter's digest of the raw item, the
prompt, under the batch's settings, 16 bytes, and the first 8 of the request digest it was
written with), so a rerun matches a finished item without building its request or
hashing it (`input_digest`), a few thousand rows told apart in one query: such a match
trusts the row, and the record is first read when its item is yielded (one that does not
read back as an answer then, from bit rot or an older version's rewrite, ends that item
`journal_error`, journaled so that the next rerun sends it). A journal written
before any of these reads as it was: its plain JSON records and hex digests are matched as
they are (its records read to tell an answer; deflated ones inflated), its rows without an
input digest matched by the request's digest, and the records a rerun adds to it are
compressed with zstd.

An item whose work has stages (the pipeline: OCR, then extraction) journals each
finished stage in `stages`, under the stage's own request digest, so a rerun reuses a
finished OCR even when the item's extraction is sent again.

Submissions (a Datalab job, a background response) and group lines (a Batch API line)
are journaled under the stage request's `StageKey` (`engine.stages`). An item of one
stage (key stage "") keeps them in its `items` row and in `group_lines`, as journals
always did, so the common case costs no extra byte and a journal written before stages
existed reads as it was (its records are the items' single stage ""); a named stage's
go to `stage_submissions` and `stage_lines`, keyed by index and stage (the page too,
`extraction:3`). Those two tables are created by the first named stage that needs one,
in a new journal or an older one alike: that is the whole migration.

An item is matched by its index AND a digest of the request it would send, so an
edited prompt, schema or file at the same position is sent again rather than answered
from a stale record. Nothing here ever sees an API key: requests are digested without
their headers and results do not carry keys.

What can go wrong with the file is found out when the journal is opened, before
anything is paid for, and always raises a `JournalError` saying what:

- `JournalLocked`: another process (or another `Journal` in this one) has it open.
  Two runs on one journal would each send what the other has not finished and pay
  for it twice, so the journal holds an exclusive `flock` on `<journal>.lock` for as
  long as it is open. The kernel drops it when the process dies, so a lock left by a
  kill -9 never blocks the rerun. (Only where `fcntl` exists: Linux and macOS.)
- a journal that cannot be written (missing folder, read-only file or folder, a
  directory at its path): a write transaction at open proves it can be.
- a damaged journal (`PRAGMA quick_check` when the file already existed), a file that
  is not a journal, or, with `resume=True`, a missing or empty one.
- `JournalMismatch`: a journal of the other kind of batch.

Whether each result decodes is not checked at open (that would read every record of a
million-item journal): a record that does not (a newer encoding, bit rot) counts as
unfinished when its item is reached, with a WARNING, so only that item is bought again.

Paths that send items in groups (the OpenAI Batch API: a file of requests, one batch
per file) journal each group the moment the API accepts it: `record_group` writes the
uploaded file's id and which items it holds (their index, digest, line id and round) in
one transaction, `record_group_job` the batch created for it. Before the upload,
`record_upload_intent` journals the file's digest: a run killed between the upload and
`record_group` leaves that intent, and the rerun looks for the file at the API (its name
carries the digest) instead of uploading it again. An item's result ends its
group membership (`record_result` deletes it in the same transaction), so a rerun finds
in `group_line` exactly the items still waiting on a group: it polls that batch instead
of uploading them again.

A write failing later (disk full, the file vanishing under a network mount) raises
`JournalError` from `record_result` / `record_submission`: the result was not
journaled, and whoever drives the batch decides what to do with it.

The WAL is checkpointed into the main file every `CHECKPOINT_RECORDS` records or
`CHECKPOINT_SECS` seconds (at the next record), and truncated at `close`, so a
journal copied or cleaned up without its `-wal` file after a crash lacks at most the
results of the last period.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any
from zlib import crc32

import orjson

from .lookahead import INPUT_DIGEST, NONE, SCAN_ROWS, TIED, InputScan
from .records import RecordError, Records
from .stages import StageKey

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock between processes
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    request_id TEXT,
    check_url TEXT,
    result BLOB,
    answer_crc INTEGER,
    input_digest BLOB
)""",
    # The items submitted one by one and not finished (`unfinished` counts them before a
    # rerun): a handful, where counting them in the table read a million rows (0.6 s).
    "CREATE INDEX IF NOT EXISTS items_submitted ON items (idx)"
    " WHERE result IS NULL AND check_url IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS group_files (
    file_id TEXT PRIMARY KEY,
    lines INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS group_jobs (
    job_id TEXT PRIMARY KEY,
    file_id TEXT NOT NULL UNIQUE,
    cancelled INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS group_lines (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    line_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    input_digest BLOB
)""",
    "CREATE INDEX IF NOT EXISTS group_lines_file ON group_lines (file_id)",
    """CREATE TABLE IF NOT EXISTS stages (
    idx INTEGER NOT NULL,
    stage TEXT NOT NULL,
    digest TEXT NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (idx, stage)
)""",
)
_STAGED_TABLES = (
    """CREATE TABLE IF NOT EXISTS stage_submissions (
    idx INTEGER NOT NULL,
    stage TEXT NOT NULL,
    digest TEXT NOT NULL,
    request_id TEXT NOT NULL,
    check_url TEXT NOT NULL,
    PRIMARY KEY (idx, stage)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS stage_lines (
    idx INTEGER NOT NULL,
    stage TEXT NOT NULL,
    digest TEXT NOT NULL,
    line_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (idx, stage)
) WITHOUT ROWID""",
)
"""Created by the first named stage's submission or group line (`_stage_tables`), so a
journal of one-stage items is no larger than before stages existed."""
WINDOW = 1024
"""Items read from `items` in one query, by index (see `Journal._item`)."""
WINDOWS = 4
"""Windows kept: the workers admitting items a few windows apart still find theirs."""
GROUP_ROWS = 1000
"""Members of a group file journaled per statement (`record_group`)."""
_UPLOADS_TABLE = """CREATE TABLE IF NOT EXISTS group_uploads (
    digest TEXT PRIMARY KEY,
    intended_at REAL NOT NULL
) WITHOUT ROWID"""
"""Upload intents (`record_upload_intent`), created by the first one: only a journal of
Batch API files has it."""
_TABLE_NAMES = frozenset(
    {
        "meta",
        "items",
        "group_files",
        "group_jobs",
        "group_lines",
        "group_uploads",
        "stages",
        "stage_submissions",
        "stage_lines",
    }
)


_Statement = tuple[str, list[tuple[Any, ...]]]
_Item = tuple[Any, ...]
"""An `items` row without its index: (digest, result, request_id, check_url, answer_crc)."""
NOT_ANSWERED = -1
"""`answer_crc` of a record that is not an answer (a failure): never reused, never read."""


@dataclass(frozen=True, slots=True)
class GroupLine:
    """Where an unfinished item waits: its line in an uploaded group file, and the job (an
    OpenAI batch) created for that file, if one was journaled."""

    line_id: str
    file_id: str
    attempt: int
    """How many groups the item was sent in before this one (0: this is its first)."""
    lines: int
    """Lines the file was uploaded with."""
    tokens: int
    """Estimated input tokens of the file (what its batch enqueues)."""
    created_at: float
    """`time.time()` when the file was journaled."""
    job_id: str | None
    cancelled: bool
    """The job was cancelled by this library (Ctrl-C with cancel-on-interrupt)."""


def request_digest(*parts: bytes) -> str:
    """Digest of everything that determines an item's answer (never its credentials)."""
    return packed_digest(*parts).hex()


def packed_digest(*parts: bytes) -> bytes:
    """`request_digest` as its 32 bytes (as `items` stores it)."""
    if len(parts) == 1:  # the common case, in one call (a resume hashes every item)
        (part,) = parts
        return hashlib.sha256(len(part).to_bytes(8, "little") + part).digest()
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little"))
        hasher.update(part)
    return hasher.digest()


class JournalError(Exception):
    """A journal that cannot be used: locked, unwritable, damaged, missing or not a journal."""


class JournalLocked(JournalError):
    """Another process, or another open `Journal` of this one, is using this journal."""


class JournalMismatch(JournalError, ValueError):
    """The journal at this path belongs to another kind of batch (also a ValueError, as
    it always was)."""


class Journal:
    """Finished results and submitted jobs of one batch, keyed by input index.

    `resume=True` is for continuing a batch: the file must exist and hold a journal of
    this `kind` (an empty or missing file raises `JournalError` rather than silently
    starting afresh). Without it, a missing file starts a new journal. Use it as a
    context manager, or `close()` it: that releases the lock.
    """

    CHECKPOINT_RECORDS = 100
    """Records between WAL checkpoints (see the module docstring). Measured: 11 us more
    per record than never checkpointing (37 -> 48 us for 2 KB results)."""
    CHECKPOINT_SECS = 2.0
    """Seconds after which the next record checkpoints the WAL, however few came before."""

    def __init__(self, path: str | os.PathLike[str], kind: str, *, resume: bool = False) -> None:
        self.path = Path(path)
        if resume and not self.path.exists():  # before the lock file appears beside it
            raise JournalError(f"journal {self.path} does not exist: nothing to resume")
        try:
            self._lock = _acquire_lock(self.path)
        except JournalLocked:
            found = _peek_kind(self.path)  # of another kind is the more useful answer
            if found is not None and found != kind:
                raise JournalMismatch(
                    f"journal {self.path} holds a {found} batch, not {kind}"
                ) from None
            raise
        try:
            self._db = self._open(kind, resume)
        except BaseException:
            os.close(self._lock)
            raise
        self._closed = False
        self._unreadable = 0
        """Records `load` could not read, for the warning at close."""
        self._unchecked = 0
        self._checkpointed = time.monotonic()
        self._windows: dict[int, dict[int, _Item]] = {}
        """The last `WINDOWS` windows of `items` read, by window number (`_item`)."""
        self._scan: InputScan | None = None
        """Reads the windows of input digests (`input_digest`), from the first asked for."""
        self._scanned = bytearray()
        """The window of the indices `[_scan_first, _scan_stop)` (`engine.lookahead`):
        none while the journal is one this open created (it held no answer to scan)."""
        self._scan_first = self._scan_stop = 0

    def _open(self, kind: str, resume: bool) -> sqlite3.Connection:
        try:
            info: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {_reason(exc)}") from None
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise JournalError(f"journal {self.path} is not a regular file")
        if resume and info is None:
            raise JournalError(f"journal {self.path} does not exist: nothing to resume")
        if resume and info is not None and info.st_size == 0:
            raise JournalError(
                f"journal {self.path} is empty (0 bytes): nothing to resume; "
                "delete it to start the batch afresh"
            )
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        try:
            existing = info is not None and info.st_size > 0
            self._prepare(db, kind, resume=resume, existing=existing)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection, kind: str, *, resume: bool, existing: bool) -> None:
        """Check what is in the file, then prove it can be written, before any request."""
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if existing:
                problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise JournalError(f"journal {self.path} is damaged: {'; '.join(problems)}")
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except sqlite3.OperationalError as exc:  # I/O error, no -wal/-shm, read-only
            hint = ""
            if not os.access(self.path.parent, os.W_OK):
                hint = f" (SQLite creates {self.path.name}-wal beside it: its folder is read-only)"
            raise JournalError(f"cannot open journal {self.path}: {exc}{hint}") from None
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise JournalError(f"{self.path} is not a journal: {exc}") from None
            raise JournalError(f"journal {self.path} is damaged: {exc}") from None
        if not tables <= _TABLE_NAMES:
            raise JournalError(f"{self.path} is an SQLite database but not a journal")
        self._created = not existing
        """This open made the file: no answer of an earlier run is in it (`input_digest`)."""
        self._staged = "stage_submissions" in tables
        self._uploads = "group_uploads" in tables
        """The tables of named stages' work exist (see `_STAGED_TABLES`)."""
        found = None
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
            found = None if row is None else row[0]
        if found is not None and found != kind:
            raise JournalMismatch(f"journal {self.path} holds a {found} batch, not {kind}")
        if found is None and resume:
            raise JournalError(f"journal {self.path} holds no batch: nothing to resume")
        self._records = Records.of(db)
        """How results are stored (`engine.records`: compressed against this dictionary)."""
        try:
            # A real write, even when nothing changes: a journal that cannot take one
            # fails here, before anything is sent, not after the first paid result.
            db.execute("BEGIN IMMEDIATE")
            for table in _TABLES:
                db.execute(table)
            columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if "answer_crc" not in columns:  # a journal written before it: NULL, read as before
                db.execute("ALTER TABLE items ADD COLUMN answer_crc INTEGER")
            if "input_digest" not in columns:  # likewise: its rows are matched by `digest`
                db.execute("ALTER TABLE items ADD COLUMN input_digest BLOB")
            grouped = {row[1] for row in db.execute("PRAGMA table_info(group_lines)")}
            if "input_digest" not in grouped:  # likewise: answered without one
                db.execute("ALTER TABLE group_lines ADD COLUMN input_digest BLOB")
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('kind', ?)", (kind,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise JournalError(f"cannot write journal {self.path}: {exc}") from None

    def finished(self, index: int, digest: str) -> dict[str, Any] | None:
        """The journaled result for this item, if it ended with this very request.

        Failures are journaled too (the journal is the batch's full record) but never
        reused: the driver reuses a record only when its adapter revives it as answered
        (`Bookkeeping.replay`), so a rerun tries a failure again.
        """
        item = self._item(index)
        if item is None or item[1] is None or item[0] not in (_packed(digest), digest):
            return None
        return self.load(item[1], index)

    def replayable(self, index: int, digest: bytes) -> bool | None:
        """Whether this item's journaled record is an answer to this very request (its
        `packed_digest`), told without reading the record: True (read it when it is wanted:
        `records`), False (nothing to reuse), None when only reading it can tell (`finished`:
        a record written before `answer_crc`, or one whose bytes no longer match it)."""
        item = self._item(index)
        if item is None or item[1] is None:
            return False
        stored = item[0]
        if stored != digest and (not isinstance(stored, str) or stored != digest.hex()):
            return False
        crc, blob = item[4], item[1]
        if crc == NOT_ANSWERED:
            return False
        return True if crc is not None and isinstance(blob, bytes) and crc == crc32(blob) else None

    def input_digest(self, index: int) -> bytes | None:
        """The `Adapter.input_digest` this item's journaled answer was written with: the
        item's record is an answer to the request this names (read it when it is wanted:
        `records`). None when none is known so (a row written without one is matched by
        its request's digest: `replayable`). The next `SCAN_ROWS` indices are read at once
        (a rerun asks in input order), and the ones after them meanwhile, on a thread
        (`engine.lookahead`): the input digests of their answers whose request digest is
        still the one they were written with (a version that knows nothing of input
        digests rewrites the digest and leaves them). Their records are not read here,
        nor their CRC-32 taken (in SQL, a call into Python for every row, it was a third
        of the scan): each is read when its item is yielded, and one that does not read
        back as an answer then ends `journal_error` (`Bookkeeping.replayed`). A journal
        this open created is not scanned: it holds only the answers of this run, to items
        already asked for."""
        if self._created:
            return None
        if not self._scan_first <= index < self._scan_stop:
            self._read_window(index)
        at = (index - self._scan_first) * INPUT_DIGEST
        found = self._scanned[at : at + INPUT_DIGEST]
        return None if found == NONE else bytes(found)

    def _read_window(self, first: int) -> None:
        """Take the window of the indices `[first, first + SCAN_ROWS)`."""
        if self._scan is None:
            self._scan = InputScan(self.path)
        try:
            window = self._scan.window(first)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is damaged: {exc}") from None
        self._scanned, self._scan_first, self._scan_stop = window, first, first + SCAN_ROWS

    def _forget(self, index: int) -> None:
        """What `input_digest` read of an index no longer holds: its row was rewritten."""
        if self._scan is None:  # nothing read yet: a window read later sees the new row
            return
        if index >= self._scan_stop:  # the window read ahead may predate it: read it again
            self._scan.drop_ahead()
        elif index >= self._scan_first:
            at = (index - self._scan_first) * INPUT_DIGEST
            self._scanned[at : at + INPUT_DIGEST] = NONE

    def records(self, first: int, stop: int) -> list[bytes | str]:
        """The stored records of the items `[first, stop)`, every one of which `replayable`
        found, last first (`pop` them in index order; `load` each). Read in one query, each
        decoded only as it is taken, so what waits meanwhile is their stored bytes (a few
        hundred decoded results held at once would be promoted by the garbage collector and
        traversed again and again: it doubled a replay's time). (The windows `replayable`
        read are long gone by the time a rerun yields these: it tells the whole input
        before the consumer has taken a fraction of it.)"""
        try:
            rows = self._db.execute(
                "SELECT result FROM items WHERE idx >= ? AND idx < ? ORDER BY idx DESC",
                (first, stop),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is damaged: {exc}") from None
        assert len(rows) == stop - first, (first, stop)
        return [blob for (blob,) in rows]

    def digest(self, index: int) -> str:
        """The digest (hex) an item's record was journaled with."""
        row = self._read("SELECT digest FROM items WHERE idx = ?", (index,))
        assert row is not None, index
        digest = row[0]
        return digest.hex() if isinstance(digest, bytes) else str(digest)

    def submitted(self, key: StageKey, digest: str) -> tuple[str, str] | None:
        """(request_id, request_check_url) of work the API accepted for this stage request
        (a Datalab job, a background response) and that has not finished."""
        if key.stage:
            if not self._staged:
                return None
            row = self._read(
                "SELECT request_id, check_url FROM stage_submissions"
                " WHERE idx = ? AND stage = ? AND digest = ?",
                (key.index, _stage_name(key), digest),
            )
        else:
            item = self._item(key.index)
            if item is None or item[1] is not None or item[3] is None:
                return None
            if item[0] not in (_packed(digest), digest):
                return None
            row = item[2:]
        return None if row is None else (row[0], row[1])

    def record_submission(
        self, key: StageKey, digest: str, request_id: str, check_url: str
    ) -> None:
        """Journal work the API accepted for this stage request; `JournalError` if the
        journal cannot take it."""
        if key.stage:
            self._stage_tables()
            sql = (
                "INSERT OR REPLACE INTO stage_submissions"
                " (idx, stage, digest, request_id, check_url) VALUES (?, ?, ?, ?, ?)"
            )
            params: tuple[Any, ...] = (key.index, _stage_name(key), digest, request_id, check_url)
        else:
            sql = (
                "INSERT OR REPLACE INTO items (idx, digest, request_id, check_url, result)"
                " VALUES (?, ?, ?, ?, NULL)"
            )
            params = (key.index, _packed(digest), request_id, check_url)
        self._write(f"the submission of {_described(key)}", sql, params)
        if not key.stage:
            self._cached(key.index, (params[1], None, request_id, check_url, None))
            self._forget(key.index)

    def record_result(
        self,
        index: int,
        digest: str,
        result: dict[str, Any],
        *,
        pending: bool = False,
        answered: bool | None = None,
        input_digest: bytes | None = None,
    ) -> None:
        """Journal an item's result; `JournalError` if the journal cannot take it.
        `answered`: whether its outcome is an answer, which a rerun may reuse
        (`replayable`: an answer's record has its CRC-32 kept beside it, so a rerun knows
        without reading it, and reads a record whose bytes changed since to find out;
        None: unsaid, a rerun reads the record to find out). `input_digest`: the
        `Adapter.input_digest` of the item's input, kept with an answer's (`input_digest`).

        The item leaves its group, if any, unless its group may still answer it
        (`pending`: its outcome is `Pending`, its batch could not be polled or read), so a
        rerun asks that batch again rather than sending the item twice; so do its named
        stages' submissions and lines (a rerun of a failed item starts it afresh). A
        pending item journaled as submitted (a background response given up on at
        `max_wait_secs`) keeps that submission and no result, so a rerun polls it.
        """
        open_submission = "items.result IS NULL AND items.check_url IS NOT NULL"
        keep = f" WHERE NOT ({open_submission})" if pending else ""
        blob, statements, chosen = self._encoded(result)
        packed = _packed(digest)
        crc = None if answered is None else crc32(blob) if answered else NOT_ANSWERED
        tied = None
        if input_digest is not None and answered and isinstance(packed, bytes):
            tied = input_digest + packed[:TIED]
        statements.append(
            (
                "INSERT INTO items (idx, digest, result, answer_crc, input_digest)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(idx) DO UPDATE SET"
                " digest = excluded.digest, result = excluded.result,"
                f" answer_crc = excluded.answer_crc, input_digest = excluded.input_digest{keep}",
                [(index, packed, blob, crc, tied)],
            )
        )
        if not pending:
            tables = ("group_lines", "stage_lines", "stage_submissions")
            statements += [
                (f"DELETE FROM {table} WHERE idx = ?", [(index,)])
                for table in tables[: 3 if self._staged else 1]
            ]
        self._transaction(f"the result of item {index}", statements)
        self._records.adopt(chosen)
        self._forget(index)
        known = self._item(index, read=False)
        if not (pending and known is not None and known[1] is None and known[3] is not None):
            self._cached(index, (packed, blob, *(known[2:4] if known else (None, None)), crc))

    def record_group(
        self,
        file_id: str,
        members: Iterable[tuple[StageKey, str, str, int, bytes | None]],
        *,
        tokens: int,
    ) -> None:
        """Journal an uploaded group file and its members, `(key, digest, line_id, attempt,
        input_digest)` each, in one transaction (a member of an earlier group moves to this
        one)."""
        self._transaction(f"group file {file_id}", self._group_rows(file_id, members, tokens))
        if not self._staged:  # its named stages' lines may have created their tables
            self._staged = (
                self._read("SELECT 1 FROM sqlite_master WHERE name = 'stage_submissions'", ())
                is not None
            )

    def _group_rows(
        self,
        file_id: str,
        members: Iterable[tuple[StageKey, str, str, int, bytes | None]],
        tokens: int,
    ) -> Iterator[_Statement]:
        """`record_group`'s statements, `GROUP_ROWS` members at a time (a file holds up to
        50,000: their rows are never all in memory at once)."""
        created = self._staged
        lines = 0
        insert_file = (
            "INSERT OR REPLACE INTO group_files (file_id, lines, tokens, created_at)"
            " VALUES (?, ?, ?, ?)"
        )
        yield insert_file, [(file_id, 0, tokens, time.time())]
        for chunk in _chunks(members, GROUP_ROWS):
            single = [
                (key.index, digest, line_id, file_id, attempt, input_digest)
                for key, digest, line_id, attempt, input_digest in chunk
                if not key.stage
            ]
            yield (
                "INSERT OR REPLACE INTO group_lines"
                " (idx, digest, line_id, file_id, attempt, input_digest) VALUES (?, ?, ?, ?, ?, ?)",
                single,
            )
            staged = [
                (key.index, _stage_name(key), digest, line_id, file_id, attempt)
                for key, digest, line_id, attempt, _ in chunk
                if key.stage
            ]
            if staged and not created:  # `_STAGED_TABLES`, in this very transaction
                created = True
                yield from ((table, [()]) for table in _STAGED_TABLES)
            yield (
                "INSERT OR REPLACE INTO stage_lines"
                " (idx, stage, digest, line_id, file_id, attempt) VALUES (?, ?, ?, ?, ?, ?)",
                staged,
            )
            lines += len(chunk)
        yield "UPDATE group_files SET lines = ? WHERE file_id = ?", [(lines, file_id)]

    def group_digests(self, index: int) -> tuple[str, bytes | None] | None:
        """The digest an item of one stage was journaled with in its group line, and its
        input digest if it had one (`Adapter.input_digest`); None if it is in no group line."""
        row = self._read("SELECT digest, input_digest FROM group_lines WHERE idx = ?", (index,))
        if row is None:
            return None
        input_digest = row[1] if isinstance(row[1], bytes) else None
        return str(row[0]), input_digest

    def record_upload_intent(self, digest: str) -> None:
        """Journal that a group file of this content digest is about to be uploaded."""
        statements: list[tuple[str, list[tuple[Any, ...]]]] = [
            ("INSERT OR IGNORE INTO group_uploads (digest, intended_at) VALUES (?, ?)",
             [(digest, time.time())]),
        ]  # fmt: skip
        if not self._uploads:
            statements.insert(0, (_UPLOADS_TABLE, [()]))
        self._transaction(f"the upload of file {digest[:16]}", statements)
        self._uploads = True

    def upload_intended(self, digest: str) -> float | None:
        """When (`time.time()`) an upload of this content was first intended, if ever: an
        earlier run may have uploaded it without journaling its file."""
        if not self._uploads:
            return None
        row = self._read("SELECT intended_at FROM group_uploads WHERE digest = ?", (digest,))
        return None if row is None else float(row[0])

    def record_group_job(self, file_id: str, job_id: str) -> None:
        """Journal the job (an OpenAI batch) the API created for a group file."""
        self._write(
            f"job {job_id}",
            "INSERT OR REPLACE INTO group_jobs (job_id, file_id) VALUES (?, ?)",
            (job_id, file_id),
        )

    def record_group_cancelled(self, job_id: str) -> None:
        """Journal that this library cancelled a job (its lines that never ran are sent again)."""
        self._write(
            f"the cancel of job {job_id}",
            "UPDATE group_jobs SET cancelled = 1 WHERE job_id = ?",
            (job_id,),
        )

    def group_line(self, key: StageKey, digest: str) -> GroupLine | None:
        """Where this stage request, unfinished with this very request, waits on a group;
        else None."""
        columns = (
            "SELECT l.line_id, l.file_id, l.attempt, f.lines, f.tokens, f.created_at,"
            " j.job_id, j.cancelled FROM {} l JOIN group_files f USING (file_id)"
            " LEFT JOIN group_jobs j USING (file_id) WHERE l.idx = ? AND l.digest = ?"
        )
        if key.stage:
            if not self._staged:
                return None
            row = self._read(
                columns.format("stage_lines") + " AND l.stage = ?",
                (key.index, digest, _stage_name(key)),
            )
        else:
            row = self._read(columns.format("group_lines"), (key.index, digest))
        if row is None:
            return None
        return GroupLine(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7] or 0))

    def stage_result(self, key: StageKey, digest: str) -> dict[str, Any] | None:
        """The journaled result of one named stage of an item (e.g. a pipeline's OCR), if
        that stage finished with this very request; else None. Only successes are journaled
        as stages."""
        row = self._read(
            "SELECT result FROM stages WHERE idx = ? AND stage = ? AND digest = ?",
            (key.index, _stage_name(key), digest),
        )
        return None if row is None else self.load(row[0], key.index)

    def record_stage(self, key: StageKey, digest: str, result: dict[str, Any]) -> None:
        """Journal a finished named stage of an item whose own result comes later (a
        pipeline's OCR text before its extraction), so a rerun reuses it, and end the
        stage's submission and group line in the same transaction; `JournalError` if the
        journal cannot take it."""
        where = (key.index, _stage_name(key))
        blob, statements, chosen = self._encoded(result)
        statements.append(
            (
                "INSERT OR REPLACE INTO stages (idx, stage, digest, result) VALUES (?, ?, ?, ?)",
                [(*where, digest, blob)],
            )
        )
        if self._staged:
            statements += [
                (f"DELETE FROM {table} WHERE idx = ? AND stage = ?", [where])
                for table in ("stage_submissions", "stage_lines")
            ]
        self._transaction(_described(key), statements)
        self._records.adopt(chosen)

    def results(self) -> list[dict[str, Any]]:
        """Every finished result, in input order (for inspection and export); an unreadable
        record is left out (see `load`)."""
        try:
            rows = self._db.execute(
                "SELECT idx, result FROM items WHERE result IS NOT NULL ORDER BY idx"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is damaged: {exc}") from None
        loaded = (self.load(blob, index) for index, blob in rows)
        return [result for result in loaded if result is not None]

    def checkpoint(self) -> None:
        """Copy the WAL into the journal's main file now (it is also done periodically).

        A failure is logged, not raised: every record is already committed in the WAL,
        which SQLite replays on the next open; the next period tries again.
        """
        self._unchecked = 0
        self._checkpointed = time.monotonic()
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            logger.warning("journal %s: checkpoint failed: %s", self.path, exc)

    def close(self) -> None:
        """Checkpoint and truncate the WAL, close the file and release the lock."""
        if self._closed:
            return
        self._closed = True
        if self._unreadable:
            logger.warning(
                "journal %s: %d unreadable record(s) were treated as unfinished",
                self.path,
                self._unreadable,
            )
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # the WAL stays valid; SQLite replays it on next open
            logger.warning("journal %s: checkpoint at close failed: %s", self.path, exc)
        finally:
            if self._scan is not None:
                self._scan.close()
            self._db.close()
            os.close(self._lock)

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _stage_tables(self) -> None:
        """Create the tables of named stages' work, at their first write (`_STAGED_TABLES`)."""
        if self._staged:
            return
        self._transaction("the tables of stages", [(table, [()]) for table in _STAGED_TABLES])
        self._staged = True

    def _read(self, sql: str, params: tuple[Any, ...]) -> Any:
        try:
            return self._db.execute(sql, params).fetchone()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"journal {self.path} is damaged: {exc}") from None

    def load(self, blob: bytes | str, index: int) -> dict[str, Any] | None:
        """A journaled result, or None when it cannot be read (`engine.records`: a newer
        encoding, bit rot; or not an object). Such a record counts as unfinished, so its item is
        sent again (by the next rerun, when the record is only read as its item is yielded:
        `Bookkeeping.replayed`) and its new result replaces it: raising instead would end the batch
        when the item's turn came, losing the answers paid for meanwhile, and end every
        rerun the same way. Results are only decoded when their item is reached (decoding
        them all at open would cost a large journal seconds), so the first one is logged
        as it is met and `close` logs how many there were."""
        try:
            result = self._records.decode(blob)
        except RecordError as exc:
            problem = str(exc)
        else:
            if isinstance(result, dict):
                return result
            problem = f"a JSON {type(result).__name__}, not an object"
        self._unreadable += 1
        if self._unreadable == 1:
            logger.warning(
                "journal %s: the record of item %d is unreadable, %s: the item is treated "
                "as unfinished (sent again, by the next rerun if its turn has passed); more "
                "are counted at close",
                self.path,
                index,
                problem,
            )
        return None

    def _encoded(self, result: dict[str, Any]) -> tuple[bytes, list[_Statement], bytes | None]:
        """A result as stored, the statements to write first, and the journal's dictionary
        if this record is the first large enough to be it (`engine.records`): written in
        the record's transaction, used (`Records.dictionary`) once that commits."""
        data = orjson.dumps(result)
        chosen = self._records.choose(data)
        if chosen is None:
            return self._records.encode(data), [], None
        choice = ("INSERT OR REPLACE INTO meta (key, value) VALUES ('dictionary', ?)", [(chosen,)])
        return Records(chosen).encode(data), [choice], chosen

    def _item(self, index: int, *, read: bool = True) -> _Item | None:
        """The `items` row of an index, read `WINDOW` rows at a time: a rerun asks for its
        items in input order, so one query answers a thousand of them (one query per item
        was most of a replay's time), and no more than `WINDOWS` windows are held."""
        number = index // WINDOW
        rows = self._windows.get(number)
        if rows is None:
            if not read:
                return None
            start = number * WINDOW
            try:
                found = self._db.execute(
                    "SELECT idx, digest, result, request_id, check_url, answer_crc FROM items"
                    " WHERE idx >= ? AND idx < ?",
                    (start, start + WINDOW),
                ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise JournalError(f"journal {self.path} is damaged: {exc}") from None
            rows = self._windows[number] = {row[0]: row[1:] for row in found}
            while len(self._windows) > WINDOWS:
                del self._windows[next(iter(self._windows))]
        return rows.get(index)

    def _cached(self, index: int, item: _Item) -> None:
        """A row just written, in its window if that is held."""
        rows = self._windows.get(index // WINDOW)
        if rows is not None:
            rows[index] = item

    def _write(self, what: str, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._db.execute(sql, params)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot write {what} to journal {self.path}: {exc}") from exc
        self._written()

    def _transaction(self, what: str, statements: Iterable[_Statement]) -> None:
        """Several statements, all or none (one with no rows is not run: its table may not
        exist, see `_STAGED_TABLES`)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                if rows:
                    db.executemany(sql, rows)
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise JournalError(f"cannot write {what} to journal {self.path}: {exc}") from exc
        self._written()

    def _written(self) -> None:
        self._unchecked += 1
        if (
            self._unchecked >= self.CHECKPOINT_RECORDS
            or time.monotonic() - self._checkpointed >= self.CHECKPOINT_SECS
        ):
            self.checkpoint()


def _acquire_lock(path: Path) -> int:
    """An open descriptor of `<path>.lock`, exclusively locked; JournalError otherwise.

    The lock file is left in place at close: removing it would let a third process
    lock a new file while a second still waits on the old one.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except (OSError, ValueError) as exc:
        raise JournalError(f"cannot create journal {path}: {_reason(exc)}") from None
    if fcntl is None:  # pragma: no cover - Windows
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            by = f"process {holder}" if holder else "another process"
            raise JournalLocked(
                f"journal {path} is in use by {by}: two batches on one journal would "
                "pay twice for the items neither has finished"
            ) from None
        raise JournalError(f"cannot lock journal {path}: {_reason(exc)}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is only for the message a second user sees
    return fd


def _peek_kind(path: Path) -> str | None:
    """The kind of batch in a journal another process holds, read-only; None if unknown."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        finally:
            db.close()
    except (sqlite3.Error, OSError, ValueError):
        return None
    return None if row is None else str(row[0])


@dataclass(frozen=True, slots=True)
class Unfinished:
    """Work an earlier run of a journal left running at the API (see `unfinished`)."""

    jobs: tuple[str, ...] = ()
    """Group jobs (OpenAI batches) that items still wait on."""
    submissions: int = 0
    """Items submitted one by one (background responses, Datalab jobs) with no result."""


def unfinished(path: str | os.PathLike[str], kind: str) -> Unfinished:
    """What a journal of `kind` at `path` left running, read without opening it as a
    `Journal` (nothing is locked or written), so a rerun can choose how to collect it
    before anything is sent. Nothing for a missing file, another kind, or one that cannot
    be read (opening it as a `Journal` then says why)."""
    if not Path(path).is_file():
        return Unfinished()
    try:
        db = sqlite3.connect(path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
            if row is None or row[0] != kind:
                return Unfinished()
            staged = {"stage_lines", "stage_submissions"} <= {
                name for (name,) in db.execute("SELECT name FROM sqlite_master")
            }  # a journal written before stages has neither (see the module docstring)
            lines = (
                "group_lines UNION ALL SELECT file_id FROM stage_lines" if staged else "group_lines"
            )
            jobs = db.execute(
                f"SELECT DISTINCT j.job_id FROM (SELECT file_id FROM {lines}) l"
                " JOIN group_jobs j USING (file_id) ORDER BY j.job_id"
            ).fetchall()
            (submissions,) = db.execute(
                "SELECT COUNT(*) FROM items WHERE result IS NULL AND check_url IS NOT NULL"
            ).fetchone()
            if staged:
                (more,) = db.execute("SELECT COUNT(*) FROM stage_submissions").fetchone()
                submissions += more
        finally:
            db.close()
    except (sqlite3.Error, OSError):
        return Unfinished()
    return Unfinished(tuple(job for (job,) in jobs), int(submissions))


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    rows = iter(rows)
    while chunk := list(islice(rows, size)):
        yield chunk


def _packed(digest: str) -> bytes | str:
    """A request digest as `items` stores it: its 32 bytes (a journal written before kept
    the 64 hex characters, which `finished` and `submitted` still match)."""
    if len(digest) == 64:
        try:
            return bytes.fromhex(digest)
        except ValueError:
            pass
    return digest


def _stage_name(key: StageKey) -> str:
    """A named stage's `stage` column: `ocr`, `extraction:3` (a page's), as `stages` always
    named them."""
    return key.stage if key.page is None else f"{key.stage}:{key.page}"


def _described(key: StageKey) -> str:
    return f"item {key.index}" if not key.stage else f"stage {_stage_name(key)} of item {key.index}"


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _reason(exc: OSError | ValueError) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOENT:
            return "its folder does not exist"
        if exc.errno == errno.ENOTDIR:
            return "a part of its folder path is not a folder"
        return exc.strerror or str(exc)
    return str(exc)
