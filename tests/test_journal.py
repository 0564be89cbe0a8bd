"""The journal both APIs write (`engine.journal`): it refuses what would make a batch pay
twice or lose what it paid for.

One journal per batch: a second user (another process, or a second `Journal` in this one)
gets `JournalLocked` at open. A journal that cannot be written is refused at open, and a
write failing mid-batch raises a precise `JournalError`. A damaged, empty or foreign file
is refused at open, and the WAL is checkpointed so that losing the `-wal` file after a
crash loses only the last period.

Every case uses a real file and real processes. The tests run as root, where a
chmod does not stop a write, so read-only files and folders are made immutable with
`chattr +i` (which stops root too; the test fails, naming why, where the filesystem or
the container does not allow it), and a write failing mid-batch is a child process whose
file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) the journal runs into, as into a
full disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import zstandard

from genai_coroutines import ResponsesProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine.journal import (
    WINDOW,
    Journal,
    JournalError,
    JournalLocked,
    JournalMismatch,
    request_digest,
)
from genai_coroutines.engine.lookahead import SCAN_ROWS
from genai_coroutines.engine.records import FAST, Records
from genai_coroutines.engine.stages import StageKey
from tests.responses_support import request_for

REPO = Path(__file__).resolve().parents[1]
PAGE = 4096


def result(index: int, size: int = 0) -> dict[str, object]:
    return {"index": index, "success": True, "text": "x" * size}


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A python process running `script` against this checkout, stdin and stdout piped."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def ready(process: subprocess.Popen[str]) -> str:
    """The child's "ready ..." line: what it did is done (no sleeping to find out)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("ready"):
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"child did not get ready: {line!r} {err}")
    return line


HOLD = """
    import sys
    from genai_coroutines.engine.journal import Journal
    journal = Journal(sys.argv[1], sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()
    journal.close()
"""


@contextlib.contextmanager
def holding(path: Path, kind: str = "responses") -> Iterator[subprocess.Popen[str]]:
    process = child(HOLD, str(path), kind)
    try:
        ready(process)
        yield process
    finally:
        if process.poll() is None:
            process.communicate("\n", timeout=10)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make `path` (a file or a folder) unwritable, for root too."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    assert shutil.which("chattr"), "running as root, only chattr +i makes a file read-only"
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    assert made.returncode == 0, f"chattr +i is not allowed here: {made.stderr.strip()}"
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# One journal, one batch.


