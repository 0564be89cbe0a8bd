"""The pipeline's extraction through the Batch API, on the emulator (compressed batch clock).

Each document's extraction requests become lines of batch files as its OCR finishes (one
per page with `per_page`, each under `StageKey(index, "extraction", page)` in its
`custom_id` and the journal); what crossed the wire is read from the emulator's counters
(`stats.total("responses")`: synchronous POSTs; `files_uploaded`, `batches_created`,
`batch_executions_by_custom_id`; Datalab's `submissions_by_digest`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import BatchAPI, ExtractionPipeline, PipelineSummary
from genai_coroutines.documents.prices import list_cents_per_page
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine.stages import StageKey
from genai_coroutines.responses.batch.spool import key_of
from tests.pipeline_support import MODEL, invoice_fields, invoice_pdf, pipeline_for
from tests.scale_support import billed_usd
from tests.test_batch_api import journal_jobs
from tests.test_cli import assert_each_index_once, output_lines, run, start, until
from tests.test_cli_extract import extract_args, write_invoices
from tests.test_pipeline_options import ALLOWANCE, budgeted, one_estimate
from tests.test_stages import until as task_until

FAST = BatchAPI(poll_interval_secs=0.01, flush_idle_secs=0.05)

PAGE_SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "invoice_number": {"type": "string"}},
}


def executions(emulator: Emulator) -> dict[str, int]:
    return dict(emulator.stats.batch_executions_by_custom_id)


def summary_of(pipeline: ExtractionPipeline) -> PipelineSummary:
    summary = pipeline.last_summary
    assert isinstance(summary, PipelineSummary)
    return summary


async def test_documents_extract_through_the_batch_api_at_half_the_price(
    emulator: Emulator,
) -> None:
    """Six documents: no synchronous POST, the same rows as the synchronous pipeline plus
    `batch_id` and `custom_id`, and the extraction costs half."""
    docs = [invoice_pdf(i, 1 + i % 3) for i in range(6)]
    batched = pipeline_for(emulator)
    rows = await batched.process(docs, batch_api=FAST)
    stats = emulator.stats
    assert stats.total("responses") == 0, "an extraction went through POST /v1/responses"
    assert stats.batches_created >= 1 and len(executions(emulator)) == 6
    assert set(executions(emulator).values()) == {1}

    direct = pipeline_for(emulator)
    sync_rows = await direct.process(docs)
    assert stats.total("responses") == 6
    for index, (ours, theirs) in enumerate(zip(rows, sync_rows, strict=True)):
        assert ours["index"] == theirs["index"] == index
        assert list(ours) == [*theirs, "batch_id", "custom_id"], "the same shape, plus two keys"
        assert ours["success"] and ours["fields"] == theirs["fields"] == invoice_fields(index)
        assert ours["service_tier"] == "batch" and ours["usage"] == theirs["usage"]
        assert ours["batch_id"].startswith("batch_")
        assert key_of(ours["custom_id"]) == StageKey(index, "extraction", 0)
    ours_summary, theirs_summary = summary_of(batched), summary_of(direct)
    assert theirs_summary.cost_usd > 0
    assert ours_summary.cost_usd == pytest.approx(theirs_summary.cost_usd * 0.5)
    assert ours_summary.cost_cents == pytest.approx(theirs_summary.cost_cents), "OCR: the same"
    assert not ours_summary.differences(), "the batches' usage is the rows' tokens"


def paged(emulator: Emulator) -> ExtractionPipeline:
    return pipeline_for(emulator, per_page=True, schema=PAGE_SCHEMA, ocr={"output_format": "json"})


async def test_per_page_sends_one_batch_line_per_page(emulator: Emulator) -> None:
    """`per_page` on the Batch API: one line per page under its page's key, the rows the
    synchronous pipeline makes."""
    docs = [invoice_pdf(i, pages) for i, pages in enumerate([2, 3, 1])]
    rows = await paged(emulator).process(docs, batch_api=FAST)
    lines = executions(emulator)
    assert emulator.stats.total("responses") == 0 and set(lines.values()) == {1}
    keys = {key_of(line) for line in lines}
    assert keys == {StageKey(i, "extraction", p) for i, n in enumerate([2, 3, 1]) for p in range(n)}

    sync_rows = await paged(emulator).process(docs)
    for ours, theirs in zip(rows, sync_rows, strict=True):
        assert ours["success"] and ours["fields"] == theirs["fields"]
        assert ours["extraction"]["page_fields"] == theirs["extraction"]["page_fields"]
        assert ours["extraction"]["requests"] == len(ours["custom_id"].split(","))
        assert [key_of(c) for c in ours["custom_id"].split(",")] == [
            StageKey(ours["index"], "extraction", p) for p in range(ours["page_count"])
        ]


async def test_lines_go_out_as_documents_finish_their_ocr(emulator: Emulator) -> None:
    """The 1-page document's line is in a batch created before the 6-page document's OCR
    is done: its file went out after `flush_idle_secs`, not at the input's end."""
    emulator.config.seconds_per_page = 0.1
    docs = [invoice_pdf(0, 1), invoice_pdf(1, 6)]
    pipeline = pipeline_for(emulator)
    rows = await pipeline.process(docs, batch_api=FAST)
    assert all(row["success"] for row in rows)
    assert emulator.stats.batches_created == 2
    assert rows[0]["batch_id"] != rows[1]["batch_id"]


