"""`genai-coroutines extract` as a user runs it: real subprocesses, kill -9 and --resume.

As in `test_cli.py`, the emulator runs in the test's loop and its counters say what
crossed the wire; the CLI is waited on by polling what it wrote, never paced by sleeps.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from genai_coroutines import cli
from genai_coroutines.documents.parse import document_text
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from genai_coroutines.engine.records import Records
from tests.pipeline_support import INVOICE_SCHEMA, invoice_fields, invoice_pdf
from tests.test_cli import assert_each_index_once, output_lines, run, start, until

MODEL = "gpt-4o-mini"


def extract_args(emulator: Emulator, tmp_path: Path, *extra: str) -> list[str]:
    (tmp_path / "invoice.json").write_bytes(orjson.dumps(INVOICE_SCHEMA))
    return [
        "extract",
        str(tmp_path / "docs" / "*.pdf"),
        "--schema",
        str(tmp_path / "invoice.json"),
        "--model",
        MODEL,
        "--base-url",
        emulator.openai_base_url,
        "--api-url",
        f"{emulator.datalab_base_url}/api/v1/convert",
        "--ocr-poll-interval",
        "0.05",
        "--retry-delay",
        "0.05",
        "--output",
        str(tmp_path / "out.jsonl"),
        *extra,
    ]


def write_invoices(tmp_path: Path, pages: list[int]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, count in enumerate(pages):
        (folder / f"doc{i}.pdf").write_bytes(invoice_pdf(i, count))


def ocr_accepted(path: Path) -> set[int]:
    """Documents whose OCR job was accepted (journaled under their "ocr" stage: its
    submission, or its result once it ended), read without writing."""
    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT idx FROM stage_submissions WHERE stage = 'ocr'"
            " UNION SELECT idx FROM stages WHERE stage = 'ocr'"
        ).fetchall()
    except sqlite3.OperationalError:  # no job accepted yet: no stage_submissions table
        return set()
    finally:
        db.close()
    return {idx for (idx,) in rows}


def stage_rows(path: Path) -> list[tuple[int, str, Any]]:
    """(index, stage, result) of every journaled stage, read without writing."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT idx, stage, result FROM stages ORDER BY idx").fetchall()
        records = Records.of(db)
        return [(idx, stage, records.decode(result)) for idx, stage, result in rows]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


async def test_extract_writes_one_row_per_document(emulator: Emulator, tmp_path: Path) -> None:
    write_invoices(tmp_path, [1, 3, 2])
    code, _, err = await run(emulator, *extract_args(emulator, tmp_path, "--in-order"))
    assert code == 0, err
    rows = output_lines(tmp_path / "out.jsonl")
    assert [row["index"] for row in rows] == [0, 1, 2]
    for i, row in enumerate(rows):
        assert row["source"].endswith(f"doc{i}.pdf") and row["success"]
        assert row["fields"] == {**invoice_fields(i)}
        assert row["failed_stage"] is None and row["page_count"] == [1, 3, 2][i]
    assert "documents: 3 (3 extracted, 0 failed)" in err and "total cost: $" in err
    assert emulator.stats.submissions_by_endpoint["convert"], "the OCR went to /convert"


async def test_kill_9_mid_pipeline_then_resume_buys_nothing_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.seconds_per_page = 0.15  # 1..8 pages: OCR ready after 0.15..1.2 s
    emulator.config.latency = 0.2
    write_invoices(tmp_path, list(range(1, 9)))
    journal, output = tmp_path / "pipeline.journal", tmp_path / "out.jsonl"
    args = extract_args(emulator, tmp_path, "--journal", str(journal), "--concurrency", "8")

    def mid_pipeline() -> bool:
        """Every job accepted, some documents extracted, one OCRed and not yet extracted."""
        submitted = len(ocr_accepted(journal)) == 8
        stages = [stage for _, stage, _ in stage_rows(journal)]
        ocred, extracted = stages.count("ocr"), len(stages) - stages.count("ocr")
        return submitted and 1 <= extracted < ocred < 8

    first = await start(emulator, tmp_path, *args)
    await until(first, mid_pipeline, "all 8 uploaded, some extracted, one only OCRed")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    assert sum(emulator.stats.submissions_by_digest.values()) == 8
    ocr_done = {idx: r for idx, stage, r in stage_rows(journal) if stage == "ocr"}
    extracted = {idx for idx, stage, _ in stage_rows(journal) if stage.startswith("extraction")}
    assert extracted and len(extracted) < 8

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    stats = emulator.stats
    assert len(stats.submissions_by_digest) == 8
    assert set(stats.submissions_by_digest.values()) == {1}, "a document uploaded twice"
    for index in extracted:  # what the journal holds as extracted was not bought again
        prompt = document_text(ocr_done[index])
        assert stats.completed_by_digest[digest(orjson.dumps(prompt))] == 1, index
    rows = output_lines(output)
    assert_each_index_once(rows, 8)
    assert all(row["success"] for row in rows)
    by_index = {row["index"]: row for row in rows}
    assert all(by_index[i]["fields"] == invoice_fields(i) for i in range(8))
    for index in set(ocr_done) - extracted:  # OCRed before the kill: its text was reused
        assert by_index[index]["ocr"]["from_journal"] and not by_index[index].get("from_journal")
    assert {i for i in range(8) if by_index[i].get("from_journal")} <= extracted
    assert "from journal" in err


