"""The HTTP sessions every processor and the pipeline open: on the caller's connector when
one is given (`connector=`), with one `User-Agent` for both APIs.

The emulator is reached under a host name no DNS knows (`.invalid` is reserved), which
only the resolver of the test's connectors maps to loopback: a request that arrives was
sent through a connector the caller made, and not through the library's own pool.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from genai_coroutines import (
    DocumentConfig,
    DocumentProcessor,
    ExtractionPipeline,
    ResponsesProcessor,
    extraction_request,
)
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import USER_AGENT
from tests.pipeline_support import INVOICE_SCHEMA, invoice_pdf
from tests.responses_support import request_for

HOST = "emulator.invalid"


class LoopbackResolver(AbstractResolver):
    """Resolves `HOST` to 127.0.0.1 and nothing else, counting its lookups."""

    def __init__(self) -> None:
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != HOST:
            raise OSError(f"{host} is not the emulator")
        self.lookups += 1
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


class Connectors:
    """A caller's connector factory: pools of two connections on `LoopbackResolver`,
    each one kept so the test can see it was made, used and closed."""

    def __init__(self) -> None:
        self.resolver = LoopbackResolver()
        self.made: list[aiohttp.TCPConnector] = []

    def __call__(self) -> aiohttp.BaseConnector:
        connector = aiohttp.TCPConnector(limit=2, resolver=self.resolver)
        self.made.append(connector)
        return connector


def renamed(url: str) -> str:
    """The emulator's `url` under `HOST`."""
    return url.replace("127.0.0.1", HOST)


def renamed_openai(emulator: Emulator) -> str:
    return renamed(emulator.openai_base_url)


def ocr_config(emulator: Emulator) -> DocumentConfig:
    return DocumentConfig(
        api_key=emulator.config.datalab_api_key,
        api_url=renamed(f"{emulator.datalab_base_url}/api/v1/convert"),
        output_format="markdown",
        poll_interval_secs=0.01,
        base_retry_delay_secs=0.01,
    )


async def run_responses(emulator: Emulator, connectors: Connectors) -> list[dict[str, Any]]:
    prompts = [f"prompt {n}" for n in range(8)]
    request = request_for(emulator, prompts, base_url=renamed_openai(emulator))
    batch = await ResponsesProcessor(connector=connectors).process_batch(request)
    results: list[dict[str, Any]] = batch["results"]
    return results


async def run_documents(emulator: Emulator, connectors: Connectors) -> list[dict[str, Any]]:
    documents = [invoice_pdf(0), invoice_pdf(1)]
    return await DocumentProcessor(ocr_config(emulator), connector=connectors).process(documents)


async def run_pipeline(emulator: Emulator, connectors: Connectors) -> list[dict[str, Any]]:
    extraction = extraction_request(
        model="gpt-4o-mini",
        schema=INVOICE_SCHEMA,
        api_key=emulator.config.openai_api_key,
        base_url=renamed_openai(emulator),
        retry_delay_min_ms=10,
        retry_delay_max_ms=50,
    )
    pipeline = ExtractionPipeline(ocr_config(emulator), extraction, connector=connectors)
    return await pipeline.process([invoice_pdf(0), invoice_pdf(1)])


Runner = Callable[[Emulator, Connectors], Awaitable[list[dict[str, Any]]]]


@pytest.mark.parametrize("run", [run_responses, run_documents, run_pipeline])
async def test_every_request_goes_through_the_callers_connector(
    emulator: Emulator, run: Runner
) -> None:
    connectors = Connectors()
    results = await run(emulator, connectors)

    assert results and all(result["success"] for result in results), results
    assert connectors.resolver.lookups > 0  # only its connectors can reach HOST
    assert connectors.made and all(connector.closed for connector in connectors.made)
    peers = {item["peer"] for item in emulator.stats.received if item["endpoint"] == "responses"}
    assert len(peers) <= 2  # its pool of two carried them all, not one of the batch's size


async def test_without_a_connector_the_made_up_host_is_not_reached(emulator: Emulator) -> None:
    """The counterpart: the library's own pool cannot resolve `HOST`, so the test above
    passes only when the caller's connector carries the requests."""
    request = request_for(
        emulator, ["one"], base_url=renamed_openai(emulator), max_retries=0, timeout_secs=5
    )
    batch = await ResponsesProcessor().process_batch(request)
    assert batch["results"][0]["error_type"] == "connection_error"


async def test_both_apis_are_sent_one_user_agent(emulator: Emulator) -> None:
    datalab_agents: list[str] = []

    async def upload(request: web.Request) -> web.Response:
        datalab_agents.append(request.headers["User-Agent"])
        return web.json_response({"detail": "no"}, status=400)

    app = web.Application()
    app.router.add_post("/api/v1/marker", upload)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        config = DocumentConfig(api_key="k", api_url=f"http://127.0.0.1:{port}/api/v1/marker")
        await DocumentProcessor(config).process([invoice_pdf(0)])
    finally:
        await runner.cleanup()
    await ResponsesProcessor().process_batch(request_for(emulator, ["one"]))
    openai_agents = [
        item["headers"]["User-Agent"]
        for item in emulator.stats.received
        if item.get("endpoint") == "responses"
    ]
    assert datalab_agents == openai_agents == [USER_AGENT]
    assert USER_AGENT.startswith("genai-coroutines/")


@pytest.mark.parametrize(
    "make",
    [
        lambda **clients: ResponsesProcessor(**clients),
        lambda **clients: DocumentProcessor(DocumentConfig(api_key="k"), **clients),
        lambda **clients: ExtractionPipeline(
            DocumentConfig(api_key="k"),
            extraction_request(model="gpt-4o-mini", schema=INVOICE_SCHEMA, api_key="k"),
            **clients,
        ),
    ],
)
def test_a_connector_that_is_no_factory_or_a_misspelt_keyword_is_refused_naming_it(
    make: Callable[..., Any],
) -> None:
    with pytest.raises(TypeError, match="connector must be a callable"):
        make(connector={"limit": 2})  # options, where a factory of a connector is expected
    with pytest.raises(TypeError, match="'limit_store'"):  # the keywords are declared once
        make(limit_store="local", connector=aiohttp.TCPConnector)
