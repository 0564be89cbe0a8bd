"""The pipeline's options on the emulator: `dedupe`, a budget over both stages
(`max_cost_usd`, `budget_name`), background extraction, `per_page` with each, and their
`extract` flags.

What was sent and billed is read from the emulator's counters: `submissions_by_digest`
(Datalab uploads per document), `responses_by_digest` (extraction POSTs per prompt),
`cents_billed` and `billed_tokens` (what it charged).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import uuid
from pathlib import Path

import pytest

from genai_coroutines import PRICES, ExtractionPipeline, PipelineSummary
from genai_coroutines.documents.prices import list_cents_per_page
from genai_coroutines.emulator import Emulator
from tests.pipeline_support import MODEL, invoice_fields, invoice_pdf, pipeline_for, text_pdf
from tests.scale_support import billed_usd, redis_server
from tests.test_cli import output_lines, run, start, until
from tests.test_cli_extract import extract_args
from tests.test_pipeline import PAGE_SCHEMA, PAGES
from tests.test_stages import until as task_until

ONE_AT_A_TIME = {"max_concurrent_requests": 1}
PAGED = {"output_format": "json", **ONE_AT_A_TIME}
"""Per-page OCR, one document at a time: the first document's requests are sent first."""
ALLOWANCE = 64
"""The extraction's `max_output_tokens` in the budget tests: what each request is estimated at."""


def billed(emulator: Emulator) -> float:
    """US dollars the emulator charged: Datalab's cents and OpenAI's tokens."""
    stats = emulator.stats
    return sum(stats.cents_billed.values()) / 100 + billed_usd(stats.billed_tokens, MODEL)


def one_estimate(emulator: Emulator) -> float:
    """The budget's largest estimate of one request: a one-page OCR at its list price, or
    an extraction (at most 1,000 input tokens here, and `ALLOWANCE` out)."""
    pages = pipeline_for(emulator).ocr
    price = PRICES[MODEL]
    extraction = (1_000 * price.input + ALLOWANCE * price.output) / 1_000_000
    return max(list_cents_per_page(pages) / 100, extraction)


def budgeted(emulator: Emulator) -> ExtractionPipeline:
    """A pipeline one request at a time per stage, each extraction allowed `ALLOWANCE` out."""
    concurrency = ONE_AT_A_TIME
    return pipeline_for(
        emulator, ocr=concurrency, request={**concurrency, "max_output_tokens": ALLOWANCE}
    )


def all_once(emulator: Emulator) -> bool:
    stats = emulator.stats
    return set(stats.submissions_by_digest.values()) | set(stats.responses_by_digest.values()) == {
        1
    }


# -- dedupe ---------------------------------------------------------------------------


async def test_identical_documents_and_identical_prompts_are_sent_once(
    emulator: Emulator,
) -> None:
    """Two copies of a document are one conversion and one extraction; a rescan (other
    bytes, the same text) is converted but its extraction is the original's request."""
    one, two, three = invoice_pdf(1), invoice_pdf(2), invoice_pdf(3)
    rescan = invoice_pdf(1, extra=b"% scanned again")
    pipeline = pipeline_for(emulator, ocr=ONE_AT_A_TIME)  # the original's OCR ends first
    rows = await pipeline.process([one, two, one, rescan, three, two], dedupe=True)

    assert [row["index"] for row in rows] == list(range(6))
    assert all(row["success"] for row in rows)
    assert [row.get("duplicate_of") for row in rows] == [None, None, 0, None, None, 1]
    assert {**rows[5], "index": 1, "duplicate_of": None} == {**rows[1], "duplicate_of": None}
    assert rows[3]["fields"] == invoice_fields(1) and rows[3]["extraction"]["duplicate_of"] == [0]
    assert rows[3]["usage"] is None and rows[3]["response_ids"] == rows[0]["response_ids"]
    stats = emulator.stats
    assert sorted(stats.submissions_by_digest.values()) == [1, 1, 1, 1]
    assert sorted(stats.responses_by_digest.values()) == [1, 1, 1]
    summary = pipeline.last_summary
    assert isinstance(summary, PipelineSummary)
    assert summary.duplicates == 2 and summary.extraction_requests == 3
    assert summary.cost_cents == pytest.approx(sum(stats.cents_billed.values()))
    assert summary.cost_usd == pytest.approx(billed_usd(stats.billed_tokens, MODEL))