def test_ocr_flags_take_the_ocr_prefix_where_the_request_flags_use_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATALAB_API_KEY", "dl-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {}}')
    argv = [
        "extract",
        "a.pdf",
        "--schema",
        str(tmp_path / "s.json"),
        "--model",
        MODEL,
        "--timeout",
        "7",
        "--ocr-timeout",
        "9",
        "--ocr-max-retries",
        "1",
        "--max-retries",
        "2",
        "--concurrency",
        "3",
        "--ocr-rpm",
        "30",
        "--skip-cache",
    ]
    args = cli.build_parser().parse_args(argv)
    ocr = cli._extract_ocr_config(args)
    request = cli._extraction_request(args)
    options: dict[str, Any] = {
        "timeout_secs": 9,
        "max_retries": 1,
        "max_concurrent_requests": 3,
        "requests_per_minute": 30,
        "skip_cache": True,
        "output_format": "markdown",
    }
    assert {name: getattr(ocr, name) for name in options} == options
    assert (request.timeout_secs, request.max_retries, request.max_concurrent_requests) == (7, 2, 3)
    assert ocr.endpoint == "convert"
    for flag in ("--page-schema", "--schema-id", "--checkpoint-id"):
        assert flag not in cli.build_parser().format_help()


async def test_extract_usage_errors_exit_2(emulator: Emulator, tmp_path: Path) -> None:
    write_invoices(tmp_path, [1])
    args = extract_args(emulator, tmp_path)
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad_schema = [*args[:3], str(tmp_path / "bad.json"), *args[4:]]
    code, _, err = await run(emulator, *bad_schema)
    assert code == 2 and "--schema" in err
    assert not (tmp_path / "out.jsonl").exists()
    assert emulator.stats.total("marker_submit") == 0


# -- --datalab-schema: many schemas, one OCR -----------------------------------------------

PARTIES = {"type": "object", "properties": {"vendor": {"type": "string"}}}


def datalab_args(emulator: Emulator, tmp_path: Path, *extra: str) -> list[str]:
    """The extract command with two Datalab schemas and no model."""
    (tmp_path / "invoice.json").write_bytes(orjson.dumps(INVOICE_SCHEMA))
    (tmp_path / "parties.json").write_bytes(orjson.dumps(PARTIES))
    return [
        "extract",
        str(tmp_path / "docs" / "*.pdf"),
        "--datalab-schema",
        f"invoice={tmp_path / 'invoice.json'}",
        "--datalab-schema",
        f"parties={tmp_path / 'parties.json'}",
        "--api-url",
        f"{emulator.datalab_base_url}/api/v1/convert",
        "--ocr-poll-interval",
        "0.05",
        "--retry-delay",
        "0.05",
        "--output",
        str(tmp_path / "out.jsonl"),
        *extra,
    ]


def extract_jobs(emulator: Emulator) -> int:
    return sum(emulator.stats.submissions_by_endpoint.get("extract", {}).values())


