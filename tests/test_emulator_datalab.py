"""The Datalab side of the emulator, checked over real HTTP on 127.0.0.1.

The official SDK runs end to end; everything else is raw aiohttp so each test
sees exactly what crosses the wire.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
import samples
from aiohttp import web
from datalab_sdk import (  # type: ignore[import-untyped]
    ConvertOptions,
    ExtractOptions,
    SegmentOptions,
)
from datalab_sdk.exceptions import DatalabAPIError  # type: ignore[import-untyped]

from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.datalab_api import ACCEPTED, POLL, SUBMIT
from genai_coroutines.emulator.state import digest
from genai_coroutines.pdfpages import count_pdf_pages, pages_in_range, parse_page_range
from tests.documents_support import form, sdk_client

SEPARATOR = "-" * 48
SCAN = "[emulated OCR: no text layer] "
"""What a page without a text layer says before naming itself (`samples.pdf` has none)."""


async def submit(
    http: aiohttp.ClientSession,
    emulator: Emulator,
    body: aiohttp.FormData,
    endpoint: str = "marker",
) -> dict[str, Any]:
    async with http.post(f"{emulator.datalab_base_url}/api/v1/{endpoint}", data=body) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
    return result


async def finish(http: aiohttp.ClientSession, check_url: str) -> dict[str, Any]:
    """Poll until the job leaves "processing": the API's own protocol."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        async with http.get(check_url) as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
        if result["status"] != "processing":
            return result
        await asyncio.sleep(0.005)
    raise AssertionError(f"{check_url} still processing after 5 s")


async def convert(
    http: aiohttp.ClientSession, emulator: Emulator, body: aiohttp.FormData
) -> dict[str, Any]:
    return await finish(http, (await submit(http, emulator, body))["request_check_url"])


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a side effect the test cannot await directly (a webhook's bookkeeping)."""
    deadline = time.monotonic() + 2
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.002)


# -- pdfpages ------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [1, 3, 12])
@pytest.mark.parametrize("compact", [False, True])
def test_count_pdf_pages(pages: int, compact: bool) -> None:
    assert count_pdf_pages(samples.pdf(pages, compact=compact)) == pages


def test_count_pdf_pages_unknown() -> None:
    assert count_pdf_pages(samples.png()) is None
    assert count_pdf_pages(b"") is None
    assert count_pdf_pages(b"%PDF-1.7\n(no visible page objects)") is None
    assert count_pdf_pages(b"junk before the header\n" + samples.pdf(2)) == 2


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("0-5", [(0, 5)]),
        ("0,2,4-6", [(0, 0), (2, 2), (4, 6)]),
        (" 3 , 7 - 9 ", [(3, 3), (7, 9)]),
        ("10", [(10, 10)]),
    ],
)
def test_parse_page_range(text: str, spans: list[tuple[int, int]]) -> None:
    assert parse_page_range(text) == spans


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "5-2", "1,,2", "1-2-3", "1.5"])
def test_parse_page_range_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid page range"):
        parse_page_range(text)


@pytest.mark.parametrize(
    ("text", "total", "count"),
    [
        ("0-5", 10, 6),
        ("0,2,4-6", 10, 5),
        ("0-5,3-8", 10, 9),
        ("2,2,2", 10, 1),
        ("8-20", 10, 2),
        ("20-30", 10, 0),
        ("0-999999999", 3, 3),
    ],
)
def test_pages_in_range(text: str, total: int, count: int) -> None:
    assert pages_in_range(text, total) == count


# -- the official SDK ----------------------------------------------------------------


