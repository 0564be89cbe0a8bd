"""The Datalab emulation carries the documents' real content, on all three endpoints.

`/convert` and `/marker` return each PDF's own text layer (read with pypdf) in every
output format; `/extract` fills a schema from that text, from an upload or from a
checkpoint a conversion saved. Each endpoint reads its own fields. The bundled sample
invoices are the ground truth; datalab-python-sdk is the oracle for the wire format.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import samples
from datalab_sdk import ConvertOptions, ExtractOptions  # type: ignore[import-untyped]

from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.datalab_api import ACCEPTED, SUBMIT
from genai_coroutines.emulator.state import digest
from genai_coroutines.pdfpages import count_pdf_pages
from tests.documents_support import form, sdk_client
from tests.pipeline_support import INVOICE_SCHEMA

SAMPLES: dict[str, dict[str, Any]] = {
    "invoice-acme.pdf": {
        "pages": 1,
        "vendor": "ACME Supplies Ltd",
        "invoice_number": "INV-1042",
        "date": "2026-10-03",
        "total": 320.0,
        "currency": "EUR",
        "lines": [
            "ACME Supplies Ltd - Invoice INV-1042",
            "Date: 2026-10-03",
            "Total due: 320.00 EUR",
        ],
    },
    "invoice-globex.pdf": {
        "pages": 2,
        "vendor": "Globex Corporation",
        "invoice_number": "G-77",
        "date": "2026-09-18",
        "total": 14400.0,
        "currency": "USD",
        "lines": ["Globex Corporation - Invoice G-77", "Total due: 14,400.00 USD"],
    },
    "receipt-initech.pdf": {
        "pages": 3,
        "vendor": "Initech",
        "invoice_number": "5531",
        "date": "2026-11-02",
        "total": 45.0,
        "currency": "USD",
        "lines": ["Initech - Receipt 5531", "Date: 2026-11-02", "Paid by card. Total: 45.00 USD"],
    },
}

FIELDS = ("vendor", "invoice_number", "date", "total", "currency")


def sample(name: str) -> bytes:
    return (resources.files("genai_coroutines") / "samples" / name).read_bytes()


def expected(name: str) -> dict[str, Any]:
    return {field: SAMPLES[name][field] for field in FIELDS}


async def post(
    http: aiohttp.ClientSession, emulator: Emulator, endpoint: str, body: aiohttp.FormData
) -> tuple[int, Any]:
    async with http.post(f"{emulator.datalab_base_url}/api/v1/{endpoint}", data=body) as response:
        return response.status, await response.json()


async def finish(http: aiohttp.ClientSession, check_url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        async with http.get(check_url) as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
        if result["status"] != "processing":
            return result
        await asyncio.sleep(0.005)
    raise AssertionError(f"{check_url} still processing after 5 s")


async def run(
    http: aiohttp.ClientSession, emulator: Emulator, endpoint: str, body: aiohttp.FormData
) -> dict[str, Any]:
    status, answer = await post(http, emulator, endpoint, body)
    assert status == 200, answer
    assert answer["request_check_url"].endswith(f"/api/v1/{endpoint}/{answer['request_id']}")
    return await finish(http, answer["request_check_url"])


def schema_text(schema: dict[str, Any] = INVOICE_SCHEMA) -> str:
    return json.dumps(schema)


# -- real text ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_convert_returns_the_text_layer(
    emulator: Emulator, http: aiohttp.ClientSession, name: str
) -> None:
    truth = SAMPLES[name]
    body = form(sample(name), filename=name, output_format="markdown,html,json,chunks")
    result = await run(http, emulator, "convert", body)

    assert result["page_count"] == truth["pages"]
    markdown = result["markdown"]
    for line in truth["lines"]:
        assert line in markdown
    assert "emulated OCR" not in markdown and "![](" not in markdown and result["images"] == {}
    for line in truth["lines"]:
        assert f"<p>{line}</p>" in result["html"]
    json_text = [leaf["html"] for page in result["json"]["children"] for leaf in page["children"]]
    chunk_text = [block["html"] for block in result["chunks"]["blocks"]]
    assert json_text == chunk_text and f"<p>{truth['lines'][0]}</p>" in json_text
    methods = {stat["text_extraction_method"] for stat in result["metadata"]["page_stats"]}
    assert methods == {"pdftext"}


async def test_pages_follow_page_range_max_pages_and_paginate(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = sample("receipt-initech.pdf")
    ranged = await run(http, emulator, "convert", form(data, page_range="1-2", paginate="true"))
    assert ranged["page_count"] == 2
    assert ranged["markdown"] == (
        f"\n\n{{1}}{'-' * 48}\n\nTPS report covers x 500 ... 45.00 USD"
        f"\n\n{{2}}{'-' * 48}\n\nPaid by card. Total: 45.00 USD"
    )
    first = await run(http, emulator, "convert", form(data, max_pages="1", output_format="html"))
    assert first["page_count"] == 1 and "Initech - Receipt 5531" in first["html"]
    assert "Paid by card" not in first["html"]


async def test_text_less_pages_and_images_are_marked(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    png = samples.png(tag="scan")
    result = await run(
        http, emulator, "convert", form(png, filename="scan.png", content_type="image/png")
    )
    assert result["markdown"] == (
        f"[emulated OCR: no text layer] Page 0 of scan.png, digest {digest(png)}."
        "\n\n![](_page_0_Picture_1.png)"
    )
    assert result["metadata"]["page_stats"][0]["text_extraction_method"] == "surya"
    url = await run(http, emulator, "convert", form(file_url="https://example.com/a.pdf"))
    assert url["markdown"].startswith("[emulated OCR: file_url not fetched] Page 0 of https://")


async def test_html_uploads_are_read_as_text(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    page = b"<html><body><h1>Order 12</h1><p>Total: 9.50 GBP</p><script>x()</script></body></html>"
    body = form(page, filename="order.html", content_type="text/html")
    result = await run(http, emulator, "convert", body)
    assert result["markdown"] == "Order 12\n\nTotal: 9.50 GBP"


async def test_pages_are_counted_by_reading_the_pdf(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """The client's byte-pattern count is fooled by "/Type /Page" in a text; pypdf is not."""
    data = samples.pdf(1, tag="/Type /Page")
    assert count_pdf_pages(data) == 2  # the client's estimate, for budgeting
    result = await run(http, emulator, "convert", form(data, output_format="json"))
    assert result["page_count"] == 1 and len(result["json"]["children"]) == 1


