"""`stream(journal=..., summary=...)`: a rerun pays only for what did not succeed, and a
journal that stops taking writes mid-batch stops the batch from paying for more.

For the latter the journal's files are made immutable (`chattr +i`, which holds for root
too) while the batch runs: the next record fails, nothing more is sent, every item not yet
sent ends `journal_error` with `attempts: 0`, and what finished stays in the output.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genai_coroutines import (
    BatchAPI,
    BatchSummary,
    ResponsesProcessor,
    ResponsesRequest,
    parse_responses,
)
from genai_coroutines.emulator import Emulator
from tests.responses_support import request_for


async def collect(
    processor: ResponsesProcessor, request: ResponsesRequest, journal: Path
) -> list[dict[str, Any]]:
    results = [r async for r in processor.stream(request, journal=journal)]
    return sorted(results, key=lambda r: r["index"])


async def test_rerun_with_the_journal_sends_only_what_did_not_succeed(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(10)]
    emulator.faults.schedule("responses", "400")  # one item fails the first time
    first = await collect(ResponsesProcessor(), request_for(emulator, prompts), journal)
    assert sum(r["success"] for r in first) == 9
    assert emulator.stats.total("responses") == 10

    prompts[3] = "prompt 3, edited"  # a changed input is not answered from the journal
    second = await collect(ResponsesProcessor(), request_for(emulator, prompts), journal)
    assert all(r["success"] for r in second)
    resent = 10 - sum(1 for r in second if r.get("from_journal"))
    failed_index = next(r["index"] for r in first if not r["success"])
    assert resent == (1 if failed_index == 3 else 2)
    assert emulator.stats.total("responses") == 10 + resent
    assert parse_responses(second)[3] == 'Emulated answer to "prompt 3, edited".'
    assert parse_responses(second)[5] == parse_responses(first)[5]


async def test_closing_the_stream_mid_batch_releases_the_journal_at_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Leaving `async for` and closing the stream ends its batch then, not when the garbage
    collector finalizes it: the same journal opens again straight away."""
    journal = tmp_path / "batch.journal"
    request = request_for(emulator, ["a", "b", "c"], max_concurrent_requests=1)
    stream = ResponsesProcessor().stream(request, journal=journal)
    async for first in stream:
        assert first["success"]
        break
    await stream.aclose()  # type: ignore[attr-defined]

    again = await collect(ResponsesProcessor(), request, journal)

    assert [r["index"] for r in again] == [0, 1, 2] and all(r["success"] for r in again)
    assert sum(bool(r.get("from_journal")) for r in again) == 1


async def test_the_journal_never_holds_the_key(emulator: Emulator, tmp_path: Path) -> None:
    journal = tmp_path / "batch.journal"
    await collect(ResponsesProcessor(), request_for(emulator, ["a", "b"]), journal)
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert b"Emulated answer" in stored
    assert emulator.config.openai_api_key.encode() not in stored


async def test_summary_totals_tokens_retries_and_429s(emulator: Emulator) -> None:
    emulator.faults.schedule("responses", "429")
    summary = BatchSummary()
    processor = ResponsesProcessor()
    request = request_for(emulator, ["a", "b", "c"], max_concurrent_requests=1)
    results = [r async for r in processor.stream(request, summary=summary)]
    assert processor.last_summary is summary
    assert (summary.succeeded, summary.failed, summary.retries) == (3, 0, 1)
    assert summary.rate_limited == 1
    assert summary.input_tokens == sum(r["usage"]["input_tokens"] for r in results)
    assert summary.cost_usd > 0  # gpt-4o-mini is in the price table