async def test_datalab_schema_fills_each_schema_from_one_conversion(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_invoices(tmp_path, [1, 2])
    code, _, err = await run(emulator, *datalab_args(emulator, tmp_path, "--in-order"))

    assert code == 0, err
    rows = output_lines(tmp_path / "out.jsonl")
    assert [row["fields"] for row in rows] == [
        {"invoice": invoice_fields(i), "parties": {"vendor": invoice_fields(i)["vendor"]}}
        for i in range(2)
    ]
    assert all(row["model"] is None and row["usage"] is None for row in rows)
    stats = emulator.stats
    assert sum(stats.parses_by_digest.values()) == 2 and extract_jobs(emulator) == 4
    assert "extraction (Datalab): 4 requests" in err and "extract:parties" in err
    assert emulator.stats.total("responses") == 0, "no model was asked"


async def test_datalab_schema_usage_errors_exit_2(emulator: Emulator, tmp_path: Path) -> None:
    write_invoices(tmp_path, [1])
    args = datalab_args(emulator, tmp_path)
    for bad, said in (
        (["--datalab-schema", "nameless"], "is not NAME=FILE"),
        (["--schema", str(tmp_path / "invoice.json")], "--schema and --datalab-schema"),
        (["--batch-api"], "--batch-api: Datalab's /extract (--datalab-schema) has no batch API"),
        (["--max-cost", "1"], "--max-cost cannot be used with --datalab-schema"),
    ):
        code, _, err = await run(emulator, *args, *bad)
        assert code == 2 and said in err, err
    (tmp_path / "flat.json").write_text('{"type": "object"}')
    code, _, err = await run(emulator, *args, "--datalab-schema", f"x={tmp_path / 'flat.json'}")
    assert code == 2 and "'properties'" in err
    no_model = [arg for arg in extract_args(emulator, tmp_path) if arg not in ("--model", MODEL)]
    code, _, err = await run(emulator, *no_model)
    assert code == 2 and "--model" in err
    assert emulator.stats.total("marker_submit") == 0


def journaled_jobs(path: Path) -> set[str]:
    """Request ids of the Datalab jobs journaled, accepted or finished, read without writing
    (a job finishing between the two reads is in one or both: never missed)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT request_id FROM stage_submissions").fetchall()
    except sqlite3.OperationalError:  # no job accepted yet: no stage_submissions table
        rows = []
    finally:
        db.close()
    return {request_id for (request_id,) in rows} | {
        result["request_id"] for _, _, result in stage_rows(path)
    }


def extract_submissions(path: Path) -> list[str]:
    """Request ids of the /extract jobs journaled as accepted and not finished."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT request_id FROM stage_submissions WHERE stage LIKE 'extract:%'"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [request_id for (request_id,) in rows]


async def test_kill_9_mid_multi_schema_run_then_resume_pays_no_stage_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Killed at a quiescent point: once one /extract finished and one accepted job is still
    running, every later submission and poll hangs, and the kill waits until no submission
    is half taken and each job Datalab accepted is in the journal. The resume polls what was
    accepted, sends the rest."""
    emulator.config.seconds_per_page = 0.3
    emulator.config.hang_seconds = 30.0
    pages = [1, 2, 3, 1, 2, 3]
    write_invoices(tmp_path, pages)
    journal = tmp_path / "pipeline.journal"
    args = datalab_args(emulator, tmp_path, "--journal", str(journal), "--concurrency", "3")
    loop_time = asyncio.get_running_loop().time

    def running_extraction() -> bool:
        """An /extract finished and another accepted, its job ready no sooner than 0.1 s."""
        done = [stage for _, stage, _ in stage_rows(journal) if stage.startswith("extract:")]
        jobs = emulator.datalab.jobs
        return bool(done) and any(
            request_id in jobs and jobs[request_id].ready_at > loop_time() + 0.1
            for request_id in extract_submissions(journal)
        )

    def quiescent() -> bool:
        """Every request the emulator is handling hangs, and each job Datalab accepted is
        journaled. Counting accepted jobs is not enough: a submission that passed the fault
        before it was scheduled is neither accepted nor journaled while the emulator still
        reads its PDF (in a worker thread, slow on a loaded machine), and a kill then lets
        Datalab accept a job whose id the client never learns. No hang ends while waiting
        (`hang_seconds` outlasts `until`), so each one the emulator counts is in flight."""
        stats = emulator.stats
        hanging = stats.faults["marker_submit hang"] + stats.faults["marker_poll hang"]
        accepted = set(emulator.datalab.jobs)
        return stats.in_flight == hanging and journaled_jobs(journal) == accepted

    first = await start(emulator, tmp_path, *args)
    await until(first, running_extraction, "one /extract done, one running")
    emulator.faults.schedule("marker_submit", "hang", times=1000)
    emulator.faults.schedule("marker_poll", "hang", times=1000)
    await until(first, quiescent, "every accepted job journaled")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    at_kill = {
        "conversions": sum(emulator.stats.submissions_by_endpoint["convert"].values()),
        "extractions": extract_jobs(emulator),
        "running": len(extract_submissions(journal)),
    }
    emulator.faults.clear()

    code, _, err = await run(emulator, *args, "--resume")

    assert code == 0, err
    print(
        f"\nkill -9 of a 6 x 2-schema run: at the kill {at_kill}; after the resume "
        f"{sum(emulator.stats.parses_by_digest.values())} conversions, "
        f"{extract_jobs(emulator)} extractions"
    )
    assert at_kill["running"] >= 1 and at_kill["extractions"] < 12
    stats = emulator.stats
    docs = [invoice_pdf(i, count) for i, count in enumerate(pages)]
    assert stats.parses_by_digest == {digest(doc): 1 for doc in docs}, "a document converted twice"
    assert extract_jobs(emulator) == 12, "a schema extracted twice"
    assert set(stats.submissions_by_endpoint["extract"].values()) == {2}  # 2 per checkpoint
    assert stats.cents_billed["extract"] == pytest.approx(sum(pages) * 0.6 * 2)
    rows = output_lines(tmp_path / "out.jsonl")
    assert_each_index_once(rows, 6)
    assert all(row["success"] for row in rows), [row["error"] for row in rows]
    assert all(row["fields"]["invoice"] == invoice_fields(row["index"]) for row in rows)