async def test_per_page_with_dedupe_sends_each_distinct_page_once(emulator: Emulator) -> None:
    docs = [text_pdf(PAGES), text_pdf(PAGES, extra=b"% scanned again"), text_pdf(PAGES)]
    pipeline = pipeline_for(emulator, per_page=True, schema=PAGE_SCHEMA, ocr=PAGED)
    rows = await pipeline.process(docs, dedupe=True)

    assert all(row["success"] for row in rows)
    assert rows[1]["extraction"]["duplicate_of"] == [0, 0, 0] and rows[2]["duplicate_of"] == 0
    assert rows[0]["extraction"]["page_fields"] == rows[1]["extraction"]["page_fields"]
    assert sum(emulator.stats.submissions_by_digest.values()) == 2
    assert sum(emulator.stats.responses_by_digest.values()) == 3


async def test_a_rerun_reuses_a_shared_extraction_at_no_cost(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A page answered by another document's identical request is journaled as its own
    stage (with `duplicate_of`): the rerun of its failed document reuses it, sends only
    the failed page, and bills the row that page alone."""
    journal = tmp_path / "pipeline.journal"
    docs = [text_pdf(PAGES[:1]), text_pdf(PAGES[:2])]
    emulator.faults.schedule("responses", "400", when_input_contains="S1")
    pipeline = pipeline_for(emulator, per_page=True, schema=PAGE_SCHEMA, ocr=PAGED)
    first = await pipeline.process(docs, journal=journal, dedupe=True)
    assert first[0]["success"] and first[1]["failed_stage"] == "extraction"

    again = await pipeline.process(docs, journal=journal, dedupe=True)
    assert again[0]["from_journal"] and again[1]["success"]
    assert again[1]["extraction"]["duplicate_of"] == [0] and again[1]["extraction"]["reused"] == 1
    stats = emulator.stats
    assert sorted(stats.responses_by_digest.values()) == [1, 1], "page 0 sent once, page 1 once"
    page_1 = stats.billed_tokens["input"] - first[0]["usage"]["input_tokens"]
    assert again[1]["usage"]["input_tokens"] == page_1, "the shared page billed to this row"


# -- a budget over both stages --------------------------------------------------------


async def test_a_budget_stops_both_stages_then_a_higher_one_continues_without_rebuying(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal, limit = tmp_path / "pipeline.journal", 0.02
    docs = [invoice_pdf(i) for i in range(12)]
    rows = await budgeted(emulator).process(docs, journal=journal, max_cost_usd=limit)

    done = [row for row in rows if row["success"]]
    refused = [row for row in rows if not row["success"]]
    assert [row["index"] for row in rows] == list(range(12)) and 0 < len(done) < 12
    assert all(row["error_type"] == "budget_exceeded" for row in refused)
    assert "budget of $0.02 is reached" in refused[0]["error"]
    assert billed(emulator) <= limit + one_estimate(emulator)
    assert billed(emulator) > limit - 2 * one_estimate(emulator), "stopped too early"
    kept = [row["index"] for row in refused if row["failed_stage"] == "extraction"]

    pipeline = budgeted(emulator)
    again = await pipeline.process(docs, journal=journal, max_cost_usd=1.0)
    assert all(row["success"] for row in again)
    assert [row["fields"] for row in again] == [invoice_fields(i) for i in range(12)]
    assert all_once(emulator), "a document converted or extracted twice"
    assert all(again[i]["ocr"]["from_journal"] for i in kept), "a finished OCR was bought again"
    assert sum(bool(row.get("from_journal")) for row in again) == len(done)


async def test_a_budget_refuses_an_unpriced_model_and_bad_values_before_sending(
    emulator: Emulator,
) -> None:
    pipeline = pipeline_for(emulator)
    for options, error, named in [
        ({"max_cost_usd": "1"}, TypeError, "max_cost_usd must be a number"),
        ({"max_cost_usd": -1.0}, ValueError, "max_cost_usd must be a non-negative"),
        ({"budget_name": "n"}, ValueError, "budget_name needs max_cost_usd"),
        ({"max_cost_usd": 1.0, "budget_name": " "}, ValueError, "budget_name must not"),
        ({"dedupe": 1}, TypeError, "dedupe must be True or False"),
    ]:
        with pytest.raises(error, match=named):
            await pipeline.process([invoice_pdf(0)], **options)
    unpriced = pipeline_for(emulator, request={"model": "my-finetune"})
    with pytest.raises(ValueError, match="needs a price for model 'my-finetune'"):
        await unpriced.process([invoice_pdf(0)], max_cost_usd=1.0)
    assert not emulator.stats.submissions_by_digest and not emulator.stats.responses_by_digest


async def test_two_pipelines_on_one_budget_name_share_it(emulator: Emulator) -> None:
    name, limit = f"documents-{uuid.uuid4().hex}", 0.03
    first = [invoice_pdf(i) for i in range(10)]
    second = [invoice_pdf(i) for i in range(100, 110)]
    one, two = await asyncio.gather(
        budgeted(emulator).process(first, max_cost_usd=limit, budget_name=name),
        budgeted(emulator).process(second, max_cost_usd=limit, budget_name=name),
    )
    assert any(row["success"] for row in one) and any(row["success"] for row in two)
    assert limit - 2 * one_estimate(emulator) < billed(emulator) <= limit + one_estimate(emulator)
    refused = next(row for row in two if not row["success"])
    assert refused["error_type"] == "budget_exceeded" and repr(name) in refused["error"]
    spent = billed(emulator)

    third_pipeline = budgeted(emulator)
    [third] = await third_pipeline.process([invoice_pdf(200)], max_cost_usd=limit, budget_name=name)
    assert third["error_type"] == "budget_exceeded" and billed(emulator) == spent


async def test_per_page_with_a_budget_stops_between_pages(emulator: Emulator) -> None:
    """A three-page document's extraction is three requests, each reserved on its own: a
    budget of its OCR and one page's request sends that one page, the rest end unsent."""
    pipeline = pipeline_for(
        emulator,
        per_page=True,
        schema=PAGE_SCHEMA,
        ocr=PAGED,
        request={"max_output_tokens": ALLOWANCE},
    )
    price = PRICES[MODEL]
    least = ALLOWANCE * price.output / 1e6
    most = (100 * price.input + ALLOWANCE * price.output) / 1e6
    assert most < 2 * least  # so the budget below holds one page's request, not two
    ocr = 3 * list_cents_per_page(pipeline.ocr) / 100
    [row] = await pipeline.process([text_pdf(PAGES)], max_cost_usd=ocr + most)

    assert row["failed_stage"] == "extraction" and row["error_type"] == "budget_exceeded"
    assert row["extraction"]["requests"] == 1 and len(row["response_ids"]) == 1
    assert emulator.stats.total("responses") == 1
    assert billed(emulator) <= ocr + most


# -- background extraction -------------------------------------------------------------


async def test_background_extraction_with_dedupe_and_a_budget(emulator: Emulator) -> None:
    emulator.config.background_queue_seconds = 0.02
    options = {"background": True, "poll_interval_secs": 0.01, "max_output_tokens": ALLOWANCE}
    docs = [invoice_pdf(7), invoice_pdf(7, extra=b"% scanned again"), invoice_pdf(8)]
    pipeline = pipeline_for(emulator, ocr=ONE_AT_A_TIME, request=options)
    rows = await pipeline.process(docs, dedupe=True, max_cost_usd=1.0)
    assert all(row["success"] for row in rows) and rows[1]["extraction"]["duplicate_of"] == [0]
    assert sum(emulator.stats.responses_by_digest.values()) == 2
    assert emulator.stats.total("responses_poll") > 0


async def test_per_page_background_with_dedupe_and_a_budget_resumes_by_polling(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Each page's background response id is journaled under its own stage key; a run
    cancelled while they are queued at OpenAI is rerun by polling them, the budget
    admitting them (paid for), the copy of the document sent nothing."""
    emulator.config.background_queue_seconds = 0.3
    journal = tmp_path / "pipeline.journal"
    options = {"background": True, "poll_interval_secs": 0.01, "max_output_tokens": ALLOWANCE}
    pipeline = pipeline_for(emulator, per_page=True, schema=PAGE_SCHEMA, ocr=PAGED, request=options)
    docs = [text_pdf(PAGES), text_pdf(PAGES)]
    run = pipeline.process(docs, journal=journal, dedupe=True, max_cost_usd=1.0)
    task = asyncio.create_task(run)
    await task_until(task, lambda: len(submissions(journal, "extraction")) == 3, "3 ids")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    journaled = sorted(stage for _, stage in submissions(journal, "extraction"))
    assert journaled == [f"extraction:{page}" for page in range(3)]
    assert not emulator.stats.completed_by_digest

    ocr_spent = sum(emulator.stats.cents_billed.values()) / 100  # all the budget left
    rows = await pipeline.process(docs, journal=journal, dedupe=True, max_cost_usd=ocr_spent)
    assert all(row["success"] for row in rows) and rows[1]["duplicate_of"] == 0
    assert len(rows[0]["extraction"]["page_fields"]) == 3
    assert sum(emulator.stats.responses_by_digest.values()) == 3, "a page POSTed again"


# -- the extract command -----------------------------------------------------------------


def write_documents(folder: Path, documents: dict[str, bytes]) -> None:
    (folder / "docs").mkdir(parents=True)
    for name, data in documents.items():
        (folder / "docs" / name).write_bytes(data)


async def test_extract_background_killed_then_resumed_polls_rather_than_posts(
    emulator: Emulator, tmp_path: Path
) -> None:
    """`extract --background`: each extraction's response id is journaled when OpenAI
    accepts it, so the rerun of a killed run polls it, and a budget admits it (it is paid
    for) even when the OCR the journal charges to the budget has spent it all."""
    emulator.config.background_queue_seconds = 1.0
    write_documents(tmp_path, {f"doc{i}.pdf": invoice_pdf(i) for i in range(3)})
    journal = tmp_path / "pipeline.journal"
    args = extract_args(
        emulator, tmp_path, "--background", "--poll-interval", "0.05", "--journal", str(journal)
    )

    def ids_journaled() -> bool:
        return len(submissions(journal, "extraction")) == 3

    first = await start(emulator, tmp_path, *args)
    await until(first, ids_journaled, "the 3 extractions POSTed and their ids journaled")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    assert not emulator.stats.completed_by_digest

    ocr_cents = sum(emulator.stats.cents_billed.values())
    code, _, err = await run(emulator, *args, "--resume", "--max-cost", str(ocr_cents / 100))
    assert code == 0, err
    rows = output_lines(tmp_path / "out.jsonl")
    assert sorted(row["index"] for row in rows) == [0, 1, 2] and all(r["success"] for r in rows)
    assert sum(emulator.stats.responses_by_digest.values()) == 3, "an extraction POSTed again"
    assert set(emulator.stats.completed_by_digest.values()) == {1}


def submissions(path: Path, stage: str) -> list[tuple[int, str]]:
    """(index, stage name) of the stage requests journaled as accepted, read without writing."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT idx, stage FROM stage_submissions WHERE stage LIKE ?", (f"{stage}%",)
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


async def test_extract_dedupe_and_a_budget_two_processes_share_on_one_redis(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Two `extract` processes given one --budget-name and --limits-store stay within it
    together; --dedupe makes a copy of a document one conversion, labelled by its own path."""
    limit = 0.03
    name = f"extract-{uuid.uuid4().hex}"
    for worker in ("a", "b"):
        base = 0 if worker == "a" else 100
        documents = {f"doc{i:02d}.pdf": invoice_pdf(base + i) for i in range(8)}
        documents["doc00-copy.pdf"] = documents["doc00.pdf"]
        write_documents(tmp_path / worker, documents)
    with redis_server() as redis:
        flags = ["--dedupe", "--max-cost", str(limit), "--budget-name", name]
        flags += ["--limits-store", redis.url, "--max-output-tokens", str(ALLOWANCE)]
        flags += ["--concurrency", "1", "--in-order"]
        results = await asyncio.gather(
            *(run(emulator, *extract_args(emulator, tmp_path / w, *flags)) for w in ("a", "b"))
        )
    assert [code for code, _, _ in results] == [1, 1], [err for _, _, err in results]
    assert limit - 2 * one_estimate(emulator) < billed(emulator)
    assert billed(emulator) <= limit + 2 * one_estimate(emulator)
    deduplicated = 0
    for worker in ("a", "b"):
        rows = output_lines(tmp_path / worker / "out.jsonl")
        assert len(rows) == 9
        copy, original = rows[:2]  # doc00-copy.pdf sorts before doc00.pdf
        assert copy["source"].endswith("doc00-copy.pdf")
        assert original["source"].endswith("doc00.pdf")
        # the first of the two prepared is sent (documents are read side by side), the
        # other takes its answer: one conversion, each row labelled by its own path
        sent, twin = (original, copy) if "duplicate_of" in copy else (copy, original)
        assert "duplicate_of" not in sent
        if sent["success"]:  # (the other worker may have spent the budget before it began)
            assert twin["duplicate_of"] == rows.index(sent) and twin["success"]
            deduplicated += 1
        assert any(row.get("error_type") == "budget_exceeded" for row in rows)
    assert deduplicated and all_once(emulator)
