"""Many schemas, one OCR: `ExtractionPipeline(DocumentConfig(...), DatalabExtraction(...))`.

Each document is converted once with `save_checkpoint`, then each schema is one `/extract`
from that checkpoint. The emulator's counters say what crossed the wire and what was paid:
`parses_by_digest` (OCR per document), `checkpoint_reads_by_digest` (extractions that read a
checkpoint instead), `submissions_by_endpoint`, `cents_billed` per endpoint. The official
`datalab-python-sdk`, pointed at the emulator, reads the same checkpoint as an oracle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datalab_sdk import ExtractOptions  # type: ignore[import-untyped]

from genai_coroutines import BatchAPI, DatalabExtraction, DocumentConfig, ExtractionPipeline
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from genai_coroutines.pipeline import PipelineSummary
from tests.documents_support import sdk_client
from tests.pipeline_support import INVOICE_SCHEMA, convert_url, invoice_fields, invoice_pdf

PARTIES_SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "invoice_number": {"type": "string"}},
}
SCHEMAS: dict[str, Any] = {"invoice": INVOICE_SCHEMA, "parties": json.dumps(PARTIES_SCHEMA)}


def ocr_config(emulator: Emulator, **options: Any) -> DocumentConfig:
    return DocumentConfig(
        api_key=emulator.config.datalab_api_key,
        api_url=convert_url(emulator),
        output_format="markdown",
        poll_interval_secs=0.01,
        base_retry_delay_secs=0.01,
        **options,
    )


def pipeline(emulator: Emulator, **options: Any) -> ExtractionPipeline:
    return ExtractionPipeline(ocr_config(emulator, **options), DatalabExtraction(SCHEMAS))


def extracts(emulator: Emulator) -> int:
    return sum(emulator.stats.submissions_by_endpoint.get("extract", {}).values())


def conversions(emulator: Emulator) -> int:
    return sum(emulator.stats.submissions_by_endpoint.get("convert", {}).values())


async def test_20_documents_2_schemas_convert_20_times_and_extract_40_from_checkpoints(
    emulator: Emulator,
) -> None:
    docs = [invoice_pdf(i, 1 + i % 3) for i in range(20)]
    run = pipeline(emulator, max_concurrent_requests=8)
    rows = await run.process(docs)

    assert all(row["success"] for row in rows), [row["error"] for row in rows]
    for i, row in enumerate(rows):
        assert row["fields"]["invoice"] == invoice_fields(i)
        assert row["fields"]["parties"] == {
            key: invoice_fields(i)[key] for key in ("vendor", "invoice_number")
        }
        assert list(row["extraction"]["schemas"]) == ["invoice", "parties"]
        assert row["extraction"]["checkpoint_id"] == row["checkpoint_id"]
    stats = emulator.stats
    assert (conversions(emulator), extracts(emulator)) == (20, 40)
    assert stats.parses_by_digest == {digest(doc): 1 for doc in docs}  # each parsed once
    assert stats.checkpoint_reads_by_digest == {digest(doc): 2 for doc in docs}
    assert all(key.startswith("checkpoint:") for key in stats.submissions_by_endpoint["extract"])

    pages = sum(1 + i % 3 for i in range(20))
    summary = run.last_summary
    assert isinstance(summary, PipelineSummary)
    by_stage = summary.as_dict()["cost_cents_by_stage"]
    assert by_stage == pytest.approx(
        {"ocr": pages * 0.6, "extract:invoice": pages * 0.6, "extract:parties": pages * 0.6}
    )
    assert summary.cost_cents == pytest.approx(sum(stats.cents_billed.values()))
    assert summary.ocr_cents == pytest.approx(stats.cents_billed["convert"])
    assert summary.extraction_requests == 40 and summary.pages == pages
    assert "extraction (Datalab): 40 requests" in summary.describe()


async def test_the_sdk_reads_the_same_extraction_from_the_rows_checkpoint(
    emulator: Emulator,
) -> None:
    [row] = await pipeline(emulator).process([invoice_pdf(3, 2)])
    assert row["success"], row["error"]

    async with sdk_client(emulator) as client:
        oracle = {
            name: await client.extract(
                options=ExtractOptions(
                    page_schema=json.dumps(schema) if isinstance(schema, dict) else schema,
                    checkpoint_id=row["checkpoint_id"],
                ),
                poll_interval=0.01,
            )
            for name, schema in SCHEMAS.items()
        }
    assert row["fields"] == {
        name: json.loads(r.extraction_schema_json) for name, r in oracle.items()
    }
    for name, result in oracle.items():
        assert row["extraction"]["schemas"][name]["cost_breakdown"] == result.cost_breakdown
    assert emulator.stats.parses_by_digest == {digest(invoice_pdf(3, 2)): 1}


@pytest.mark.parametrize("answer", ["404", "failed"])
async def test_a_lost_checkpoint_is_converted_exactly_twice_then_extracted(
    emulator: Emulator, tmp_path: Path, answer: str
) -> None:
    """A first run extracts one schema and journals the conversion; a day later (the
    checkpoint is gone) a rerun adds a schema: the journaled conversion's
    checkpoint is found lost (a 404 at submission, or an accepted job that ends failed) and
    the document is converted once more, not more, then extracted."""
    emulator.config.datalab_lost_checkpoint = answer  # type: ignore[assignment]
    journal = tmp_path / "pipeline.journal"
    doc = invoice_pdf(1, 2)
    first = ExtractionPipeline(ocr_config(emulator), DatalabExtraction({"invoice": INVOICE_SCHEMA}))
    [row] = await first.process([doc], journal=journal)
    assert row["success"] and conversions(emulator) == 1
    emulator.datalab.checkpoints.clear()  # past its retention

    [row] = await pipeline(emulator).process([doc], journal=journal)

    assert row["success"], row["error"]
    assert row["fields"]["invoice"] == invoice_fields(1)
    assert conversions(emulator) == 2 and emulator.stats.parses_by_digest == {digest(doc): 2}
    assert row["extraction"]["reconverted"] and not row["ocr"]["from_journal"]
    assert row["extraction"]["schemas"]["invoice"]["from_journal"]  # its answer was kept
    assert row["extraction"]["cost_cents"]["ocr"] == pytest.approx(2 * 2 * 0.6)  # paid twice
    assert emulator.stats.checkpoint_reads_by_digest == {digest(doc): 2}  # 1 + parties once


async def test_a_checkpoint_lost_again_fails_the_row_without_looping(emulator: Emulator) -> None:
    emulator.config.datalab_checkpoint_ttl = 0.0  # gone as soon as it is saved
    emulator.config.seconds_per_page = 0.0
    [row] = await pipeline(emulator).process([invoice_pdf(2)])

    assert row["failed_stage"] == "extraction" and row["error_type"] == "not_found_error"
    assert "Checkpoint" in row["error"]
    assert conversions(emulator) == 2  # once, and once more: never a loop
    assert emulator.stats.requests["marker_submit 404"] == 4  # each schema, each checkpoint


def test_datalab_extraction_is_checked_at_construction_naming_the_parameter() -> None:
    with pytest.raises(TypeError, match="schemas must be a dict"):
        DatalabExtraction([INVOICE_SCHEMA])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schemas or schema_ids"):
        DatalabExtraction()
    with pytest.raises(ValueError, match=r"schemas\['x'\] is not valid JSON"):
        DatalabExtraction({"x": "{not json"})
    with pytest.raises(ValueError, match=r"schemas\['x'\]: a JSON Schema with 'properties'"):
        DatalabExtraction({"x": {"type": "object"}})
    with pytest.raises(TypeError, match=r"schemas\['x'\] must be a dict or a JSON string"):
        DatalabExtraction({"x": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="schema_ids: x already named in schemas"):
        DatalabExtraction({"x": INVOICE_SCHEMA}, schema_ids={"x": "sch_1"})
    with pytest.raises(TypeError, match=r"schema_ids\['y'\] must be a schema id"):
        DatalabExtraction(schema_ids={"y": 7})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        DatalabExtraction({"x": INVOICE_SCHEMA}, max_concurrent_requests=0)
    ocr = DocumentConfig(api_key="dl-test")
    with pytest.raises(ValueError, match="per_page"):
        ExtractionPipeline(ocr, DatalabExtraction({"x": INVOICE_SCHEMA}), per_page=True)
    made = ExtractionPipeline(ocr, DatalabExtraction({"x": INVOICE_SCHEMA}))
    assert made.ocr.save_checkpoint and "model=None" in repr(made)


async def test_credits_running_out_mid_batch_keep_what_finished_and_retry_no_403(
    emulator: Emulator, tmp_path: Path
) -> None:
    """1-page documents cost 0.6 + 2 x 0.6 cents each: 4 cents run out within the third
    (conversions and extractions interleave), a submission is refused 403 (never retried)
    and the batch ends; a rerun after a top-up pays only for the stages not finished."""
    emulator.config.datalab_credits_cents = 4.0
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i) for i in range(5)]
    rows = await pipeline(emulator, max_concurrent_requests=1).process(docs, journal=journal)

    done = [row for row in rows if row["success"]]
    assert len(done) >= 1 and all(set(row["fields"]) == {"invoice", "parties"} for row in done)
    assert {row["error_type"] for row in rows if not row["success"]} == {"insufficient_quota"}
    assert all("active, paid subscription" in row["error"] for row in rows if not row["success"])
    assert emulator.stats.requests["marker_submit 403"] == 1  # never retried
    spent = sum(emulator.stats.cents_billed.values())

    emulator.config.datalab_credits_cents = 100.0
    again = await pipeline(emulator).process(docs, journal=journal)
    assert all(row["success"] for row in again)
    assert emulator.stats.parses_by_digest == {digest(doc): 1 for doc in docs}
    assert sum(emulator.stats.cents_billed.values()) == pytest.approx(5 * 1.8)
    assert spent <= 4.0


async def test_batch_api_and_max_cost_usd_are_refused_with_a_datalab_extraction(
    emulator: Emulator,
) -> None:
    """Datalab's /extract has no batch API, and its jobs are not weighed by a budget: each
    is refused naming its parameter, before anything is sent."""
    run = pipeline(emulator)
    for options, named in (
        ({"batch_api": True}, "batch_api"),
        ({"batch_api": BatchAPI(flush_idle_secs=0.1)}, "batch_api"),
        ({"max_cost_usd": 1.0}, "max_cost_usd"),
    ):
        with pytest.raises(ValueError, match=named):
            await run.process([invoice_pdf(0)], **options)
    assert emulator.stats.total("marker_submit") == 0


async def test_a_datalab_extraction_past_its_deadline_sends_nothing_more_and_a_rerun_finishes(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Past the deadline no document is uploaded and no /extract submitted; every job
    accepted before it is polled to its answer, and a rerun with the journal converts and
    extracts only what is left."""
    emulator.config.seconds_per_page = 0.1
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i) for i in range(8)]
    run = pipeline(emulator, max_concurrent_requests=1, max_waiting=0)
    rows = await run.process(docs, journal=journal, deadline=0.3)

    assert [row["index"] for row in rows] == list(range(8)), "none lost"
    late = [row for row in rows if not row["success"]]
    assert late and len(late) < 8
    assert {row["error_type"] for row in late} == {"deadline_exceeded"}
    converted = [row for row in rows if row["ocr"]["success"]]
    assert conversions(emulator) == len(converted), "no document uploaded after it"
    answered = [
        schema["success"]
        for row in converted
        if row["extraction"] is not None
        for schema in row["extraction"].get("schemas", {}).values()
    ]
    assert extracts(emulator) == sum(answered), "no /extract submitted after it"

    again = await pipeline(emulator).process(docs, journal=journal)
    assert all(row["success"] for row in again), [row["error"] for row in again]
    assert emulator.stats.parses_by_digest == {digest(doc): 1 for doc in docs}
    assert emulator.stats.checkpoint_reads_by_digest == {digest(doc): 2 for doc in docs}
    assert (conversions(emulator), extracts(emulator)) == (8, 16), "nothing sent twice"


async def test_dedupe_converts_and_extracts_a_copied_document_once(emulator: Emulator) -> None:
    docs = [invoice_pdf(0), invoice_pdf(1), invoice_pdf(0)]
    rows = await pipeline(emulator).process(docs, dedupe=True)

    assert all(row["success"] for row in rows)
    assert rows[2]["duplicate_of"] == 0 and rows[2]["fields"] == rows[0]["fields"]
    assert (conversions(emulator), extracts(emulator)) == (2, 4)
    assert emulator.stats.parses_by_digest == {digest(docs[0]): 1, digest(docs[1]): 1}