async def test_a_rerun_collects_the_batch_of_an_interrupted_pipeline(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Interrupted while its batch runs: the rerun polls the journaled batch (no OCR job,
    file or batch bought again, each page's line run once); a rerun with background=True,
    whose bodies the batch cannot answer, is refused before anything is sent."""
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i, 2) for i in range(3)]
    await interrupt_once_batched(emulator, docs, journal, lines=1)
    stats = emulator.stats
    uploaded, created = stats.files_uploaded, stats.batches_created

    background = pipeline_for(
        emulator,
        per_page=True,
        schema=PAGE_SCHEMA,
        ocr={"output_format": "json"},
        request={"background": True},
    )
    converted = dict(stats.submissions_by_digest)
    with pytest.raises(ValueError, match="batch_api=True"):
        await background.process(docs, journal=journal)
    assert stats.submissions_by_digest == converted and stats.total("responses") == 0
    rows = await paged(emulator).process(docs, journal=journal, batch_api=FAST)

    assert all(row["success"] for row in rows)
    assert set(stats.submissions_by_digest.values()) == {1}, "a document was converted twice"
    assert (stats.files_uploaded, stats.batches_created) == (uploaded, created)
    assert len(executions(emulator)) == 6 and set(executions(emulator).values()) == {1}
    assert stats.total("responses") == 0


async def interrupt_once_batched(
    emulator: Emulator, docs: list[bytes], journal: Path, *, lines: int
) -> None:
    """Run `docs` per page on the Batch API with `journal`, and cancel the run (Ctrl-C)
    once at least `lines` extraction lines are in journaled batches: they run on."""
    emulator.config.batch_seconds_per_line = 0.1
    task = asyncio.ensure_future(paged(emulator).process(docs, journal=journal, batch_api=FAST))
    deadline = asyncio.get_running_loop().time() + 5.0
    while batched_lines(journal) < lines:
        assert not task.done() and asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def batched_lines(journal: Path) -> int:
    """Extraction lines the journal holds in a batch, read without writing."""
    if not journal_jobs(journal):
        return 0
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM stage_lines JOIN group_jobs USING (file_id)"
        ).fetchone()
    finally:
        db.close()
    return int(count)


async def test_a_rerun_without_batch_api_collects_the_journaled_batch_and_sends_the_rest(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun without batch_api of an interrupted pipeline's journal, with one more
    document: the lines its batch holds are collected from it (no synchronous POST for
    them, no file or batch bought again), the new document is extracted synchronously."""
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i, 2) for i in range(3)]
    await interrupt_once_batched(emulator, docs, journal, lines=6)
    stats = emulator.stats
    uploaded, created = stats.files_uploaded, stats.batches_created

    rows = await paged(emulator).process([*docs, invoice_pdf(3, 1)], journal=journal)

    assert all(row["success"] for row in rows)
    assert (stats.files_uploaded, stats.batches_created) == (uploaded, created)
    assert len(executions(emulator)) == 6 and set(executions(emulator).values()) == {1}
    assert stats.total("responses") == 1, "only the new document's page is POSTed"
    assert all(row["service_tier"] == "batch" and row["batch_id"] for row in rows[:3])
    assert "batch_id" not in rows[3] and rows[3]["service_tier"] != "batch"
    assert set(stats.submissions_by_digest.values()) == {1}, "a document was converted twice"