def test_a_second_process_on_the_same_journal_is_refused_naming_the_path(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batch.journal"
    with holding(path) as other:
        with pytest.raises(JournalLocked) as caught:
            Journal(path, "responses")
        assert str(path) in str(caught.value)
        assert f"process {other.pid}" in str(caught.value)
        assert isinstance(caught.value, JournalError)
    with Journal(path, "responses") as journal:  # released when the other one closed it
        journal.record_result(0, "d", result(0))


def test_the_lock_of_a_killed_process_does_not_block_the_rerun(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    process = child(HOLD, str(path), "responses")
    ready(process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    with Journal(path, "responses", resume=True) as journal:
        assert journal.results() == []


def test_a_second_journal_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with Journal(path, "responses"):
        with pytest.raises(JournalLocked, match="in use"):
            Journal(path, "responses")
        with pytest.raises(JournalMismatch, match="holds a responses batch, not documents"):
            Journal(path, "documents")  # of another kind is the more useful answer


async def test_a_batch_on_a_journal_in_use_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "batch.journal"
    with holding(path):
        with pytest.raises(JournalLocked):
            await ResponsesProcessor().process_batch(
                request_for(emulator, ["a", "b"]), journal=path
            )
    assert emulator.stats.total("responses") == 0


def test_mismatch_stays_a_value_error() -> None:
    assert issubclass(JournalMismatch, ValueError) and issubclass(JournalMismatch, JournalError)


# A journal that cannot be written is found out before anything is paid for.


def test_a_journal_in_a_missing_folder_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"cannot create journal .*: its folder does not exist"):
        Journal(tmp_path / "no-such-folder" / "batch.journal", "responses")
    assert list(tmp_path.iterdir()) == []


def test_a_journal_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(JournalError, match="is not a folder"):
        Journal(tmp_path / "notes.txt" / "batch.journal", "responses")


def test_a_folder_at_the_journal_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "batch.journal").mkdir()
    with pytest.raises(JournalError, match="is not a regular file"):
        Journal(tmp_path / "batch.journal", "responses")


async def test_a_read_only_journal_is_refused_at_open(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with Journal(path, "responses") as journal:
        journal.record_result(0, "d", result(0))
    with read_only(path):
        with pytest.raises(JournalError, match=f"cannot write journal {re.escape(str(path))}: "):
            Journal(path, "responses", resume=True)
        with pytest.raises(JournalError, match="readonly"):
            await ResponsesProcessor().process_batch(request_for(emulator, ["a"]), journal=path)
    assert emulator.stats.total("responses") == 0


def test_a_new_journal_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    with read_only(folder):
        with pytest.raises(JournalError, match=f"cannot create journal {re.escape(str(folder))}"):
            Journal(folder / "batch.journal", "responses")


def test_an_existing_journal_in_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    with Journal(folder / "batch.journal", "responses") as journal:
        journal.record_result(0, "d", result(0))
    with read_only(folder):  # the file is writable, but its -wal cannot be created
        with pytest.raises(JournalError, match="cannot open journal .*folder is read-only"):
            Journal(folder / "batch.journal", "responses", resume=True)


FULL_DISK = """
    import resource, signal, sys
    from genai_coroutines.engine.journal import Journal, JournalError
    from genai_coroutines.engine.stages import StageKey
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    journal = Journal(sys.argv[1], "documents")
    resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))
    written = 0
    try:
        for index in range(1000):
            journal.record_submission(StageKey(index), "d", f"req-{index}", "http://127.0.0.1/x")
            journal.record_result(index, "d", {"success": True, "text": "x" * 2000})
            written += 1
    except JournalError as exc:
        print("ready", written, exc, flush=True)
    else:
        print("ready never failed", flush=True)
"""


def test_a_write_failing_mid_batch_raises_a_precise_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    process = child(FULL_DISK, str(path))
    line = ready(process)
    process.communicate(timeout=10)

    assert "never failed" not in line
    written = int(line.split()[1])
    assert 0 < written < 1000
    assert f"to journal {path}" in line and "cannot write the " in line
    with Journal(path, "documents", resume=True) as journal:  # what was written is whole
        assert len(journal.results()) == written


# Damaged journals, and what survives losing the WAL.


def test_a_journal_with_garbage_in_the_middle_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with Journal(path, "responses") as journal:
        for index in range(200):
            journal.record_result(index, "d", result(index, size=300))
    pages = path.stat().st_size // PAGE
    assert pages > 10 and not Path(f"{path}-wal").exists()  # all in the main file
    with path.open("r+b") as handle:
        handle.seek(PAGE * (pages // 2))
        handle.write(b"\xff" * PAGE)

    with pytest.raises(JournalError, match=f"journal {re.escape(str(path))} is damaged: "):
        Journal(path, "responses", resume=True)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    path.write_text("prompt 1\nprompt 2\n" * 500)
    with pytest.raises(JournalError, match="is not a journal: file is not a database"):
        Journal(path, "responses")
    assert path.read_text().startswith("prompt 1")


def test_another_applications_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="an SQLite database but not a journal"):
        Journal(path, "responses")
    db = sqlite3.connect(path)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert tables == {"users"}


async def test_an_unreadable_record_ends_its_item_journal_error_and_the_next_run_sends_it(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether each result decodes is not checked at open (that reads every record), nor when
    the rerun matches its row (`Journal.input_digest`): one that does not decode when its
    item is yielded ends `journal_error` (retriable), named at WARNING, journaled so that
    the next rerun sends it; the rest of the batch is unharmed."""
    path = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(8)]
    processor = ResponsesProcessor()
    await processor.process_batch(request_for(emulator, prompts[:6]), journal=path)
    db = sqlite3.connect(path)  # a newer encoding, bit rot: bytes that are not JSON
    db.execute("UPDATE items SET result = x'ff00fe' WHERE idx = 2")
    db.execute("UPDATE items SET result = '[1, 2]' WHERE idx = 4")
    db.commit()
    db.close()

    with caplog.at_level("WARNING", logger="genai_coroutines.engine.journal"):
        rerun = await processor.process_batch(request_for(emulator, prompts), journal=path)
    failed = [r for r in rerun["results"] if not r["success"]]
    assert [r["index"] for r in failed] == [2, 4]
    assert all(r["error_type"] == "journal_error" and r["is_retriable"] for r in failed)
    assert [r["index"] for r in rerun["results"] if r.get("from_journal")] == [0, 1, 3, 5]
    assert emulator.stats.total("responses") == 6 + 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("record of item 2 is unreadable, not JSON" in w for w in warnings), warnings
    assert any(f"journal {path}: 2 unreadable record(s)" in w for w in warnings), warnings

    third = await processor.process_batch(request_for(emulator, prompts), journal=path)
    assert all(r["success"] for r in third["results"])
    assert [r["index"] for r in third["results"] if not r.get("from_journal")] == [2, 4]
    assert emulator.stats.total("responses") == 10
    fourth = await processor.process_batch(request_for(emulator, prompts), journal=path)
    assert all(r.get("from_journal") for r in fourth["results"])  # the new results replaced them
    assert emulator.stats.total("responses") == 10


def test_an_empty_file_is_refused_for_resume_but_starts_afresh_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    path.write_bytes(b"")
    with pytest.raises(JournalError, match=r"is empty \(0 bytes\): nothing to resume"):
        Journal(path, "responses", resume=True)
    with Journal(path, "responses") as journal:  # the library's default, as before
        journal.record_result(0, "d", result(0))
    with Journal(path, "responses", resume=True) as journal:
        assert journal.results() == [result(0)]


def test_resume_needs_an_existing_journal_of_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with pytest.raises(JournalError, match="does not exist: nothing to resume"):
        Journal(path, "responses", resume=True)
    assert list(tmp_path.iterdir()) == []  # not even a lock file
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 1")  # a database with nothing in it
    db.close()
    with pytest.raises(JournalError, match="holds no batch"):
        Journal(path, "responses", resume=True)


def test_close_checkpoints_and_truncates_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with Journal(path, "responses") as journal:
        for index in range(50):
            journal.record_result(index, "d", result(index))
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.journal"
    shutil.copyfile(path, copy)  # the main file alone holds everything
    with Journal(copy, "responses", resume=True) as journal:
        assert len(journal.results()) == 50


def test_records_are_checkpointed_every_few_seconds_too(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    with Journal(path, "responses") as journal:
        journal.CHECKPOINT_RECORDS = 10**9
        journal.CHECKPOINT_SECS = 0  # every record is "a few seconds" after the last
        for index in range(3):
            journal.record_result(index, "d", result(index))
        copy = tmp_path / "copy.journal"
        shutil.copyfile(path, copy)  # while open: the WAL is not copied
    with Journal(copy, "responses", resume=True) as journal:
        assert [r["index"] for r in journal.results()] == [0, 1, 2]


KILLED = """
    import sys
    from genai_coroutines.engine.journal import Journal
    journal = Journal(sys.argv[1], "responses")
    journal.CHECKPOINT_RECORDS, journal.CHECKPOINT_SECS = 10, 10**9
    for index in range(25):
        journal.record_result(index, "d", {"index": index, "success": True})
    print("ready", flush=True)
    sys.stdin.readline()  # killed here
"""


@pytest.mark.parametrize("lose_wal", [False, True])
def test_after_kill_9_losing_the_wal_loses_at_most_the_last_period(
    tmp_path: Path, lose_wal: bool
) -> None:
    path = tmp_path / "batch.journal"
    process = child(KILLED, str(path))
    ready(process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    wal = Path(f"{path}-wal")
    assert wal.exists() and wal.stat().st_size > 0  # no close: the last 5 are only there
    if lose_wal:
        wal.unlink()

    with Journal(path, "responses", resume=True) as journal:
        indices = [r["index"] for r in journal.results()]

    assert indices == list(range(20 if lose_wal else 25))


def test_each_stage_of_an_item_keeps_its_own_submission_and_group_line(tmp_path: Path) -> None:
    """Stage requests of one item (an OCR job, two pages' extractions) are journaled side by
    side, each found under its own key, and ended by its stage's result or the item's."""
    ocr, page0, page1 = (
        StageKey(7, "ocr"),
        StageKey(7, "extraction", 0),
        StageKey(7, "extraction", 1),
    )
    with Journal(tmp_path / "p.journal", "pipeline") as journal:
        journal.record_submission(ocr, "o", "job-1", "http://127.0.0.1/check/1")
        journal.record_submission(page0, "e0", "resp-0", "resp-0")
        journal.record_group("file-1", [(page1, "e1", "7.extraction.1-ab", 0, None)], tokens=9)

        assert journal.submitted(ocr, "o") == ("job-1", "http://127.0.0.1/check/1")
        assert journal.submitted(page0, "e0") == ("resp-0", "resp-0")
        assert journal.submitted(StageKey(7), "o") is None  # not the item's
        line = journal.group_line(page1, "e1")
        assert line is not None and line.file_id == "file-1"
        assert journal.group_line(page0, "e0") is None

        journal.record_stage(ocr, "o", {"success": True})
        assert journal.submitted(ocr, "o") is None
        assert journal.submitted(page0, "e0") is not None
        journal.record_result(7, "row", result(7))
        assert journal.submitted(page0, "e0") is None
        assert journal.group_line(page1, "e1") is None


# What a record costs, journals written before, and a resume that reads items in windows.


def old_format(path: Path) -> None:
    """Rewrite a journal as this library wrote it before records were deflated: every result
    plain JSON, every digest 64 hex characters, no dictionary."""
    db = sqlite3.connect(path)
    records = Records.of(db)
    rows = db.execute("SELECT idx, digest, result FROM items").fetchall()
    db.executemany(
        "UPDATE items SET digest = ?, result = ? WHERE idx = ?",
        [
            (digest.hex(), orjson.dumps(records.decode(blob)), idx)
            for idx, digest, blob in rows
            if isinstance(digest, bytes)
        ],
    )
    db.execute("DELETE FROM meta WHERE key = 'dictionary'")
    db.commit()
    db.close()


async def test_one_line_answers_take_under_a_kilobyte_each_and_read_back_whole(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A one-line answer's result is about 1.7 KB of JSON; the journal stores it compressed
    against its first record (`engine.records`), digest in 32 bytes."""
    path, n = tmp_path / "batch.journal", 400
    prompts = [f"Summarise item number {i} in one line." for i in range(n)]
    first = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert path.stat().st_size <= 1024 * n
    with Journal(path, "responses", resume=True) as journal:
        assert journal.results() == first["results"]  # every record whole
    rerun = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert all(r["from_journal"] for r in rerun["results"])
    assert emulator.stats.total("responses") == n


def test_a_large_record_is_compressed_harder_and_every_size_reads_back(tmp_path: Path) -> None:
    """Small records are written for a fast replay, large ones (a document's Markdown) to
    take little room: a 200 KB result of varied text takes well under what the small
    records' level would give it, and both read back whole."""
    written = [
        {"index": 0, "success": True, "markdown": "a short answer " * 40},
        {"index": 1, "success": True, "markdown": (REPO / "README.md").read_text()[:200_000]},
    ]
    with Journal(tmp_path / "batch.journal", "documents") as journal:
        for index, each in enumerate(written):
            journal.record_result(index, request_digest(b"%d" % index), each)
    db = sqlite3.connect(tmp_path / "batch.journal")
    records = Records.of(db)
    blobs = [blob for (blob,) in db.execute("SELECT result FROM items ORDER BY idx")]
    db.close()
    assert [records.decode(blob) for blob in blobs] == written
    assert records.dictionary is not None
    shared = zstandard.ZstdCompressionDict(
        records.dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT
    )
    at_fast = zstandard.ZstdCompressor(level=FAST, dict_data=shared)
    assert len(blobs[1]) < 0.9 * len(at_fast.compress(orjson.dumps(written[1])))


async def test_answers_that_no_longer_decompress_are_failed_once_then_sent_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A damaged dictionary: the rows still say answer (their bytes match their CRC), so a
    rerun replays them, finds they do not read back, and ends each `journal_error`
    (journaled under its own digest); the next rerun sends exactly those."""
    path, n = tmp_path / "batch.journal", 300
    prompts = [f"Summarise item number {i} in one line." for i in range(n)]
    await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    db = sqlite3.connect(path)
    deflated = {
        i for (i,) in db.execute("SELECT idx FROM items WHERE substr(result, 1, 1) = x'02'")
    }
    db.execute("UPDATE meta SET value = zeroblob(length(value)) WHERE key = 'dictionary'")
    db.commit()
    db.close()
    assert len(deflated) > 256  # more than one run of records read together

    second = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    failed = {r["index"] for r in second["results"] if not r["success"]}
    assert failed == deflated
    assert {r["error_type"] for r in second["results"] if not r["success"]} == {"journal_error"}
    assert emulator.stats.total("responses") == n  # nothing sent yet
    third = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert all(r["success"] for r in third["results"])
    assert emulator.stats.total("responses") == n + len(deflated)


async def test_a_journal_written_before_deflated_records_resumes_and_takes_new_ones(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(10)]
    first = await ResponsesProcessor().process_batch(
        request_for(emulator, prompts[:6]), journal=path
    )
    old_format(path)
    with Journal(path, "responses", resume=True) as journal:
        assert journal.results() == first["results"]

    second = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert [r["index"] for r in second["results"] if r.get("from_journal")] == list(range(6))
    assert emulator.stats.total("responses") == 10
    third = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert all(r.get("from_journal") for r in third["results"])  # old records and new alike
    assert emulator.stats.total("responses") == 10
    db = sqlite3.connect(path)
    kinds = {bytes(blob[:1]) for (blob,) in db.execute("SELECT result FROM items")}
    db.close()
    assert kinds == {b"{", b"\x02"}  # the old records kept as they were, the new compressed


def deflated_format(path: Path) -> int:
    """Rewrite a journal's compressed records as the version before zstd wrote them: raw
    deflate against the same dictionary, each row's CRC-32 taken of its new bytes. How
    many were rewritten."""
    db = sqlite3.connect(path)
    records = Records.of(db)
    assert records.dictionary is not None
    rewritten = []
    for idx, blob, crc in db.execute("SELECT idx, result, answer_crc FROM items"):
        if isinstance(blob, bytes) and blob[:1] == b"\x02":
            packer = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=records.dictionary)
            data = orjson.dumps(records.decode(blob))
            old = b"\x01" + packer.compress(data) + packer.flush()
            rewritten.append((old, zlib.crc32(old) if crc >= 0 else crc, idx))
    db.executemany("UPDATE items SET result = ?, answer_crc = ? WHERE idx = ?", rewritten)
    db.commit()
    db.close()
    return len(rewritten)


async def test_a_journal_of_deflated_records_replays_every_one(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Records the version before zstd deflated read back whole: a rerun sends nothing."""
    path, n = tmp_path / "batch.journal", 300
    prompts = [f"Summarise item number {i} in one line." for i in range(n)]
    first = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert deflated_format(path) > n - 10  # all but the few before the dictionary
    rerun = await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    assert all(r["from_journal"] for r in rerun["results"])
    assert [{**r, "from_journal": False} for r in rerun["results"]] == [
        {**r, "from_journal": False} for r in first["results"]
    ]
    assert emulator.stats.total("responses") == n


def test_items_read_in_windows_answer_each_index_with_its_own_request(tmp_path: Path) -> None:
    """`finished` and `submitted` read `items` a window of indices at a time: across window
    boundaries, out of order, after writes into a window already read, each index still
    answers only its own request."""
    path, n = tmp_path / "batch.journal", 3 * WINDOW + 5
    with Journal(path, "documents") as journal:
        for index in range(n):
            if index % 5:
                journal.record_result(index, request_digest(b"%d" % index), result(index))
            else:
                journal.record_submission(
                    StageKey(index), request_digest(b"%d" % index), f"req-{index}", "u"
                )
    order = list(range(n))
    random.Random(7).shuffle(order)
    with Journal(path, "documents", resume=True) as journal:
        for index in order[: n // 2] + sorted(order[n // 2 :]):
            digest = request_digest(b"%d" % index)
            if index % 5:
                assert journal.finished(index, digest) == result(index)
                assert journal.submitted(StageKey(index), digest) is None
            else:
                assert journal.finished(index, digest) is None
                assert journal.submitted(StageKey(index), digest) == (f"req-{index}", "u")
            assert journal.finished(index, request_digest(b"other")) is None
            assert journal.submitted(StageKey(index), request_digest(b"other")) is None
        journal.record_submission(StageKey(n - 1), request_digest(b"new"), "req-new", "v")
        assert journal.submitted(StageKey(n - 1), request_digest(b"new")) == ("req-new", "v")
        journal.record_result(n - 1, request_digest(b"new"), result(n - 1, 3))
        assert journal.finished(n - 1, request_digest(b"new")) == result(n - 1, 3)
        assert journal.submitted(StageKey(n - 1), request_digest(b"new")) is None
        assert journal.finished(n + WINDOW, request_digest(b"new")) is None


async def test_a_half_finished_journal_sends_only_the_rest_and_replays_in_input_order(
    emulator: Emulator, tmp_path: Path
) -> None:
    path, n = tmp_path / "batch.journal", WINDOW + 100
    prompts = [f"prompt {i}" for i in range(n)]
    await ResponsesProcessor().process_batch(request_for(emulator, prompts), journal=path)
    db = sqlite3.connect(path)  # a run interrupted halfway, a few earlier items unfinished
    db.execute(f"DELETE FROM items WHERE idx >= {n // 2} OR idx % 97 = 3")
    db.commit()
    db.close()
    unfinished = [i for i in range(n) if i >= n // 2 or i % 97 == 3]

    stream = ResponsesProcessor().stream(request_for(emulator, prompts), journal=path)
    results = [result async for result in stream]
    replayed = [r["index"] for r in results if r.get("from_journal")]
    assert replayed == [i for i in range(n) if i not in set(unfinished)]  # in input order
    assert sorted(r["index"] for r in results if not r.get("from_journal")) == unfinished
    assert emulator.stats.total("responses") == n + len(unfinished)

    again = ResponsesProcessor().stream(request_for(emulator, prompts), journal=path)
    indices = [r["index"] async for r in again if r["from_journal"]]
    assert indices == list(range(n))  # a finished journal replays in input order


async def test_a_long_finished_stretch_does_not_hold_back_the_first_new_request(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun tells a journaled answer from its row (`Journal.replayable`) and reads the
    record only when it is yielded, so the workers go through a finished stretch without
    waiting for the consumer: the one unfinished item after 1,200 finished ones is sent and
    answered while a consumer taking one result per turn of the loop has taken few of them
    (before, it was sent only once all but the last two hundred had been taken)."""
    path, n = tmp_path / "batch.journal", 1200
    prompts = [f"prompt {i}" for i in range(n + 1)]
    await ResponsesProcessor().process_batch(request_for(emulator, prompts[:n]), journal=path)

    order = []
    async for result in ResponsesProcessor().stream(request_for(emulator, prompts), journal=path):
        order.append((result["index"], bool(result.get("from_journal"))))
        await asyncio.sleep(0)  # a consumer with work of its own per result
    assert [index for index, replayed in order if replayed] == list(range(n))  # input order
    position = order.index((n, False))
    assert position < n // 2, position
    assert emulator.stats.total("responses") == n + 1


def test_input_digests_match_only_the_answer_they_were_journaled_with(tmp_path: Path) -> None:
    """`input_digest` reads `SCAN_ROWS` indices at a time: across window boundaries and out of
    order, each index matches its own input digest only, and only for an answer. A row
    rewritten since by a version that knows nothing of input digests (its digest, record and
    CRC replaced, its record and CRC alone for a failure, or its digest and record alone;
    its input digest left beside them) is not matched by one: its request's digest decides.
    A row whose record rotted still is (the record is not read to match it: whether it
    reads back is found when its item is yielded)."""
    path, n = tmp_path / "batch.journal", 2 * SCAN_ROWS + 5

    def tag(index: int) -> bytes:
        return hashlib.sha256(b"input %d" % index).digest()[:16]

    with Journal(path, "responses") as journal:
        for index in range(n):
            digest = request_digest(b"%d" % index)
            answered = index % 3 != 0
            journal.record_result(
                index, digest, result(index), answered=answered, input_digest=tag(index)
            )
    db = sqlite3.connect(path)  # as older versions rerun items 7, 8 and 10; 13 rots
    (other,) = db.execute("SELECT result FROM items WHERE idx = 11").fetchone()
    edited = bytes.fromhex(request_digest(b"edited"))
    db.execute(
        "UPDATE items SET digest = ?, result = ?, answer_crc = ? WHERE idx = 7",
        (edited, other, zlib.crc32(other)),
    )
    db.execute("UPDATE items SET result = ?, answer_crc = -1 WHERE idx = 8", (other,))
    db.execute("UPDATE items SET digest = ?, result = ? WHERE idx = 10", (edited, other))
    db.execute("UPDATE items SET result = ? WHERE idx = 13", (other,))
    db.commit()
    db.close()
    order = list(range(n + 3))
    random.Random(3).shuffle(order)
    with Journal(path, "responses", resume=True) as journal:
        for index in order[: n // 2] + sorted(order[n // 2 :]):
            expected = index < n and index % 3 != 0 and index not in (7, 8, 10)
            assert journal.input_digest(index) == (tag(index) if expected else None), index


def _scan_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("journal-scan")]


def test_input_digests_are_read_ahead_on_a_thread_that_ends_with_the_journal(
    tmp_path: Path,
) -> None:
    """The window after the one in use is read on the journal's reader thread; a row this
    run rewrites, in the window in use or in the one read ahead (whose read may predate
    the write: it is read again), is no longer matched by the input digest read before;
    closing the journal ends the thread. A journal this open created is not scanned at all
    (no thread)."""
    path, n = tmp_path / "batch.journal", 3 * SCAN_ROWS

    def tag(index: int) -> bytes:
        return hashlib.sha256(b"input %d" % index).digest()[:16]

    assert not _scan_threads()
    with Journal(path, "responses") as journal:
        for index in range(n):
            journal.record_result(
                index,
                request_digest(b"%d" % index),
                result(index),
                answered=True,
                input_digest=tag(index),
            )
        assert journal.input_digest(5) is None  # a new journal: this run's answers only
        assert not _scan_threads()
    with Journal(path, "responses", resume=True) as journal:
        assert journal.input_digest(5) == tag(5)
        assert len(_scan_threads()) == 1
        ahead = SCAN_ROWS + 7  # in the window read ahead
        for index in (6, ahead):  # rewritten by this run: a failure now
            journal.record_result(
                index, request_digest(b"%d" % index), result(index), answered=False
            )
        assert [journal.input_digest(i) for i in (6, 7)] == [None, tag(7)]
        assert journal.input_digest(ahead) is None
        assert journal.input_digest(ahead + 1) == tag(ahead + 1)
        assert journal.input_digest(2 * SCAN_ROWS + 1) == tag(2 * SCAN_ROWS + 1)
    assert not _scan_threads()
