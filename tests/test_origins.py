"""The key stays with the origin it was given for, and out of what a server sends back.

A redirect, to another origin or scheme, is refused as the item's `redirect_refused`
(for both APIs, on upload and on poll); a Datalab `request_check_url` on another origin is
polled on the API's own origin instead, and one that cannot be polled at all ends its item
only; a key a server echoes in an error is redacted in the result, the journal and the
logs. The servers are real aiohttp servers on loopback; the second one ("elsewhere")
records what reached it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from genai_coroutines import DocumentConfig, DocumentProcessor, Journal, Submission
from genai_coroutines.emulator import Emulator
from tests import samples
from tests.documents_support import config_for, form
from tests.responses_support import run
from tests.server_support import Handler, Server

DATALAB_KEY = "dl-secret-0123456789"


async def _elsewhere(server: Server) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"status": "complete", "success": True, "markdown": "stolen"})

    await server.start([("*", "/{tail:.*}", ok)])


def _redirect(to: Callable[[], str], status: int) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": to()})

    return handler


def _config(url: str, **options: Any) -> DocumentConfig:
    return DocumentConfig(
        api_key=DATALAB_KEY,
        api_url=f"{url}/api/v1/marker",
        poll_interval_secs=0.01,
        base_retry_delay_secs=0.01,
        **options,
    )


def _accepting(check_url: Callable[[], str]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"success": True, "request_check_url": check_url()})

    return handler


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_datalab_upload_redirect_never_takes_the_key_elsewhere(
    servers: tuple[Server, Server], status: int
) -> None:
    api, elsewhere = servers
    await _elsewhere(elsewhere)
    await api.start([("POST", "/api/v1/marker", _redirect(lambda: elsewhere.url + "/x", status))])
    [result] = await DocumentProcessor(_config(api.url)).process_multiparts([samples.pdf(1)])

    assert not result["success"] and result["error_type"] == "redirect_refused"
    assert elsewhere.url in result["error"] and result["attempts"] == 1
    assert elsewhere.seen == []


async def test_a_datalab_poll_redirect_never_takes_the_key_elsewhere(
    servers: tuple[Server, Server],
) -> None:
    api, elsewhere = servers
    await _elsewhere(elsewhere)
    await api.start(
        [
            ("POST", "/api/v1/marker", _accepting(lambda: api.url + "/check/1")),
            ("GET", "/check/1", _redirect(lambda: elsewhere.url + "/check/1", 302)),
        ]
    )
    [result] = await DocumentProcessor(_config(api.url)).process_multiparts([samples.pdf(1)])

    assert result["error_type"] == "redirect_refused" and elsewhere.seen == []
    assert sum(1 for headers in api.seen if headers.get("X-Api-Key") == DATALAB_KEY) == 2


async def test_a_request_check_url_on_another_origin_is_polled_on_the_apis_own(
    servers: tuple[Server, Server], emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    _, elsewhere = servers
    await _elsewhere(elsewhere)  # 127.0.0.1 as the emulator, another port: another origin
    emulator.config.datalab_check_origin = elsewhere.url
    documents = [samples.pdf(2, tag=str(i)) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="genai_coroutines.ocr"):
        results = await DocumentProcessor(config_for(emulator)).process_multiparts(documents)

    assert elsewhere.seen == []  # not a poll, so never the key
    assert [r["success"] for r in results] == [True] * 3, [r["error"] for r in results]
    assert [r["attempts"] for r in results] == [1, 1, 1]
    assert all("Page 0" in r["json_response"] for r in results)  # the emulator's answers
    assert emulator.stats.requests["marker_poll 200"] >= 3
    assert caplog.text.count("check_url_elsewhere") == 3 and elsewhere.url in caplog.text


async def test_a_resumed_job_on_another_origin_is_polled_on_the_apis_own(
    servers: tuple[Server, Server], emulator: Emulator
) -> None:
    _, elsewhere = servers
    await _elsewhere(elsewhere)
    emulator.config.datalab_check_origin = elsewhere.url
    document = samples.pdf(1)
    processor = DocumentProcessor(config_for(emulator))
    accepted = await _submit_directly(emulator, document)
    assert accepted["request_check_url"].startswith(elsewhere.url)

    resume = {0: Submission(accepted["request_id"], accepted["request_check_url"])}
    [result] = [r async for r in processor.stream([document], resume=resume)]

    assert elsewhere.seen == []
    assert result["success"] and result["attempts"] == 0, result["error"]


async def _submit_directly(emulator: Emulator, document: bytes) -> dict[str, Any]:
    """Upload as another client of the key would, outside any batch: the emulator's answer."""
    headers = {"X-Api-Key": emulator.config.datalab_api_key}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(emulator.marker_url, data=form(document)) as response:
            answer: dict[str, Any] = await response.json()
    return answer


async def test_an_openai_redirect_is_not_taken_as_a_success(
    servers: tuple[Server, Server], emulator: Emulator
) -> None:
    api, elsewhere = servers
    await _elsewhere(elsewhere)
    await api.start([("POST", "/v1/responses", _redirect(lambda: elsewhere.url + "/v1", 302))])
    results = await run(emulator, ["hi"], base_url=f"{api.url}/v1")

    [result] = results["results"]
    assert result["error_type"] == "redirect_refused" and elsewhere.seen == []


@pytest.mark.parametrize(
    "check_url",
    ["ftp://127.0.0.1/check/1", "http://127.0.0.1:99999/check/1", "http://[::1/check/1"],
)
async def test_a_request_check_url_that_cannot_be_polled_ends_that_item_only(
    servers: tuple[Server, Server], check_url: str
) -> None:
    api, _ = servers
    await api.start([("POST", "/api/v1/marker", _accepting(lambda: check_url))])
    results = await DocumentProcessor(_config(api.url)).process_multiparts(
        [samples.pdf(1, tag="a"), samples.pdf(1, tag="b")]
    )

    assert [r["success"] for r in results] == [False, False]
    assert all(r["error_type"] == "invalid_response" for r in results)
    assert all(r["attempts"] == 1 for r in results)  # the upload is never repeated


async def test_a_redirect_to_another_scheme_is_refused(servers: tuple[Server, Server]) -> None:
    api, _ = servers
    await api.start([("POST", "/api/v1/marker", _redirect(lambda: "ftp://127.0.0.1/x", 302))])
    [result] = await DocumentProcessor(_config(api.url)).process_multiparts([samples.pdf(1)])
    assert result["error_type"] == "redirect_refused" and "ftp://127.0.0.1" in result["error"]


async def test_a_datalab_error_echoing_the_key_is_redacted_everywhere(
    servers: tuple[Server, Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api, _ = servers

    async def echo(request: web.Request) -> web.Response:
        key = request.headers["X-Api-Key"]
        return web.json_response({"detail": f"key {key} is not allowed here"}, status=400)

    await api.start([("POST", "/api/v1/marker", echo)])
    caplog.set_level(logging.DEBUG)
    journal = tmp_path / "ocr.journal"
    [result] = await DocumentProcessor(_config(api.url)).process_multiparts(
        [samples.pdf(1)], journal=journal
    )

    assert "[redacted]" in result["error"] and DATALAB_KEY not in result["error"]
    with Journal(journal, "documents") as records:
        assert DATALAB_KEY not in repr(records.results())
    assert DATALAB_KEY not in caplog.text