async def test_kill_9_then_resume_of_a_batch_api_pipeline_buys_nothing_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    """`extract --batch-api` killed once a batch is journaled while later documents are
    still at Datalab: the rerun converts no document twice, uploads no journaled file
    again and runs no line twice."""
    emulator.config.seconds_per_page = 0.05  # 1..6 pages: OCR ready after 0.05..0.3 s
    emulator.config.batch_seconds_per_line = 0.1
    write_invoices(tmp_path, [1, 6, 5, 4])
    journal, output = tmp_path / "pipeline.journal", tmp_path / "out.jsonl"
    args = extract_args(
        emulator,
        tmp_path,
        "--journal",
        str(journal),
        "--concurrency",
        "4",
        "--batch-api",
        "--batch-poll-interval",
        "0.02",
        "--batch-flush-idle",
        "0.05",
    )
    first = await start(emulator, tmp_path, *args)
    await until(first, lambda: len(journal_jobs(journal)) >= 1, "a batch was journaled")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    stats = emulator.stats
    uploaded, created = stats.files_uploaded, stats.batches_created
    assert created >= 1 and len(executions(emulator)) < 4

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    assert len(stats.submissions_by_digest) == 4
    assert set(stats.submissions_by_digest.values()) == {1}, "a document was uploaded twice"
    assert stats.files_uploaded - uploaded == stats.batches_created - created
    assert len(executions(emulator)) == 4 and set(executions(emulator).values()) == {1}
    assert stats.total("responses") == 0
    rows = output_lines(output)
    assert_each_index_once(rows, 4)
    assert all(row["success"] and row["service_tier"] == "batch" for row in rows)
    assert {row["index"]: row["fields"] for row in rows} == {i: invoice_fields(i) for i in range(4)}


@pytest.mark.parametrize("endpoint", ["batches_poll", "files_read"])
async def test_a_batch_that_cannot_be_polled_or_read_leaves_rows_pending_for_the_rerun(
    emulator: Emulator, tmp_path: Path, endpoint: str
) -> None:
    """The batch cannot be polled (or its output read) this run: each row fails as the
    Responses Batch API's pending results do, its lines stay journaled, and the rerun
    collects them from that batch: no line run twice, no file uploaded twice."""
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i, pages) for i, pages in enumerate([2, 1])]
    paged_retrying_once = pipeline_for(
        emulator,
        per_page=True,
        schema=PAGE_SCHEMA,
        ocr={"output_format": "json"},
        request={"max_retries": 1},
    )
    emulator.faults.schedule(endpoint, "503", times=2)
    first = await paged_retrying_once.process(docs, journal=journal, batch_api=FAST)
    assert all(not row["success"] and row["batch_pending"] for row in first)
    assert all(row["failed_stage"] == "extraction" and row["is_retriable"] for row in first)
    assert all("rerun with the same journal" in row["error"] for row in first)
    assert list(first[0])[-3:] == ["batch_id", "custom_id", "batch_pending"]
    stats = emulator.stats
    assert (stats.files_uploaded, stats.batches_created) == (1, 1)

    again = await paged_retrying_once.process(docs, journal=journal, batch_api=FAST)
    assert all(row["success"] for row in again)
    named = PAGE_SCHEMA["properties"]
    assert [row["fields"] for row in again] == [
        {k: v for k, v in invoice_fields(i).items() if k in named} for i in range(2)
    ]
    assert {row["batch_id"] for row in again} == {first[0]["batch_id"]}
    assert (stats.files_uploaded, stats.batches_created) == (1, 1), "a file went out twice"
    assert len(executions(emulator)) == 3 and set(executions(emulator).values()) == {1}
    assert set(stats.submissions_by_digest.values()) == {1}, "a document was converted twice"
    assert stats.total("responses") == 0


@pytest.mark.parametrize(
    ("value", "error"), [("yes", TypeError), (1, TypeError), (BatchAPI, TypeError)]
)
async def test_batch_api_is_checked_as_the_responses_processor_checks_it(
    emulator: Emulator, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="batch_api"):
        await pipeline_for(emulator).process([invoice_pdf(0)], batch_api=value)
    with pytest.raises(ValueError, match="background=True"):
        await pipeline_for(emulator, request={"background": True}).process(
            [invoice_pdf(0)], batch_api=True
        )
    assert not emulator.stats.submissions_by_digest, "something was sent"


# -- a budget, dedupe ------------------------------------------------------------------


def billed_on_batches(emulator: Emulator) -> float:
    """US dollars the emulator charged when every extraction went through a batch: Datalab's
    cents, and the tokens at the Batch API's half price."""
    stats = emulator.stats
    return sum(stats.cents_billed.values()) / 100 + billed_usd(stats.billed_tokens, MODEL) / 2