async def test_a_replayed_run_totals_what_the_run_that_journaled_it_did(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun of a finished journal yields each result as journaled (marked
    `from_journal`) and totals the same counts, retries, 429s, tokens, tiers and cost,
    however its records are read (several runs of `replays.READ_RUN` here)."""
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(600)]
    emulator.faults.schedule("responses", "429", times=2)
    request = request_for(emulator, prompts)
    first, again = BatchSummary(), BatchSummary()
    sent = [r async for r in ResponsesProcessor().stream(request, journal=journal, summary=first)]
    calls = emulator.stats.total("responses")
    replayed = [
        r async for r in ResponsesProcessor().stream(request, journal=journal, summary=again)
    ]

    assert emulator.stats.total("responses") == calls  # nothing sent
    by_index = {r["index"]: r for r in sent}
    assert [r["index"] for r in replayed] == list(range(600))
    assert all(r == {**by_index[r["index"]], "from_journal": True} for r in replayed)
    assert (first.retries, first.rate_limited, again.reused) == (2, 2, 600)
    ignored = ("wall_seconds", "reused_from_journal")
    expected = {k: v for k, v in first.as_dict().items() if k not in ignored}
    assert {k: v for k, v in again.as_dict().items() if k not in ignored} == expected


def _immutable(paths: list[Path], on: bool) -> None:
    flag = "+i" if on else "-i"
    for path in paths:
        if path.exists():
            subprocess.run(["chattr", flag, str(path)], check=True)


async def test_a_journal_that_fails_mid_batch_stops_sending(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    files = [journal, Path(f"{journal}-wal")]  # not -shm: SQLite maps it in memory

    def prompts() -> Iterator[str]:
        for i in range(30):
            if i == 10:
                _immutable(files, on=True)
            yield f"prompt {i}"

    try:
        results = await ResponsesProcessor().process_batch(
            request_for(emulator, prompts(), max_concurrent_requests=1), journal=journal
        )
    finally:
        _immutable(files, on=False)

    rows = results["results"]
    assert len(rows) == 30 and [r["index"] for r in rows] == list(range(30))
    assert all(r["success"] for r in rows[:10])
    stopped = [r for r in rows if r.get("error_type") == "journal_error"]
    assert stopped and all(r["attempts"] == 0 for r in stopped)
    assert "cannot write" in stopped[0]["error"]
    assert emulator.stats.total("responses") <= 11  # at most the one in flight at the failure


def _blank_request_digests(journal: Path) -> None:
    """Overwrite every journaled request digest (and the 8 bytes of it an input digest is
    tied to), so only an input digest (`Adapter.input_digest`) can match a row."""
    db = sqlite3.connect(journal)
    rows = db.execute("SELECT idx, input_digest FROM items").fetchall()
    db.executemany(
        "UPDATE items SET digest = ?, input_digest = ? WHERE idx = ?",
        [(bytes(32), tied and tied[:16] + bytes(8), index) for index, tied in rows],
    )
    db.commit()
    db.close()


async def test_a_rerun_replays_by_input_digest_and_sends_again_whatever_was_edited(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun matches a journaled answer by a digest of its prompt under the batch's settings,
    without building the request: with every stored request digest blanked it still replays
    an unchanged batch whole, and sends again every item whose prompt, system prompt, model,
    schema or sampling parameter was edited since (none of them answered stale)."""
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(6)]
    await collect(ResponsesProcessor(), request_for(emulator, prompts), journal)
    _blank_request_digests(journal)

    again = await collect(ResponsesProcessor(), request_for(emulator, prompts), journal)
    assert all(r["from_journal"] for r in again) and emulator.stats.total("responses") == 6

    schema = {"type": "json_schema", "name": "a", "schema": {"type": "object"}}
    edits: list[dict[str, Any]] = [
        {"system_prompt": "You are verbose."},
        {"model": "gpt-4o"},
        {"response_format": schema},
        {"temperature": 0.5},
        {"user_prompts": [*prompts[:2], "prompt 2, edited", *prompts[3:]]},
    ]
    sent = 6
    for edit in edits:
        request = request_for(emulator, **{"prompts": prompts, **edit})
        results = await collect(ResponsesProcessor(), request, tmp_path / "copy.journal")
        sent += len(results)  # a journal of its own: the edited batch's answers
        edited = tmp_path / "edited.journal"
        edited.write_bytes(journal.read_bytes())
        results = await collect(ResponsesProcessor(), request, edited)
        fresh = [r["index"] for r in results if not r.get("from_journal")]
        expected = [2] if "user_prompts" in edit else list(range(6))
        assert fresh == expected, edit
        sent += len(fresh)
        assert emulator.stats.total("responses") == sent
        (tmp_path / "copy.journal").unlink()
        edited.unlink()


async def test_answers_of_the_batch_api_are_journaled_with_their_input_digests(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A Batch API line's input digest goes to disk with it (its spool, its group line) and
    comes back with its answer: with every request digest blanked, a rerun (through the
    Batch API or not) still replays the batch whole, sending and uploading nothing."""
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(30)]
    fast = BatchAPI(poll_interval_secs=0.01, max_requests_per_file=10)
    request = request_for(emulator, prompts)
    first = await ResponsesProcessor().process_batch(request, journal=journal, batch_api=fast)
    assert first["total_success"] == 30 and emulator.stats.files_uploaded == 3
    _blank_request_digests(journal)

    for batch_api in (fast, False):
        again = await ResponsesProcessor().process_batch(
            request, journal=journal, batch_api=batch_api
        )
        assert all(r["from_journal"] for r in again["results"])
    assert emulator.stats.files_uploaded == 3 and emulator.stats.total("responses") == 0


async def test_a_journal_without_input_digests_replays_by_request_digest(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Rows of a journal written before input digests (its `items` without the column) are
    matched by their request's digest; the answers a rerun adds keep their input digests."""
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(8)]
    await collect(ResponsesProcessor(), request_for(emulator, prompts[:5]), journal)
    db = sqlite3.connect(journal)
    db.execute("ALTER TABLE items DROP COLUMN input_digest")
    db.commit()
    db.close()

    again = await collect(ResponsesProcessor(), request_for(emulator, prompts), journal)
    assert [r["index"] for r in again if r.get("from_journal")] == list(range(5))
    assert emulator.stats.total("responses") == 8
    db = sqlite3.connect(journal)
    kept = db.execute("SELECT idx FROM items WHERE input_digest IS NOT NULL").fetchall()
    db.close()
    assert sorted(index for (index,) in kept) == [5, 6, 7]
    _blank_request_digests(journal)  # the new rows are found by their input digests alone
    third = await collect(ResponsesProcessor(), request_for(emulator, prompts), journal)
    assert [r["index"] for r in third if r.get("from_journal")] == [5, 6, 7]