async def test_token_efficient_markdown_and_markdown_in_chunks(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = sample("invoice-acme.pdf")
    body = form(
        data,
        output_format="markdown,chunks",
        token_efficient_markdown="true",
        include_markdown_in_chunks="true",
    )
    result = await run(http, emulator, "convert", body)
    assert result["markdown"].startswith("ACME Supplies Ltd - Invoice INV-1042\nDate: 2026-10-03\n")
    assert result["chunks"]["blocks"][1]["markdown"] == "Date: 2026-10-03"


# -- extraction --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_extract_is_grounded_in_the_document(
    emulator: Emulator, http: aiohttp.ClientSession, name: str
) -> None:
    body = form(sample(name), filename=name, page_schema=schema_text())
    result = await run(http, emulator, "extract", body)
    assert json.loads(result["extraction_schema_json"]) == expected(name)
    assert result["output_format"] == "markdown" and SAMPLES[name]["lines"][0] in result["markdown"]
    assert "checkpoint_id" not in result


async def test_marker_page_schema_is_grounded_too(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = form(sample("invoice-acme.pdf"), page_schema=schema_text())
    result = await run(http, emulator, "marker", body)
    assert json.loads(result["extraction_schema_json"]) == expected("invoice-acme.pdf")


async def test_checkpoint_is_reused_by_extract(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = sample("invoice-globex.pdf")
    converted = await run(http, emulator, "convert", form(data, save_checkpoint="true"))
    checkpoint = converted["checkpoint_id"]
    assert checkpoint.startswith("ckpt_")

    body = form(checkpoint_id=checkpoint, page_schema=schema_text(), output_format="html")
    extracted = await run(http, emulator, "extract", body)
    assert json.loads(extracted["extraction_schema_json"]) == expected("invoice-globex.pdf")
    assert extracted["page_count"] == 2 and "Globex Corporation" in extracted["html"]

    body = form(checkpoint_id=checkpoint, page_schema=schema_text(), page_range="1")
    last_page = await run(http, emulator, "extract", body)
    assert last_page["page_count"] == 1 and "Globex" not in last_page["markdown"]
    assert json.loads(last_page["extraction_schema_json"])["total"] == 14400.0

    stats = emulator.stats
    assert stats.submissions_by_endpoint == {
        "convert": {digest(data): 1},
        "extract": {f"checkpoint:{checkpoint}": 2},
    }
    assert stats.snapshot()["duplicate_submissions"] == 1  # the same checkpoint, extracted twice
    events = list(stats.events)
    converted_at = next(t for t, where, what in events if where == "convert" and "complete" in what)
    extract_at = next(t for t, where, what in events if where == "extract" and "submitted" in what)
    assert converted_at < extract_at


async def test_checkpoints_are_kept_for_their_own_retention(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A checkpoint outlives its conversion's result: it is kept `datalab_checkpoint_ttl`."""
    converted = await run(
        http, emulator, "convert", form(sample("invoice-acme.pdf"), save_checkpoint="true")
    )
    emulator.config.result_ttl = 0.0
    body = form(checkpoint_id=converted["checkpoint_id"], page_schema=schema_text())
    status, answer = await post(http, emulator, "extract", body)
    assert status == 200 and answer["request_id"]  # the conversion's result is gone, not it
    assert list(emulator.datalab.jobs) == [answer["request_id"]]

    emulator.config.datalab_checkpoint_ttl = 0.0
    body = form(checkpoint_id=converted["checkpoint_id"], page_schema=schema_text())
    status, answer = await post(http, emulator, "extract", body)
    assert status == 404 and converted["checkpoint_id"] in answer["detail"]
    assert not emulator.datalab.checkpoints


async def test_failed_conversions_save_no_checkpoint(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = samples.pdf(1, extra=samples.FAIL_MARKER)
    result = await run(http, emulator, "convert", form(data, save_checkpoint="true"))
    assert result["status"] == "failed" and "checkpoint_id" not in result
    assert not emulator.datalab.checkpoints


async def test_saved_schemas(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    schema_id = emulator.datalab.save_schema(INVOICE_SCHEMA, name="invoice")
    data = sample("receipt-initech.pdf")
    result = await run(http, emulator, "extract", form(data, schema_id=schema_id))
    assert json.loads(result["extraction_schema_json"]) == expected("receipt-initech.pdf")
    versioned = await run(
        http, emulator, "extract", form(data, schema_id=schema_id, schema_version="1")
    )
    assert versioned["extraction_schema_json"] == result["extraction_schema_json"]
    for fields in ({"schema_id": "sch_nope"}, {"schema_id": schema_id, "schema_version": "2"}):
        status, answer = await post(http, emulator, "extract", form(data, **fields))
        assert status == 404 and "not found" in answer["detail"]


# -- each endpoint its own fields --------------------------------------------------------


async def test_each_endpoint_ignores_fields_it_does_not_read(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = sample("invoice-acme.pdf")
    converted = await run(http, emulator, "convert", form(data, page_schema=schema_text()))
    assert "extraction_schema_json" not in converted
    assert emulator.stats.received[-1]["ignored"] == ["page_schema"]

    body = form(data, page_schema=schema_text(), paginate="maybe", force_ocr="nope")
    extracted = await run(http, emulator, "extract", body)
    assert "extraction_schema_json" in extracted
    assert emulator.stats.received[-1]["ignored"] == ["force_ocr", "paginate"]

    for endpoint, field in (("convert", "paginate"), ("marker", "force_ocr")):
        status, answer = await post(http, emulator, endpoint, form(data, **{field: "maybe"}))
        assert status == 422 and answer["detail"][0]["loc"] == ["body", field]
    status, _ = await post(http, emulator, "marker", form(data, force_new="maybe"))
    assert status == 200  # /marker has no force_new


@pytest.mark.parametrize(
    ("endpoint", "fields", "status", "detail"),
    [
        ("extract", {}, 400, "Either page_schema or schema_id"),
        ("extract", {"page_schema": "{}", "schema_id": "sch_x"}, 400, "mutually exclusive"),
        ("extract", {"page_schema": '{"type": "object"}'}, 400, "'properties'"),
        ("extract", {"page_schema": "{oops"}, 400, "valid JSON"),
        ("extract", {"page_schema": "[]"}, 400, "JSON object"),
        ("extract", {"schema_version": "1", "page_schema": "{}"}, 400, "only be used"),
        ("extract", {"schema_version": "one"}, 422, "int_parsing"),
        ("extract", {"save_checkpoint": "maybe"}, 422, "bool_parsing"),
        ("extract", {"checkpoint_id": "ckpt_1", "page_schema": "{}"}, 400, "not both"),
        ("convert", {"extras": "track_changes,telepathy"}, 400, "Invalid extras 'telepathy'"),
        ("convert", {"additional_config": "[1]"}, 400, "additional_config"),
        ("convert", {"eval_rubric_id": "x"}, 422, "int_parsing"),
        ("convert", {"mode": "turbo"}, 400, "Invalid mode"),
    ],
)
async def test_invalid_fields_per_endpoint(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    endpoint: str,
    fields: dict[str, str],
    status: int,
    detail: str,
) -> None:
    got, answer = await post(http, emulator, endpoint, form(samples.pdf(), **fields))
    assert got == status
    if status == 422:
        assert answer["detail"][0]["type"] == detail
    else:
        assert detail in answer["detail"]
    assert not emulator.stats.submissions_by_digest


async def test_extract_needs_a_document(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    status, answer = await post(http, emulator, "extract", form(page_schema=schema_text()))
    assert status == 400 and "either file or file_url" in answer["detail"]
    body = form(checkpoint_id="ckpt_unknown", page_schema=schema_text())
    status, answer = await post(http, emulator, "extract", body)
    assert status == 404 and "ckpt_unknown" in answer["detail"]


# -- limits and faults hold on every endpoint --------------------------------------------


@pytest.mark.parametrize("endpoint", ["marker", "convert", "extract"])
async def test_limits_and_faults_on_every_endpoint(
    emulator: Emulator, http: aiohttp.ClientSession, endpoint: str
) -> None:
    data = sample("invoice-acme.pdf")
    emulator.config.seconds_per_page = 0.3  # the accepted job is still in flight when counted

    def body() -> aiohttp.FormData:
        return form(data, page_schema=schema_text())

    emulator.faults.schedule(SUBMIT, "503")
    status, _ = await post(http, emulator, endpoint, body())
    assert status == 503
    emulator.faults.schedule(ACCEPTED, "504")
    status, _ = await post(http, emulator, endpoint, body())
    assert status == 504  # accepted all the same: it bills
    assert emulator.stats.submissions_by_endpoint == {endpoint: {digest(data): 1}}
    assert emulator.datalab.pages_in_flight == 1

    emulator.config.datalab_rpm = 1
    emulator.datalab.reset_limits()
    result = await run(http, emulator, endpoint, body())
    assert result["status"] == "complete"
    status, answer = await post(http, emulator, endpoint, body())
    assert status == 429 and f"endpoint /api/v1/{endpoint}." in answer["detail"]
    assert emulator.stats.snapshot()["duplicate_submissions"] == 1
    whats = [what.split(" ")[0] for _, where, what in emulator.stats.events if where == endpoint]
    assert whats[:4] == ["submit", "submitted", "answer", "submitted"]
    assert whats[-1] == "submit"


# -- the official SDK as an oracle --------------------------------------------------------


async def test_sdk_converts_then_extracts_from_the_checkpoint(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "invoice-acme.pdf"
    path.write_bytes(sample("invoice-acme.pdf"))
    async with sdk_client(emulator) as client:
        converted = await client.convert(
            path, options=ConvertOptions(save_checkpoint=True), poll_interval=0.01
        )
        assert converted.success and "Total due: 320.00 EUR" in converted.markdown
        assert converted.checkpoint_id is not None
        options = ExtractOptions(page_schema=schema_text(), checkpoint_id=converted.checkpoint_id)
        extracted = await client.extract(options=options, poll_interval=0.01)
        direct = await client.extract(
            path, options=ExtractOptions(page_schema=schema_text()), poll_interval=0.01
        )
        saved = await client.create_extraction_schema("invoice", INVOICE_SCHEMA)
        assert saved.schema_id.startswith("sch_") and saved.version == 1
        assert (await client.get_extraction_schema(saved.schema_id)).schema_json == INVOICE_SCHEMA
        by_id = await client.extract(
            path, options=ExtractOptions(schema_id=saved.schema_id), poll_interval=0.01
        )

    for result in (extracted, direct, by_id):
        assert result.success
        assert json.loads(result.extraction_schema_json) == expected("invoice-acme.pdf")
    paths = [seen["path"] for seen in emulator.stats.received]
    assert paths == ["/api/v1/convert", "/api/v1/extract", "/api/v1/extract", "/api/v1/extract"]
    assert not any(seen["ignored"] for seen in emulator.stats.received)  # the SDK's fields
    sent = emulator.stats.received[1]["form"]
    assert sent["checkpoint_id"] == converted.checkpoint_id and "file" not in sent
    assert set(emulator.stats.submissions_by_endpoint) == {"convert", "extract"}


def test_event_log_is_bounded() -> None:
    from genai_coroutines.emulator.state import EVENTS_KEPT, Stats

    stats = Stats()
    for i in range(EVENTS_KEPT + 5):
        stats.log("convert", f"submitted {i}")
    assert len(stats.events) == EVENTS_KEPT and stats.events[0][2] == "submitted 5"
    times = [t for t, _, _ in stats.events]
    assert times == sorted(times)
    assert re.fullmatch(r"submitted \d+", stats.events[-1][2])
