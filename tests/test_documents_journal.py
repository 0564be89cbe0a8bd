"""Journal and resume for documents: nothing uploaded twice, nothing finished lost."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import samples
from documents_support import config_for

from genai_coroutines import DocumentProcessor
from genai_coroutines.emulator import Emulator


def _docs(n: int, tag: str = "") -> list[bytes]:
    return [samples.pdf(1 + i % 3, tag=f"{tag}{i}") for i in range(n)]


async def test_rerun_with_journal_reuses_every_success_and_uploads_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ocr.journal"
    processor = DocumentProcessor(config_for(emulator))
    first = [r async for r in processor.stream(_docs(6), journal=journal)]
    assert all(r["success"] for r in first)
    uploads = sum(emulator.stats.submissions_by_digest.values())

    again = [r async for r in processor.stream(_docs(6), journal=journal)]

    assert sorted(r["index"] for r in again) == list(range(6))
    assert all(r["from_journal"] for r in again)
    assert sum(emulator.stats.submissions_by_digest.values()) == uploads == 6
    by_index = {r["index"]: r["json_response"] for r in first}
    assert all(r["json_response"] == by_index[r["index"]] for r in again)
    assert processor.last_summary.reused == 6


async def test_interrupted_batch_resumes_polling_instead_of_uploading(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ocr.journal"
    emulator.config.seconds_per_page = 0.3
    processor = DocumentProcessor(
        config_for(emulator, max_concurrent_requests=4, poll_interval_secs=0.05)
    )
    submitted: list[int] = []
    all_submitted = asyncio.Event()

    class Interrupted(DocumentProcessor):
        def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
            submitted.append(index)
            if len(submitted) == 4:
                all_submitted.set()

    stream = Interrupted(processor.config).stream(_docs(4), journal=journal)
    consumer = asyncio.ensure_future(stream.__anext__())
    await all_submitted.wait()  # every job accepted and journaled; none finished yet
    consumer.cancel()  # what Ctrl-C does to the batch
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await stream.aclose()
    assert emulator.stats.submissions_by_digest and all(
        n == 1 for n in emulator.stats.submissions_by_digest.values()
    )

    resumed = [r async for r in processor.stream(_docs(4), journal=journal)]

    assert all(r["success"] for r in resumed)
    assert sum(emulator.stats.submissions_by_digest.values()) == 4, "a document was re-uploaded"


async def test_changed_document_at_the_same_index_is_sent_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ocr.journal"
    processor = DocumentProcessor(config_for(emulator))
    [_ async for _ in processor.stream(_docs(3), journal=journal)]
    changed = _docs(3)
    changed[1] = samples.pdf(2, tag="edited")

    again = {r["index"]: r async for r in processor.stream(changed, journal=journal)}

    assert [again[i].get("from_journal", False) for i in range(3)] == [True, False, True]
    assert sum(emulator.stats.submissions_by_digest.values()) == 4


async def test_failed_documents_are_journaled_but_retried_on_rerun(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "ocr.journal"
    processor = DocumentProcessor(config_for(emulator))
    docs = [samples.pdf(1, tag="ok"), samples.pdf(1, tag="bad", extra=b"%%FAIL%%")]
    first = {r["index"]: r async for r in processor.stream(docs, journal=journal)}
    assert first[0]["success"] and not first[1]["success"]

    again = {r["index"]: r async for r in processor.stream(docs, journal=journal)}

    assert again[0]["from_journal"] and "from_journal" not in again[1]


OLD_SCHEMA = (  # the journal's tables before stages were keyed (git 781bdfe)
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE items (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    request_id TEXT,
    check_url TEXT,
    result BLOB
)""",
    """CREATE TABLE group_files (
    file_id TEXT PRIMARY KEY,
    lines INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
)""",
    """CREATE TABLE group_jobs (
    job_id TEXT PRIMARY KEY,
    file_id TEXT NOT NULL UNIQUE,
    cancelled INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE group_lines (
    idx INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    line_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    attempt INTEGER NOT NULL
)""",
    "CREATE INDEX group_lines_file ON group_lines (file_id)",
    """CREATE TABLE stages (
    idx INTEGER NOT NULL,
    stage TEXT NOT NULL,
    digest TEXT NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (idx, stage)
)""",
)


async def test_a_journal_of_the_previous_schema_opens_and_resumes_its_jobs(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A journal written before submissions were keyed by stage: its items' jobs (their
    single stage "") are polled, its finished results reused, nothing uploaded again."""
    emulator.config.seconds_per_page = 0.3
    processor = DocumentProcessor(
        config_for(emulator, max_concurrent_requests=4, poll_interval_secs=0.05)
    )
    now = tmp_path / "now.journal"
    accepted: set[int] = set()
    submitted = asyncio.Event()

    class Interrupted(DocumentProcessor):
        def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
            accepted.add(index)
            if accepted == {2, 3}:  # none in flight when cancelled: nothing paid unjournaled
                submitted.set()

    first = [r async for r in processor.stream(_docs(2), journal=now)]
    assert all(r["success"] for r in first)
    stream = Interrupted(processor.config).stream(_docs(4), journal=now)
    consumer = asyncio.ensure_future(stream.__anext__())
    await submitted.wait()
    consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await stream.aclose()
    old = tmp_path / "old.journal"
    with contextlib.closing(sqlite3.connect(old)) as db, db:
        for table in OLD_SCHEMA:
            db.execute(table)
        db.execute("ATTACH DATABASE ? AS now", (str(now),))
        db.execute("INSERT INTO meta SELECT * FROM now.meta")
        db.execute(
            "INSERT INTO items SELECT idx, digest, request_id, check_url, result FROM now.items"
        )
        (waiting,) = db.execute("SELECT COUNT(*) FROM items WHERE result IS NULL").fetchone()
    assert waiting == 2
    uploads = sum(emulator.stats.submissions_by_digest.values())

    resumed = [r async for r in processor.stream(_docs(4), journal=old)]

    assert all(r["success"] for r in resumed)
    assert sum(bool(r.get("from_journal")) for r in resumed) == 2
    assert sum(emulator.stats.submissions_by_digest.values()) == uploads, "uploaded again"
    with contextlib.closing(sqlite3.connect(old)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "stage_submissions" not in tables  # one-stage items add nothing to the file


async def test_closing_the_stream_mid_batch_releases_the_journal_at_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Leaving `async for` and closing the stream ends its batch then, not when the garbage
    collector finalizes it: the same journal opens again straight away."""
    journal = tmp_path / "ocr.journal"
    emulator.config.seconds_per_page = 0.05
    processor = DocumentProcessor(config_for(emulator, max_concurrent_requests=1))
    stream = processor.stream(_docs(3), journal=journal)
    async for first in stream:
        assert first["success"]
        break
    await stream.aclose()

    again = [r async for r in processor.stream(_docs(3), journal=journal)]

    assert sorted(r["index"] for r in again) == [0, 1, 2]
    assert all(r["success"] for r in again)
    assert sum(bool(r.get("from_journal")) for r in again) == 1
