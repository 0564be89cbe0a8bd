"""The OCR-to-extraction pipeline, on the emulator: streamed stages, failures named by
stage, one journal for both, per-page extraction; Datalab's /convert and /extract through
`DocumentProcessor`; the demo's table against the sample invoices' own text.

What crossed the wire is read from the emulator's counters and its request log
(`stats.events`), never inferred from timing.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pypdf
import pytest

from genai_coroutines import (
    DocumentConfig,
    DocumentProcessor,
    ExtractionPipeline,
    PipelineSummary,
    extraction_request,
    parse_documents,
)
from genai_coroutines.documents.config import CONVERT_URL, ENDPOINT_FIELDS, EXTRACT_URL
from genai_coroutines.documents.form import settings_fields
from genai_coroutines.documents.parse import document_text
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.datalab_form import FIELDS
from genai_coroutines.emulator.state import digest
from genai_coroutines.pipeline import merge_fields, page_texts
from tests.pipeline_support import (
    INVOICE_SCHEMA,
    MODEL,
    convert_url,
    invoice_fields,
    invoice_pdf,
    pipeline_for,
    text_pdf,
)
from tests.samples import FAIL_MARKER

ROOT = Path(__file__).resolve().parents[1]


def extract_url(emulator: Emulator) -> str:
    return f"{emulator.datalab_base_url}/api/v1/extract"


def prompt_digest(row_text: str) -> str:
    """How the emulator keys an extraction in `completed_by_digest`: its `input`."""
    return digest(orjson.dumps(row_text))


# -- streaming: no phase barrier ---------------------------------------------------------


async def test_the_first_extraction_is_sent_before_the_last_ocr_job_completes(
    emulator: Emulator,
) -> None:
    emulator.config.seconds_per_page = 0.05  # 1 page: ready after 0.05 s; 6 pages: 0.3 s
    docs = [invoice_pdf(i, pages) for i, pages in enumerate([1, 6, 2, 5, 3, 4])]
    rows = await pipeline_for(emulator).process(docs)

    assert [row["fields"] for row in rows] == [invoice_fields(i) for i in range(6)]
    events = list(emulator.stats.events)
    requests = [t for t, endpoint, what in events if endpoint == "responses"]
    completed = {what.split()[-1]: t for t, e, what in events if what.startswith("poll complete")}
    assert len(requests) == 6 and len(completed) == 6
    assert min(requests) < max(completed.values()), "extraction waited for every OCR job"
    # the 1-page invoice's extraction went out before the 6-page one's OCR was done
    assert completed[rows[0]["request_id"]] < min(requests) < completed[rows[1]["request_id"]]


async def test_each_stage_keeps_its_own_bound(emulator: Emulator) -> None:
    emulator.config.seconds_per_page = 0.03
    emulator.config.latency = 0.05
    pipeline = pipeline_for(emulator, ocr={"max_concurrent_requests": 2})
    rows = await pipeline.process([invoice_pdf(i, 2) for i in range(6)])
    assert all(row["success"] for row in rows)

    running, peak = 0, 0
    for _, endpoint, what in emulator.stats.events:
        if endpoint != "convert":
            continue
        if what.startswith("submitted"):
            running += 1
        elif what.startswith("poll complete"):
            running -= 1
        peak = max(peak, running)
    assert peak == 2, "documents in Datalab at once: ocr.max_concurrent_requests"


# -- rows, failures, summary -------------------------------------------------------------


async def test_an_ocr_failure_and_an_extraction_failure_name_their_stage(
    emulator: Emulator,
) -> None:
    docs = [
        invoice_pdf(0),
        invoice_pdf(1, extra=FAIL_MARKER),  # Datalab ends this job failed
        text_pdf([["Vendor: Broken Ltd", "Invoice number: X-1", "EXTRACT-FAILS"]]),
        invoice_pdf(3, 2),
    ]
    emulator.faults.schedule("responses", "400", when_input_contains="EXTRACT-FAILS")
    pipeline = pipeline_for(emulator)
    rows = await pipeline.process(docs)

    assert [row["success"] for row in rows] == [True, False, False, True]
    assert [row["failed_stage"] for row in rows] == [None, "ocr", "extraction", None]
    ocr_failed, extraction_failed = rows[1], rows[2]
    assert ocr_failed["error_type"] == "job_failed" and "could not process" in ocr_failed["error"]
    assert ocr_failed["fields"] is None and ocr_failed["extraction"] is None
    assert extraction_failed["error_type"] == "invalid_request_error"
    assert extraction_failed["status"] == 400 and extraction_failed["is_retriable"] is False
    assert extraction_failed["page_count"] == 1 and extraction_failed["request_id"]
    assert rows[0]["fields"] == invoice_fields(0) and rows[3]["fields"] == invoice_fields(3)

    summary = pipeline.last_summary
    assert isinstance(summary, PipelineSummary)
    assert (summary.succeeded, summary.ocr_failed, summary.extraction_failed) == (2, 1, 1)
    assert summary.ocr_done == 3 and summary.pages == 4  # the OCR of row 2 was paid for
    assert "1 at OCR, 1 at extraction" in summary.describe()


@pytest.mark.parametrize(
    ("fault", "times", "error_type", "retriable", "attempts"),
    [("503", 3, "server_error", True, 3), ("400", 1, "invalid_request_error", False, 1)],
)
async def test_a_row_failed_at_ocr_carries_the_real_status_and_retriability(
    emulator: Emulator, fault: str, times: int, error_type: str, retriable: bool, attempts: int
) -> None:
    emulator.faults.schedule("marker_submit", fault, times=times)
    pipeline = pipeline_for(emulator, ocr={"max_retries": 2})
    [row] = await pipeline.process([invoice_pdf(0)])

    assert not row["success"] and row["failed_stage"] == "ocr"
    assert row["status"] == int(fault) and row["error_type"] == error_type
    assert row["is_retriable"] is retriable
    assert row["ocr"]["attempts"] == attempts == emulator.stats.total("marker_submit")
    assert row["fields"] is None and row["extraction"] is None


async def test_a_row_carries_both_stages_and_the_summary_totals_them(emulator: Emulator) -> None:
    emulator.faults.schedule("marker_submit", "503")
    emulator.faults.schedule("responses", "503")
    pipeline = pipeline_for(emulator, ocr={"save_checkpoint": True})
    rows = [row async for row in pipeline.stream([invoice_pdf(0, 2), invoice_pdf(1)])]

    assert sorted(row["index"] for row in rows) == [0, 1]
    for row in rows:
        assert row["success"] and row["failed_stage"] is None and row["error"] is None
        assert row["checkpoint_id"].startswith("ckpt_") and row["request_id"]
        assert row["cost_breakdown"]["final_cost_cents"] > 0
        assert row["usage"]["input_tokens"] > 0 and row["model"] == MODEL
        assert row["response_ids"][0].startswith("resp_")
        assert row["ocr"]["page_count"] == row["page_count"]
        assert row["extraction"]["requests"] == 1
    summary = pipeline.last_summary
    assert isinstance(summary, PipelineSummary)
    assert (summary.retries, summary.ocr_retries, summary.extraction_retries) == (2, 1, 1)
    assert summary.pages == 3 and summary.cost_cents > 0 and summary.cost_usd > 0
    assert summary.total_cost_usd == pytest.approx(summary.cost_cents / 100 + summary.cost_usd)
    report = summary.as_dict()
    assert report["ocr"]["retries"] == 1 and report["extraction"]["requests"] == 2


async def test_ordered_stream_yields_in_input_order(emulator: Emulator) -> None:
    emulator.config.seconds_per_page = 0.02
    docs = [invoice_pdf(i, pages) for i, pages in enumerate([5, 1, 3, 1])]
    rows = [row async for row in pipeline_for(emulator).stream(docs, ordered=True)]
    assert [row["index"] for row in rows] == [0, 1, 2, 3]


# -- one journal, both stages ------------------------------------------------------------


async def test_a_rerun_reuses_the_ocr_and_the_finished_extractions(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i, 1 + i % 3) for i in range(4)]
    emulator.faults.schedule("responses", "400", when_input_contains="INV-1002")
    first = await pipeline_for(emulator).process(docs, journal=journal)
    assert [row["failed_stage"] for row in first] == [None, None, "extraction", None]

    second_pipeline = pipeline_for(emulator)
    second = await second_pipeline.process(docs, journal=journal)
    assert all(row["success"] for row in second)
    assert [bool(row.get("from_journal")) for row in second] == [True, True, False, True]
    assert second[2]["ocr"]["from_journal"], "the finished OCR text was reused"
    assert second[2]["fields"] == invoice_fields(2)
    stats = emulator.stats
    assert set(stats.submissions_by_digest.values()) == {1}, "a document uploaded twice"
    assert len(stats.submissions_by_digest) == 4
    assert set(stats.completed_by_digest.values()) == {1}, "an extraction bought twice"
    summary = second_pipeline.last_summary
    assert isinstance(summary, PipelineSummary)
    assert summary.reused == 3 and summary.ocr_reused == 4
    assert {"items", "stages"} <= journal_tables(journal)


async def test_a_changed_schema_keeps_the_ocr_and_extracts_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "pipeline.journal"
    await pipeline_for(emulator).process([invoice_pdf(5)], journal=journal)
    narrower = {"type": "object", "properties": {"vendor": {"type": "string"}}}
    [row] = await pipeline_for(emulator, schema=narrower).process([invoice_pdf(5)], journal=journal)
    assert row["fields"] == {"vendor": "Vendor 5 Ltd"} and row["ocr"]["from_journal"]
    assert sum(emulator.stats.submissions_by_digest.values()) == 1
    assert emulator.stats.total("responses") == 2


# -- per-page extraction ---------------------------------------------------------------


PAGE_SCHEMA = {
    "type": "object",
    "properties": {"section": {"type": "string"}, "amount": {"type": "number"}},
    "required": ["section", "amount"],
    "additionalProperties": False,
}
PAGES = [[f"Section: S{i}", f"Amount: {10 * (i + 1)}.00"] for i in range(3)]


@pytest.mark.parametrize(
    "ocr",
    [
        {"output_format": "markdown", "paginate": True},
        {"output_format": "html", "paginate": True},
        {"output_format": "json"},
        {"output_format": "chunks"},
    ],
)
async def test_per_page_sends_one_request_per_page_and_merges(
    emulator: Emulator, ocr: dict[str, Any]
) -> None:
    pipeline = pipeline_for(emulator, per_page=True, schema=PAGE_SCHEMA, ocr=ocr)
    [row] = await pipeline.process([text_pdf(PAGES)])

    assert row["success"], row["error"]
    expected = [{"section": f"S{i}", "amount": 10.0 * (i + 1)} for i in range(3)]
    assert row["extraction"]["page_fields"] == expected
    assert row["fields"] == expected[0]  # a key takes the first page's value
    assert row["extraction"]["requests"] == 3 and len(row["response_ids"]) == 3
    assert emulator.stats.total("responses") == 3 and row["usage"]["input_tokens"] > 0


def test_per_page_needs_pages_and_merge_rules() -> None:
    with pytest.raises(ValueError, match="per_page"):
        ExtractionPipeline(
            DocumentConfig(api_key="k", output_format="markdown"),
            extraction_request(model=MODEL, schema=PAGE_SCHEMA, api_key="k"),
            per_page=True,
        )
    merged = merge_fields(
        [{"a": None, "items": [1], "o": {"x": 1}}, {"a": "A", "items": [2], "o": {"y": 2}}]
    )
    assert merged == {"a": "A", "items": [1, 2], "o": {"x": 1, "y": 2}}
    assert page_texts({"success": True, "json_response": '{"markdown": "one"}'}) == ["one"]


def test_the_pipeline_refuses_what_it_cannot_run() -> None:
    request = extraction_request(model=MODEL, schema=INVOICE_SCHEMA, api_key="k")
    ocr = DocumentConfig(api_key="k")
    with pytest.raises(TypeError, match="ocr must be a DocumentConfig"):
        ExtractionPipeline({"api_key": "k"}, request)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="extraction must be a ResponsesRequest"):
        ExtractionPipeline(ocr, {"model": MODEL})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="per_page must be True or False"):
        ExtractionPipeline(ocr, request, per_page="yes")  # type: ignore[arg-type]
    schema = json.dumps(INVOICE_SCHEMA)
    with pytest.raises(ValueError, match="OCR converts"):
        ExtractionPipeline(DocumentConfig(api_key="k", page_schema=schema), request)
    text = extraction_request(model=MODEL, response_format={"type": "text"}, api_key="k")
    with pytest.raises(ValueError, match="JSON schema"):
        ExtractionPipeline(DocumentConfig(api_key="k"), text)


# -- Datalab's current endpoints -------------------------------------------------------


def test_the_endpoint_is_chosen_by_the_schema_and_an_explicit_one_is_kept() -> None:
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
    assert DocumentConfig(api_key="k").url == CONVERT_URL
    assert DocumentConfig(api_key="k", page_schema=schema).url == EXTRACT_URL
    assert DocumentConfig(api_key="k", schema_id="sch_1").endpoint == "extract"
    marker = "https://www.datalab.to/api/v1/marker"
    seed = DocumentConfig(api_key="k", api_url=marker, page_schema=schema, paginate=True)
    assert (seed.url, seed.endpoint) == (marker, "marker")
    assert DocumentConfig(api_key="k", api_url="http://127.0.0.1:9/gw").endpoint is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"api_url": CONVERT_URL, "page_schema": '{"properties": {}}'}, "page_schema"),
        ({"api_url": CONVERT_URL, "checkpoint_id": "ckpt_1"}, "checkpoint_id"),
        ({"schema_id": "sch_1", "paginate": True}, "paginate"),
        ({"schema_id": "sch_1", "add_block_ids": True}, "add_block_ids"),
        ({"schema_id": "sch_1", "additional_config": "{}"}, "additional_config"),
        ({"api_url": EXTRACT_URL}, "page_schema or schema_id"),
        ({"schema_id": "s", "page_schema": '{"properties": {}}'}, "page_schema and schema_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"additional_config": "[1]"}, "additional_config"),
        ({"skip_cache": True, "extras": '{"skip_cache": false}'}, "skip_cache"),
    ],
)
def test_a_field_the_endpoint_does_not_take_is_refused_naming_it(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        DocumentConfig(api_key="k", **options)


def test_each_endpoint_is_sent_only_its_own_fields() -> None:
    for endpoint, fields in ENDPOINT_FIELDS.items():
        assert fields <= FIELDS[endpoint], f"/{endpoint} does not read {fields - FIELDS[endpoint]}"
    extract = DocumentConfig(api_key="k", schema_id="sch_1", schema_version=2, skip_cache=True)
    assert dict(settings_fields(extract)) == {
        "output_format": "json",
        "mode": "accurate",
        "schema_id": "sch_1",
        "schema_version": "2",
        "skip_cache": "true",
    }
    convert = DocumentConfig(api_key="k", token_efficient_markdown=True, additional_config="{}")
    sent = dict(settings_fields(convert))
    assert sent["paginate"] == "false" and sent["token_efficient_markdown"] == "true"
    assert sent["additional_config"] == "{}" and "skip_cache" not in sent


def sample(name: str) -> bytes:
    return (resources.files("genai_coroutines") / "samples" / name).read_bytes()


async def test_convert_extract_and_extract_from_a_checkpoint_end_to_end(
    emulator: Emulator,
) -> None:
    key = emulator.config.datalab_api_key
    fast: dict[str, Any] = {
        "api_key": key,
        "poll_interval_secs": 0.01,
        "base_retry_delay_secs": 0.01,
    }
    schema = json.dumps(INVOICE_SCHEMA)
    truth = {
        "vendor": "ACME Supplies Ltd",
        "invoice_number": "INV-1042",
        "date": "2026-10-03",
        "total": 320.0,
        "currency": "EUR",
    }

    convert = DocumentConfig(
        api_url=convert_url(emulator), output_format="markdown", save_checkpoint=True, **fast
    )
    [converted] = await DocumentProcessor(convert).process([sample("invoice-acme.pdf")])
    assert converted["success"], converted["error"]
    assert "Total due: 320.00 EUR" in document_text(converted)
    checkpoint = orjson.loads(converted["json_response"])["checkpoint_id"]

    extract = DocumentConfig(api_url=extract_url(emulator), page_schema=schema, **fast)
    [extracted] = await DocumentProcessor(extract).process([sample("invoice-acme.pdf")])
    assert orjson.loads(parse_documents([extracted])[0]) == truth

    from_checkpoint = DocumentConfig(
        api_url=extract_url(emulator), page_schema=schema, checkpoint_id=checkpoint, **fast
    )
    processor = DocumentProcessor(from_checkpoint)
    with pytest.raises(ValueError, match="checkpoint"):
        await processor.process([sample("invoice-acme.pdf")])
    [again] = await processor.process([None])  # type: ignore[list-item]
    assert orjson.loads(parse_documents([again])[0]) == truth

    by_endpoint = emulator.stats.submissions_by_endpoint
    assert sum(by_endpoint["convert"].values()) == 1
    assert sum(by_endpoint["extract"].values()) == 2
    assert by_endpoint["extract"][f"checkpoint:{checkpoint}"] == 1
    submissions = [seen for seen in emulator.stats.received if seen.get("endpoint")]
    assert all(seen["ignored"] == [] for seen in submissions), "a field the endpoint ignores"
    assert "filename" not in submissions[-1], "the checkpoint's extraction uploaded a file"


# -- the demo --------------------------------------------------------------------------


def invoice_texts() -> dict[str, str]:
    """Each sample's text layer, read with pypdf (the test's own reading)."""
    folder = resources.files("genai_coroutines") / "samples"
    texts = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".pdf"):
            reader = pypdf.PdfReader(io.BytesIO(entry.read_bytes()))
            texts[entry.name] = "\n".join(page.extract_text() for page in reader.pages)
    return texts


async def test_the_demo_table_shows_what_the_invoices_say() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "genai_coroutines",
        "demo",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert err == b"", "a clean demo run logs nothing"
    lines = out.decode().splitlines()
    header = lines[0].split()
    assert header == ["file", "pages", "vendor", "number", "date", "total", "currency"]
    texts = invoice_texts()
    seen = set()
    for line in lines[2 : 2 + len(texts)]:
        cells = [cell for cell in line.split("  ") if cell.strip()]
        name, pages, vendor, number, date, total, currency = (cell.strip() for cell in cells)
        text = texts[name]
        seen.add(name)
        assert int(pages) == len(pypdf.PdfReader(io.BytesIO(sample(name))).pages)
        first_line = text.splitlines()[0]
        assert first_line.startswith(vendor + " - ") and number in first_line
        assert f"Date: {date}" in text
        assert f"{float(total):,.2f} {currency}" in text.splitlines()[-1]
    assert seen == set(texts)
    report = out.decode()
    assert "retries: 2" in report and "1 retry" in report
    assert "Datalab cost:" in report and "estimated cost:" in report and "total cost: $" in report


def journal_tables(path: Path) -> set[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