async def test_sdk_converts_a_pdf(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(samples.pdf(3, tag="sdk"))
    options = ConvertOptions(output_format="markdown,json", mode="balanced", paginate=True)
    async with sdk_client(emulator) as client:
        result = await client.convert(path, options=options, poll_interval=0.01)

    key = digest(path.read_bytes())
    assert result.success and result.status == "complete"
    assert result.page_count == 3
    assert f"{{2}}{SEPARATOR}\n\n{SCAN}Page 2 of report.pdf, digest {key}." in result.markdown
    assert [page["id"] for page in result.json["children"]] == [
        f"/page/{i}/Page/{i}" for i in range(3)
    ]
    assert result.cost_breakdown["final_cost_cents"] > 0
    seen = emulator.stats.received[-1]
    assert seen["path"] == "/api/v1/convert"
    assert (seen["filename"], seen["content_type"], seen["digest"]) == (
        "report.pdf",
        "application/pdf",
        key,
    )
    assert seen["form"]["mode"] == "balanced" and seen["form"]["paginate"] == "True"
    assert emulator.stats.submissions_by_digest == {key: 1}


async def test_sdk_reports_failed_job(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(samples.pdf(1, extra=samples.FAIL_MARKER))
    async with sdk_client(emulator) as client:
        with pytest.raises(DatalabAPIError, match="Processing failed"):
            await client.convert(path, poll_interval=0.01)


# -- results ---------------------------------------------------------------------------


async def test_submit_answer_and_check_url(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    for endpoint in ("marker", "convert"):
        answer = await submit(http, emulator, form(samples.pdf()), endpoint)
        assert answer["success"] is True and answer["error"] is None and answer["versions"] == {}
        expected = f"{emulator.datalab_base_url}/api/v1/{endpoint}/{answer['request_id']}"
        assert answer["request_check_url"] == expected


async def test_processing_then_complete(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.config.seconds_per_page = 0.05
    answer = await submit(http, emulator, form(samples.pdf(2)))
    async with http.get(answer["request_check_url"]) as response:
        assert await response.json() == {"status": "processing"}
    result = await finish(http, answer["request_check_url"])
    assert result["status"] == "complete" and result["runtime"] == pytest.approx(0.1)


async def test_markdown(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    data = samples.pdf(2)
    result = await convert(http, emulator, form(data, output_format="markdown"))
    key = digest(data)
    assert result["output_format"] == "markdown" and "html" not in result
    assert result["markdown"] == (
        f"{SCAN}Page 0 of doc.pdf, digest {key}.\n\n![](_page_0_Picture_1.png)\n\n"
        f"{SCAN}Page 1 of doc.pdf, digest {key}."
    )
    assert list(result["images"]) == ["_page_0_Picture_1.png"]
    assert result["page_count"] == 2 and result["parse_quality_score"] == 4.5
    assert [s["page_id"] for s in result["metadata"]["page_stats"]] == [0, 1]


async def test_html(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    data = samples.pdf(2)
    body = form(data, output_format="html", add_block_ids="true", disable_image_extraction="true")
    result = await convert(http, emulator, body)
    assert result["images"] == {}
    assert (
        f'<p data-block-id="/page/1/Text/0">{SCAN}Page 1 of doc.pdf, digest {digest(data)}.</p>'
        in (result["html"])
    )
    assert "<img" not in result["html"] and "data-page-id" not in result["html"]


async def test_json(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    result = await convert(http, emulator, form(samples.pdf(3), output_format="json"))
    document = result["json"]
    assert document["block_type"] == "Document"
    pages = document["children"]
    assert [page["block_type"] for page in pages] == ["Page"] * 3
    for number, page in enumerate(pages):
        refs = re.findall(r"<content-ref src='([^']+)'>", page["html"])
        assert refs == [child["id"] for child in page["children"]]
        assert f"Page {number} of doc.pdf" in page["children"][0]["html"]
    assert pages[0]["children"][1]["images"] == result["images"]


async def test_chunks(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    result = await convert(http, emulator, form(samples.pdf(2), output_format="chunks"))
    blocks = result["chunks"]["blocks"]
    assert [(block["page"], block["block_type"]) for block in blocks] == [
        (0, "Text"),
        (0, "Picture"),
        (1, "Text"),
    ]
    assert "Page 1 of doc.pdf" in blocks[2]["html"]
    assert set(result["chunks"]["page_info"]) == {"0", "1"}


async def test_several_formats(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    result = await convert(http, emulator, form(samples.pdf(), output_format="markdown,html,json"))
    assert result["output_format"] == "markdown,html,json"
    assert {"markdown", "html", "json"} <= result.keys() and "chunks" not in result


async def test_paginate(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    body = form(samples.pdf(3), output_format="markdown,html", paginate="true", page_range="1-2")
    result = await convert(http, emulator, body)
    markdown = result["markdown"]
    assert markdown.startswith(f"\n\n{{1}}{SEPARATOR}\n\n{SCAN}Page 1 of doc.pdf")
    assert re.findall(r"\{(\d+)\}-{48}", markdown) == ["1", "2"]
    assert re.findall(r"<div class='page' data-page-id='(\d+)'>", result["html"]) == ["1", "2"]


async def test_page_schema(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}}},
        "properties": {
            "patient_name": {"type": "string", "description": "Full name"},
            "visit": {"type": "string", "format": "date"},
            "severity": {"enum": ["low", "high"]},
            "age": {"type": "integer", "minimum": 18, "maximum": 120},
            "score": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "insured": {"type": "boolean"},
            "codes": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 2},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "minLength": 3}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        },
        "required": ["patient_name", "age", "codes"],
        "additionalProperties": False,
    }
    data = samples.pdf(1, tag="schema")
    result = await convert(http, emulator, form(data, page_schema=orjson.dumps(schema).decode()))
    extracted = orjson.loads(result["extraction_schema_json"])
    jsonschema.validate(extracted, schema)
    assert digest(data) in extracted["patient_name"]
    again = await convert(http, emulator, form(data, page_schema=orjson.dumps(schema).decode()))
    assert again["extraction_schema_json"] == result["extraction_schema_json"]


@pytest.mark.parametrize(
    ("data", "fields", "pages"),
    [
        (samples.pdf(5), {}, [0, 1, 2, 3, 4]),
        (samples.pdf(5), {"page_range": "0,2-3"}, [0, 2, 3]),
        (samples.pdf(5), {"max_pages": "2"}, [0, 1]),
        (samples.pdf(5), {"page_range": "1-4", "max_pages": "1"}, [1, 2, 3, 4]),
        (samples.pdf(3), {"page_range": "2-9"}, [2]),
        (samples.pdf(4, compact=True), {}, [0, 1, 2, 3]),
        (samples.png(), {}, [0]),
    ],
)
async def test_pages_processed(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    data: bytes,
    fields: dict[str, str],
    pages: list[int],
) -> None:
    emulator.config.seconds_per_page = 0.001
    result = await convert(http, emulator, form(data, output_format="json", **fields))
    assert result["page_count"] == len(pages)
    assert [page["id"] for page in result["json"]["children"]] == [
        f"/page/{i}/Page/{i}" for i in pages
    ]
    assert result["runtime"] == pytest.approx(0.001 * len(pages), abs=1e-3)
    assert result["cost_breakdown"]["list_cost_cents"] == pytest.approx(0.4 * len(pages))


async def test_page_range_past_the_end_fails(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    result = await convert(http, emulator, form(samples.pdf(2), page_range="5-9"))
    assert result["status"] == "failed" and result["success"] is False
    assert "selects none" in result["error"]


async def test_file_url(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    url = "https://example.com/paper.pdf"  # never fetched: the emulator stays offline
    result = await convert(http, emulator, form(file_url=url, output_format="markdown"))
    assert result["page_count"] == 1 and "paper.pdf" in result["markdown"]
    assert emulator.stats.submissions_by_digest == {digest(url.encode()): 1}


# -- refusals ----------------------------------------------------------------------------


async def test_api_key_required(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    for headers in ({"X-Api-Key": "wrong"}, {}):
        async with aiohttp.ClientSession(headers=headers) as anonymous:
            async with anonymous.post(emulator.marker_url, data=form(samples.pdf())) as response:
                assert response.status == 401
                assert (await response.json())["detail"].startswith("Invalid API key provided.")
            async with anonymous.get(check_url) as response:
                assert response.status == 401
    async with aiohttp.ClientSession(
        headers={"x-api-key": emulator.config.datalab_api_key}
    ) as lowercase:
        async with lowercase.get(check_url) as response:
            assert response.status == 200
    assert emulator.stats.requests[f"{SUBMIT} 401"] == 2
    assert emulator.stats.requests[f"{POLL} 401"] == 2


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (lambda: form(samples.pdf(), output_format="docx"), 400, "Invalid output_format"),
        (lambda: form(samples.pdf(), output_format="json,json"), 400, "Invalid output_format"),
        (lambda: form(samples.pdf(), mode="turbo"), 400, "Invalid mode"),
        (lambda: form(samples.pdf(), page_range="0-a"), 400, "Invalid page_range"),
        (lambda: form(samples.pdf(), page_schema="{not json"), 400, "page_schema must be"),
        (lambda: form(samples.pdf(), page_schema="[1, 2]"), 400, "page_schema must be"),
        (lambda: form(samples.pdf(), additional_config="nope"), 400, "additional_config"),
        (lambda: form(samples.pdf(), max_pages="0"), 400, "max_pages"),
        (lambda: form(samples.pdf(), file_url="https://example.com/a.pdf"), 400, "not both"),
        (lambda: form(output_format="json"), 400, "either file or file_url"),
        (lambda: form(file_url="ftp://example.com/a.pdf"), 400, "http or https"),
        (lambda: form(b"", filename="empty.pdf"), 400, "empty"),
        (
            lambda: form(samples.text(), filename="a.txt", content_type="text/plain"),
            400,
            "Invalid file type",
        ),
        (lambda: form(samples.text(), filename="a.pdf"), 400, "Invalid file type"),
        (lambda: form(samples.pdf(), webhook_url="https://example.com/hook"), 400, "loopback"),
        (lambda: form(samples.pdf(), paginate="maybe"), 422, "bool_parsing"),
        (lambda: form(samples.pdf(), max_pages="ten"), 422, "int_parsing"),
    ],
)
async def test_invalid_submissions(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    body: Callable[[], aiohttp.FormData],
    status: int,
    detail: str,
) -> None:
    async with http.post(emulator.marker_url, data=body()) as response:
        assert response.status == status
        answer = await response.json()
    if status == 422:  # FastAPI's validation list
        [error] = answer["detail"]
        assert error["type"] == detail and error["loc"][0] == "body"
    else:
        assert detail in answer["detail"]
    assert emulator.stats.requests[f"{SUBMIT} {status}"] == 1
    assert not emulator.stats.submissions_by_digest
    assert emulator.stats.received[-1]["status"] == status


async def test_accepted_file_types(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    uploads = [
        (samples.png(), "scan.png", "image/png"),
        (samples.jpeg(), "photo.jpg", "image/jpeg"),
        (b"<html><body>hi</body></html>", "page.html", "text/html"),
        (b"a,b\n1,2\n", "table.csv", "text/csv"),
    ]
    for data, filename, content_type in uploads:
        await submit(http, emulator, form(data, filename=filename, content_type=content_type))


# -- limits ------------------------------------------------------------------------------


async def test_requests_per_minute(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.config.datalab_rpm = 2
    first = await submit(http, emulator, form(samples.pdf()))
    await submit(http, emulator, form(samples.pdf()))
    async with http.post(emulator.marker_url, data=form(samples.pdf())) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["detail"].startswith(
            "Rate limit exceeded for endpoint /api/v1/marker. "
            "You can make 2 requests every 60 seconds."
        )
    for _ in range(5):  # polls are not rate limited
        async with http.get(first["request_check_url"]) as response:
            assert response.status == 200
    assert emulator.stats.rate_limited == 1
    emulator.reset()
    await submit(http, emulator, form(samples.pdf()))


async def test_concurrent_requests(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.config.datalab_max_concurrent = 1
    emulator.config.seconds_per_page = 0.2
    first = await submit(http, emulator, form(samples.pdf()))
    async with http.post(emulator.marker_url, data=form(samples.pdf())) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["detail"].startswith(
            "Concurrency exceeded for endpoint /api/v1/marker. You can have 1 concurrent requests"
        )
    await finish(http, first["request_check_url"])
    await submit(http, emulator, form(samples.pdf()))


async def test_pages_in_flight(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.config.datalab_max_pages_in_flight = 5
    emulator.config.seconds_per_page = 0.1
    first = await submit(http, emulator, form(samples.pdf(3)))
    assert emulator.datalab.pages_in_flight == 3
    refused = await submit(http, emulator, form(samples.pdf(3)))  # accepted, then fails
    async with http.get(refused["request_check_url"]) as response:
        result = await response.json()
    assert result == {
        "status": "failed",
        "success": False,
        "error": "Page rate limit exceeded. Your team has 3 pages in flight and this request adds "
        "3 more (6 total, limit: 5). Please wait for some requests to complete before submitting "
        "more, or contact support@datalab.to for a higher limit.",
    }
    fits = await submit(http, emulator, form(samples.pdf(2)))
    assert emulator.datalab.pages_in_flight == 5
    assert (await finish(http, fits["request_check_url"]))["status"] == "complete"
    assert (await finish(http, first["request_check_url"]))["status"] == "complete"
    assert emulator.datalab.pages_in_flight == 0


async def test_failed_jobs(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    marked = await convert(http, emulator, form(samples.pdf(2, extra=samples.FAIL_MARKER)))
    assert marked["status"] == "failed" and marked["success"] is False
    assert "%%FAIL%%" in marked["error"]
    emulator.config.failed_job_rate = 1.0
    drawn = await convert(http, emulator, form(samples.pdf()))
    assert drawn["success"] is False and "failed_job_rate" in drawn["error"]


async def test_failed_job_rate_is_seeded(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    emulator.config.failed_job_rate = 0.5
    answers = [await submit(http, emulator, form(samples.pdf())) for _ in range(20)]
    outcomes = [(await finish(http, a["request_check_url"]))["success"] for a in answers]
    assert 0 < outcomes.count(False) < 20


async def test_results_expire(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    answer = await submit(http, emulator, form(samples.pdf()))
    assert (await finish(http, answer["request_check_url"]))["status"] == "complete"
    emulator.config.result_ttl = 0.0
    async with http.get(answer["request_check_url"]) as response:
        assert response.status == 404
        assert "detail" in await response.json()
    assert answer["request_id"] not in emulator.datalab.jobs  # purged, not just hidden


async def test_unknown_request(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{emulator.marker_url}/no-such-request") as response:
        assert response.status == 404
        assert "detail" in await response.json()
    assert emulator.stats.requests[f"{POLL} 404"] == 1


# -- webhooks ----------------------------------------------------------------------------


@pytest.fixture
async def hook_server() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, Any]]]]:
    """A loopback server standing in for the user's webhook receiver."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        received.put_nowait(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


async def test_webhook(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    hook_server: tuple[str, asyncio.Queue[dict[str, Any]]],
) -> None:
    url, received = hook_server
    answer = await submit(http, emulator, form(samples.pdf(2), webhook_url=url))
    payload = await asyncio.wait_for(received.get(), timeout=2)
    assert payload == {
        "request_id": answer["request_id"],
        "request_check_url": answer["request_check_url"],
        "webhook_secret": None,
    }
    async with http.get(payload["request_check_url"]) as response:  # already done
        assert (await response.json())["status"] == "complete"
    await until(lambda: emulator.stats.webhooks_sent == 1)


async def test_webhook_pending_at_close(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    hook_server: tuple[str, asyncio.Queue[dict[str, Any]]],
) -> None:
    emulator.config.seconds_per_page = 60
    await submit(http, emulator, form(samples.pdf(), webhook_url=hook_server[0]))
    await emulator.datalab.close()  # cancels the delivery waiting for the job
    assert emulator.stats.webhooks_sent == 0 and hook_server[1].empty()


# -- faults ------------------------------------------------------------------------------


async def _request(
    emulator: Emulator, http: aiohttp.ClientSession, endpoint: str, check_url: str
) -> aiohttp.ClientResponse:
    if endpoint == SUBMIT:
        return await http.post(emulator.marker_url, data=form(samples.pdf(tag="fault")))
    return await http.get(check_url)


@pytest.mark.parametrize("endpoint", [SUBMIT, POLL])
@pytest.mark.parametrize("status", ["500", "503", "504"])
async def test_fault_status(
    emulator: Emulator, http: aiohttp.ClientSession, endpoint: str, status: str
) -> None:
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    emulator.faults.schedule(endpoint, status)
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == int(status)
        assert "detail" in await response.json()
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == 200
    assert emulator.stats.faults[f"{endpoint} {status}"] == 1
    assert emulator.stats.requests[f"{endpoint} {status}"] == 1
    assert sum(emulator.stats.submissions_by_digest.values()) == 1 + (endpoint == SUBMIT)


@pytest.mark.parametrize("endpoint", [SUBMIT, POLL])
async def test_fault_bad_gateway(
    emulator: Emulator, http: aiohttp.ClientSession, endpoint: str
) -> None:
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    emulator.faults.schedule(endpoint, "502")
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == 502 and response.content_type == "text/html"
        assert "502 Bad Gateway" in await response.text()


@pytest.mark.parametrize("endpoint", [SUBMIT, POLL])
async def test_fault_reset(emulator: Emulator, http: aiohttp.ClientSession, endpoint: str) -> None:
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    # aiohttp quietly retries an idempotent request (the GET) once when the server drops it.
    resets = 2 if endpoint == POLL else 1
    emulator.faults.schedule(endpoint, "reset", times=resets)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with await _request(emulator, http, endpoint, check_url) as response:
            await response.read()
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == 200
    assert emulator.stats.faults[f"{endpoint} reset"] == resets


@pytest.mark.parametrize("endpoint", [SUBMIT, POLL])
async def test_fault_hang(emulator: Emulator, http: aiohttp.ClientSession, endpoint: str) -> None:
    emulator.config.hang_seconds = 5
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    emulator.faults.schedule(endpoint, "hang")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_request(emulator, http, endpoint, check_url), timeout=0.2)
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == 200


@pytest.mark.parametrize("endpoint", [SUBMIT, POLL])
async def test_fault_malformed(
    emulator: Emulator, http: aiohttp.ClientSession, endpoint: str
) -> None:
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    emulator.faults.schedule(endpoint, "malformed")
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await response.read())
    assert sum(emulator.stats.submissions_by_digest.values()) == 1


@pytest.mark.parametrize("endpoint", [SUBMIT, POLL])
async def test_fault_slow(emulator: Emulator, http: aiohttp.ClientSession, endpoint: str) -> None:
    emulator.config.slow_seconds = 0.1
    check_url = (await submit(http, emulator, form(samples.pdf())))["request_check_url"]
    emulator.faults.schedule(endpoint, "slow")
    started = time.monotonic()
    async with await _request(emulator, http, endpoint, check_url) as response:
        assert response.status == 200
    assert time.monotonic() - started >= 0.1
    assert emulator.stats.faults[f"{endpoint} slow"] == 1


async def test_answer_lost_after_acceptance(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = samples.pdf(2, tag="lost")
    emulator.faults.schedule(ACCEPTED, "504")
    async with http.post(emulator.marker_url, data=form(data)) as response:
        assert response.status == 504  # ...yet the job was accepted and will bill
    assert emulator.stats.submissions_by_digest == {digest(data): 1}
    assert emulator.datalab.pages_in_flight == 2
    await submit(http, emulator, form(data))  # the naive retry pays twice
    assert emulator.stats.snapshot()["duplicate_submissions"] == 1
    assert emulator.stats.requests[f"{SUBMIT} 200"] == 2
    assert emulator.stats.requests[f"{ACCEPTED} 504"] == 1


# -- counters ----------------------------------------------------------------------------


async def test_stats(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    twice, once = samples.pdf(tag="twice"), samples.png(tag="once")
    await convert(http, emulator, form(twice, output_format="html"))
    await convert(http, emulator, form(twice, output_format="html"))
    await submit(
        http, emulator, form(once, filename="scan.png", content_type="image/png", mode="fast")
    )
    async with http.post(emulator.marker_url, data=form(twice, mode="nope")) as response:
        assert response.status == 400

    assert emulator.stats.submissions_by_digest == {digest(twice): 2, digest(once): 1}
    assert emulator.stats.snapshot()["duplicate_submissions"] == 1
    assert emulator.stats.requests[f"{SUBMIT} 200"] == 3
    assert emulator.stats.requests[f"{SUBMIT} 400"] == 1
    assert emulator.stats.requests[f"{POLL} 200"] >= 2
    png_seen = emulator.stats.received[-2]
    assert png_seen["form"] == {"mode": "fast"}
    assert (png_seen["filename"], png_seen["content_type"]) == ("scan.png", "image/png")
    assert png_seen["digest"] == digest(once) and png_seen["status"] == 200


# -- convert once, extract and segment many ----------------------------------------------

INVOICE = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}},
    "required": ["vendor"],
}
PARTIES = {
    "type": "object",
    "properties": {"date": {"type": "string", "format": "date"}},
    "required": ["date"],
}
SECTIONS = {
    "segments": [
        {"name": "Invoice", "description": "an invoice"},
        {"name": "Receipt", "description": "a receipt"},
    ]
}


async def test_sdk_converts_once_then_extracts_and_segments_from_the_checkpoint(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "bundle.pdf"
    path.write_bytes(samples.bundle())
    key = digest(path.read_bytes())
    async with sdk_client(emulator) as client:
        converted = await client.convert(
            path, options=ConvertOptions(save_checkpoint=True), poll_interval=0.01
        )
        checkpoint = converted.checkpoint_id
        extracted = [
            await client.extract(
                options=ExtractOptions(page_schema=json.dumps(schema), checkpoint_id=checkpoint),
                poll_interval=0.01,
            )
            for schema in (INVOICE, PARTIES)
        ]
        options = SegmentOptions(segmentation_schema=json.dumps(SECTIONS), checkpoint_id=checkpoint)
        segmented = await client.segment(options=options, poll_interval=0.01)

    assert [json.loads(result.extraction_schema_json) for result in extracted] == [
        {"vendor": "Globex Corporation"},
        {"date": "2026-09-18"},
    ]
    assert segmented.success and segmented.segmentation_results == {
        "segments": [
            {"name": "Invoice", "pages": [0, 1], "confidence": "high"},
            {"name": "Receipt", "pages": [2, 3, 4], "confidence": "high"},
        ],
        "metadata": {"total_pages": 5, "segmentation_method": "schema"},
    }
    assert not any(seen["ignored"] for seen in emulator.stats.received)  # the SDK's fields
    stats = emulator.stats
    assert stats.parses_by_digest == {key: 1}  # OCR once...
    assert stats.checkpoint_reads_by_digest == {key: 3}  # ...read three times
    assert converted.cost_breakdown["operations"] == {"parse": 2.0}
    assert [result.cost_breakdown for result in extracted] == [
        {"list_cost_cents": 3.0, "final_cost_cents": 3.0, "operations": {"extract": 3.0}}
    ] * 2
    assert segmented.cost_breakdown["operations"] == {"segment": 1.0}
    assert dict(stats.cents_billed) == {"convert": 2.0, "extract": 6.0, "segment": 1.0}


async def test_extract_and_segment_from_a_file_parse_and_bill_both(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = samples.bundle()
    body = form(data, page_schema=json.dumps(INVOICE))
    extracted = await finish(
        http, (await submit(http, emulator, body, "extract"))["request_check_url"]
    )
    assert extracted["cost_breakdown"]["operations"] == {"parse": 2.0, "extract": 3.0}
    assert extracted["cost_breakdown"]["final_cost_cents"] == 5.0

    emulator.config.datalab_segment_pages = "page_range"
    body = form(
        data,
        segmentation_schema=json.dumps({"sections": SECTIONS["segments"]}),
        page_range="1-3",
        mode="accurate",
    )
    answer = await submit(http, emulator, body, "segment")
    assert answer["request_check_url"].endswith(f"/api/v1/segment/{answer['request_id']}")
    segmented = await finish(http, answer["request_check_url"])
    assert segmented["segmentation_results"]["segments"] == [
        {"name": "Invoice", "page_range": "1", "confidence": "low"},
        {"name": "Receipt", "page_range": "2-3", "confidence": "high"},
    ]
    assert "markdown" not in segmented and segmented["page_count"] == 3
    assert segmented["cost_breakdown"]["operations"] == {"parse": 1.8, "segment": 0.6}
    assert emulator.stats.parses_by_digest == {digest(data): 2}
    assert not emulator.stats.checkpoint_reads_by_digest


@pytest.mark.parametrize(
    ("fields", "status", "detail"),
    [
        ({}, 422, "missing"),
        ({"segmentation_schema": "[]"}, 400, "JSON object"),
        ({"segmentation_schema": '{"segments": []}'}, 400, "'segments' list"),
        ({"segmentation_schema": '{"segments": [{"description": "x"}]}'}, 400, "'name'"),
    ],
)
async def test_segment_needs_a_schema_of_named_segments(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    fields: dict[str, str],
    status: int,
    detail: str,
) -> None:
    url = f"{emulator.datalab_base_url}/api/v1/segment"
    async with http.post(url, data=form(samples.pdf(), **fields)) as response:
        assert response.status == status
        answer = await response.json()
    assert detail in (answer["detail"][0]["type"] if status == 422 else answer["detail"])
    assert not emulator.stats.submissions_by_digest


@pytest.mark.parametrize("endpoint", ["extract", "segment"])
@pytest.mark.parametrize("lost", ["404", "failed"])
async def test_a_lost_checkpoint_is_refused_or_fails_as_configured(
    emulator: Emulator, http: aiohttp.ClientSession, endpoint: str, lost: str
) -> None:
    emulator.config.datalab_lost_checkpoint = lost  # type: ignore[assignment]
    converted = await convert(http, emulator, form(samples.pdf(2), save_checkpoint="true"))
    emulator.config.datalab_checkpoint_ttl = 0.0  # expired at once
    schema = {
        "extract": {"page_schema": json.dumps(INVOICE)},
        "segment": {"segmentation_schema": json.dumps(SECTIONS)},
    }[endpoint]
    for checkpoint in (converted["checkpoint_id"], "ckpt_never_saved"):
        body = form(checkpoint_id=checkpoint, **schema)
        async with http.post(
            f"{emulator.datalab_base_url}/api/v1/{endpoint}", data=body
        ) as response:
            answer = await response.json()
            if lost == "404":
                assert response.status == 404 and checkpoint in answer["detail"]
                continue
            assert response.status == 200
        result = await finish(http, answer["request_check_url"])
        assert result["status"] == "failed" and checkpoint in result["error"]
        assert "cost_breakdown" not in result
    assert not emulator.stats.checkpoint_reads_by_digest
    assert set(emulator.stats.cents_billed) == {"marker"}  # the lost ones bill nothing


# -- presigned uploads -----------------------------------------------------------------


async def request_upload(
    http: aiohttp.ClientSession, emulator: Emulator, filename: str = "scan.pdf"
) -> dict[str, Any]:
    url = f"{emulator.datalab_base_url}/api/v1/files/upload"
    async with http.post(
        url, json={"filename": filename, "content_type": "application/pdf"}
    ) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
    return answer


async def put(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """PUT to storage from a session with no key, as a presigned URL wants it."""
    async with aiohttp.ClientSession() as storage:
        async with storage.put(url, data=data, headers=headers) as response:
            return response.status, await response.text()


async def confirm(http: aiohttp.ClientSession, emulator: Emulator, file_id: int) -> tuple[int, Any]:
    url = f"{emulator.datalab_base_url}/api/v1/files/{file_id}/confirm"
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_sdk_uploads_once_then_converts_extracts_and_segments_the_reference(
    emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "bundle.pdf"
    path.write_bytes(samples.bundle())
    key = digest(path.read_bytes())
    async with sdk_client(emulator) as client:
        uploaded = await client.upload_files(path)
        reference = uploaded.reference
        converted = await client.convert(file_url=reference, poll_interval=0.01)
        extracted = await client.extract(
            file_url=reference,
            options=ExtractOptions(page_schema=json.dumps(INVOICE)),
            poll_interval=0.01,
        )
        segmented = await client.segment(
            file_url=reference,
            options=SegmentOptions(segmentation_schema=json.dumps(SECTIONS)),
            poll_interval=0.01,
        )
        metadata = await client.get_file_metadata(uploaded.file_id)

    assert reference == f"datalab://file-{uploaded.file_id}" and uploaded.created
    assert (metadata.upload_status, metadata.file_size) == ("completed", len(path.read_bytes()))
    assert "Globex Corporation - Invoice G-77" in converted.markdown and converted.page_count == 5
    assert json.loads(extracted.extraction_schema_json)["vendor"] == "Globex Corporation"
    assert [s["name"] for s in segmented.segmentation_results["segments"]] == ["Invoice", "Receipt"]
    stats = emulator.stats
    assert stats.storage_puts_by_digest == {key: 1} and stats.storage_bytes == len(
        path.read_bytes()
    )
    assert stats.storage_key_leaks == 0  # the SDK PUTs from a session without the key
    assert stats.references_used == {reference: 3}
    assert stats.submissions_by_digest == {key: 3}  # the stored bytes, not the reference
    assert [seen["filename"] for seen in stats.received] == ["bundle.pdf"] * 3


async def test_storage_takes_no_key_and_counts_one_sent_anyway(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = samples.pdf(2, tag="stored")
    grant = await request_upload(http, emulator)
    assert grant["expires_in"] == 3600 and "/storage/" in grant["upload_url"]
    assert emulator.config.datalab_api_key not in grant["upload_url"]
    reference = grant["reference"]

    status, _ = await confirm(http, emulator, grant["file_id"])
    assert status == 400  # nothing in storage yet
    status, answer = await post_form(http, emulator, "convert", form(file_url=reference))
    assert status == 400 and "pending" in answer["detail"]
    status, body = await put(grant["upload_url"] + "0", data)  # a tampered signature
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body
    emulator.faults.schedule("storage_put", "503")
    assert (await put(grant["upload_url"], data))[0] == 503

    async with http.put(grant["upload_url"], data=data) as response:  # the session has the key
        assert response.status == 200
    assert emulator.stats.storage_key_leaks == 1
    assert (await put(grant["upload_url"], data))[0] == 200
    assert emulator.stats.storage_key_leaks == 1
    assert emulator.stats.storage_puts_by_digest == {digest(data): 2}

    status, answer = await confirm(http, emulator, grant["file_id"])
    assert status == 200 and answer["upload_status"] == "completed"
    assert answer["file_size"] == len(data) and answer["reference"] == reference
    result = await convert_ref(http, emulator, reference)
    assert result["page_count"] == 2
    status, answer = await post_form(http, emulator, "convert", form(file_url="datalab://file-99"))
    assert status == 404 and "datalab://file-99" in answer["detail"]
    async with aiohttp.ClientSession() as anonymous:
        url = f"{emulator.datalab_base_url}/api/v1/files/upload"
        async with anonymous.post(url, json={"filename": "x.pdf"}) as response:
            assert response.status == 401


async def test_an_expired_upload_url_is_refused_as_storage_does(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = samples.pdf(1, tag="late")
    stale = await request_upload(http, emulator)
    emulator.config.datalab_upload_url_ttl = 0.0
    status, body = await put(stale["upload_url"], data)
    assert status == 403
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in body
    assert not emulator.stats.storage_puts_by_digest

    emulator.config.datalab_upload_url_ttl = 60.0
    fresh = await request_upload(http, emulator)
    assert fresh["expires_in"] == 60 and fresh["reference"] != stale["reference"]
    assert (await put(fresh["upload_url"], data))[0] == 200
    assert (await confirm(http, emulator, fresh["file_id"]))[0] == 200
    assert (await convert_ref(http, emulator, fresh["reference"]))["status"] == "complete"
    assert emulator.stats.storage_puts_by_digest == {digest(data): 1}


async def test_an_endpoint_can_refuse_references(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    data = samples.pdf(1, tag="refused")
    grant = await request_upload(http, emulator)
    await put(grant["upload_url"], data)
    await confirm(http, emulator, grant["file_id"])
    emulator.config.datalab_refuse_references = ["convert"]
    status, answer = await post_form(http, emulator, "convert", form(file_url=grant["reference"]))
    assert status == 400 and answer["detail"] == "file_url must be an http or https URL."
    body = form(file_url=grant["reference"], page_schema=json.dumps(INVOICE))
    assert (await post_form(http, emulator, "extract", body))[0] == 200
    assert (await post_form(http, emulator, "convert", form(data)))[0] == 200  # multipart still
    assert emulator.stats.references_used == {grant["reference"]: 1}


async def post_form(
    http: aiohttp.ClientSession, emulator: Emulator, endpoint: str, body: aiohttp.FormData
) -> tuple[int, Any]:
    async with http.post(f"{emulator.datalab_base_url}/api/v1/{endpoint}", data=body) as response:
        return response.status, await response.json()


async def convert_ref(
    http: aiohttp.ClientSession, emulator: Emulator, reference: str
) -> dict[str, Any]:
    answer = await submit(http, emulator, form(file_url=reference), "convert")
    return await finish(http, answer["request_check_url"])


# -- credits -----------------------------------------------------------------------------


@pytest.mark.parametrize("polls_need_credits", [False, True])
async def test_credits_run_out(
    emulator: Emulator, http: aiohttp.ClientSession, polls_need_credits: bool
) -> None:
    emulator.config.datalab_credits_cents = 1.0  # two 1-page conversions at 0.4 cents
    emulator.config.datalab_polls_need_credits = polls_need_credits
    first = await convert(http, emulator, form(samples.pdf(1, tag="a")))
    emulator.config.seconds_per_page = 5.0  # the second is still processing when credits end
    second = await submit(http, emulator, form(samples.pdf(1, tag="b")), "convert")
    status, answer = await post_form(http, emulator, "convert", form(samples.pdf(1, tag="c")))
    assert (status, answer) == (
        403,
        {"detail": "You need an active, paid subscription to use this API."},
    )
    assert emulator.datalab.credits.balance == pytest.approx(0.2)
    assert dict(emulator.stats.cents_billed) == {"marker": 0.4, "convert": 0.4}

    async with http.get(second["request_check_url"]) as response:
        if polls_need_credits:
            assert response.status == 403
            assert (await response.json())["detail"].startswith("You need an active")
        else:
            assert response.status == 200 and (await response.json())["status"] == "processing"

    emulator.config.datalab_credits_cents = 2.0  # topped up: submits and polls pass again
    async with http.get(second["request_check_url"]) as response:
        assert response.status == 200
    assert first["cost_breakdown"]["final_cost_cents"] == 0.4


async def test_sdk_reports_the_credits_403_without_retrying(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.datalab_credits_cents = 0.0
    path = tmp_path / "doc.pdf"
    path.write_bytes(samples.pdf(1))
    async with sdk_client(emulator) as client:
        with pytest.raises(DatalabAPIError, match="Forbidden") as caught:  # it drops the body
            await client.convert(path, poll_interval=0.01)
    assert caught.value.status_code == 403
    assert emulator.stats.requests[f"{SUBMIT} 403"] == 1