async def test_a_budget_reserves_each_batch_line_at_half_price_and_stops_within_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    """`max_cost_usd` with `batch_api`: each line held at the Batch API's price before it goes
    into a file, settled by its batch's usage; the run stops with `budget_exceeded` rows
    within one estimate of the budget, and a rerun with a higher one finishes the rest
    without buying anything twice."""
    journal, limit = tmp_path / "pipeline.journal", 0.02
    docs = [invoice_pdf(i) for i in range(12)]
    rows = await budgeted(emulator).process(
        docs, journal=journal, max_cost_usd=limit, batch_api=FAST
    )
    done = [row for row in rows if row["success"]]
    refused = [row for row in rows if not row["success"]]
    assert [row["index"] for row in rows] == list(range(12)) and 0 < len(done) < 12
    assert {row["error_type"] for row in refused} == {"budget_exceeded"}
    assert all(row["service_tier"] == "batch" and row["batch_id"] for row in done)
    assert emulator.stats.total("responses") == 0, "an extraction was POSTed"
    assert billed_on_batches(emulator) <= limit + one_estimate(emulator)
    kept = [row["index"] for row in refused if row["failed_stage"] == "extraction"]

    again = await budgeted(emulator).process(
        docs, journal=journal, max_cost_usd=1.0, batch_api=FAST
    )
    assert all(row["success"] for row in again)
    assert [row["fields"] for row in again] == [invoice_fields(i) for i in range(12)]
    assert set(emulator.stats.submissions_by_digest.values()) == {1}, "converted twice"
    assert len(executions(emulator)) == 12 and set(executions(emulator).values()) == {1}
    assert all(again[i]["ocr"]["from_journal"] for i in kept), "a finished OCR was bought again"


async def test_lines_collected_from_a_journaled_batch_are_charged_to_the_budget(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A rerun without batch_api, on a budget name, collects the lines an interrupted run's
    batch holds and spends what they cost: a later run on that name then finds the budget
    spent (were they free, its document would fit)."""
    journal, name = tmp_path / "pipeline.journal", f"docs-{uuid.uuid4().hex}"
    docs = [invoice_pdf(i, 2) for i in range(3)]
    emulator.config.batch_seconds_per_line = 0.1
    pipeline = pipeline_for(
        emulator,
        per_page=True,
        schema=PAGE_SCHEMA,
        ocr={"output_format": "json"},
        request={"max_output_tokens": ALLOWANCE},
    )
    run = pipeline.process(
        docs, journal=journal, batch_api=FAST, max_cost_usd=1.0, budget_name=name
    )
    task = asyncio.ensure_future(run)
    await task_until(task, lambda: batched_lines(journal) == 6, "6 lines in a batch")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    ocr_spent = sum(emulator.stats.cents_billed.values()) / 100  # what the name holds
    assert emulator.stats.billed_tokens["output"] == 0, "no line answered yet"

    one_page = list_cents_per_page(pipeline.ocr) / 100
    rows = await pipeline.process(docs, journal=journal, max_cost_usd=1.0, budget_name=name)
    assert all(row["success"] and row["batch_id"] for row in rows)
    lines = billed_usd(emulator.stats.billed_tokens, MODEL) / 2
    assert emulator.stats.total("responses") == 0 and lines > 0

    limit = ocr_spent + one_page + lines / 2  # fits the new page only if the lines were free
    [late] = await pipeline.process([invoice_pdf(9)], max_cost_usd=limit, budget_name=name)
    assert late["error_type"] == "budget_exceeded" and late["failed_stage"] == "ocr"


async def test_dedupe_converts_and_extracts_identical_documents_once_on_the_batch_api(
    emulator: Emulator,
) -> None:
    """`dedupe` with `batch_api`: a copy of a document is its original's row (one conversion,
    one line); a rescan (other bytes, the same text) is converted and its extraction is a
    line of its own (a line answers the one document that holds it: see the README)."""
    one, two = invoice_pdf(1), invoice_pdf(2)
    rescan = invoice_pdf(1, extra=b"% scanned again")
    pipeline = pipeline_for(emulator, ocr={"max_concurrent_requests": 1})
    rows = await pipeline.process([one, two, one, rescan, two], dedupe=True, batch_api=FAST)

    assert all(row["success"] for row in rows)
    assert [row.get("duplicate_of") for row in rows] == [None, None, 0, None, 1]
    assert (
        rows[2]["batch_id"] == rows[0]["batch_id"] and rows[2]["custom_id"] == rows[0]["custom_id"]
    )
    assert rows[3]["fields"] == rows[0]["fields"] == invoice_fields(1)
    stats = emulator.stats
    assert sorted(stats.submissions_by_digest.values()) == [1, 1, 1], "a copy was converted"
    assert len(executions(emulator)) == 3 and set(executions(emulator).values()) == {1}
    batched = {StageKey(index, "extraction", 0) for index in (0, 1, 3)}
    assert {key_of(line) for line in executions(emulator)} == batched
    assert stats.total("responses") == 0
    summary = summary_of(pipeline)
    assert summary.duplicates == 2 and summary.extraction_requests == 3
    assert summary.cost_usd == pytest.approx(billed_usd(stats.billed_tokens, MODEL) / 2)
