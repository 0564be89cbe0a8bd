"""OpenTelemetry metrics and spans (`engine.telemetry`) and the CLI's Prometheus `/metrics`.

The OpenTelemetry API takes one global MeterProvider and TracerProvider per process, so
this module installs SDK providers once (an in-memory metric reader taking deltas, an
in-memory span exporter) and each test reads what its own batch added. Token sums are
checked against what the emulator billed (`Stats.billed_tokens`, `pages_processed`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from genai_coroutines import DocumentProcessor, ResponsesProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.responses import BatchAPI
from tests import samples
from tests.documents_support import config_for
from tests.responses_support import request_for, run
from tests.test_cli import ROOT, cli_env, start, write_prompts

MODEL = "gpt-4o-mini"
DELTA = AggregationTemporality.DELTA
READER = InMemoryMetricReader(
    preferred_temporality={Counter: DELTA, ObservableCounter: DELTA, Histogram: DELTA}
)
EXPORTER = InMemorySpanExporter()


@dataclass
class Point:
    attributes: dict[str, Any]
    value: float
    """A counter's sum, a histogram's sum, a gauge's value."""
    count: int = 0
    """A histogram's count."""


class Collected:
    """The metric points one collection returned, by metric name."""

    def __init__(self) -> None:
        self.points: dict[str, list[Point]] = {}
        data = READER.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        value = point.sum if value is None else value  # type: ignore[union-attr]
                        count = getattr(point, "count", 0)
                        found = Point(dict(point.attributes or {}), value, count)
                        self.points.setdefault(metric.name, []).append(found)

    def sum(self, name: str, **where: str) -> float:
        return sum(p.value for p in self.matching(name, where))

    def count(self, name: str, **where: str) -> int:
        return sum(p.count for p in self.matching(name, where))

    def matching(self, name: str, where: dict[str, str]) -> list[Point]:
        where = {key.replace("__", "."): value for key, value in where.items()}
        return [
            p
            for p in self.points.get(name, [])
            if all(p.attributes.get(k) == v for k, v in where.items())
        ]


class Telemetry:
    """What the SDK received since the test began."""

    def metrics(self) -> Collected:
        return Collected()

    def spans(self) -> list[ReadableSpan]:
        return list(EXPORTER.get_finished_spans())


@pytest.fixture(scope="module")
def sdk() -> Iterator[None]:
    """SDK providers, set globally once for the process (the API refuses a second); the
    spans of later test modules are not kept."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(tracers)
    yield
    EXPORTER.shutdown()


@pytest.fixture
def otel(sdk: None) -> Telemetry:
    READER.get_metrics_data()  # deltas: what earlier tests recorded is taken away
    EXPORTER.clear()
    return Telemetry()


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def assert_nested(spans: list[ReadableSpan], attempt_names: set[str]) -> None:
    """One batch span; each item span under it; each attempt under an item."""
    (batch,) = by_name(spans, "genai_coroutines batch")
    items = by_name(spans, "genai_coroutines item")
    assert items and all(s.parent and s.parent.span_id == batch.context.span_id for s in items)
    item_ids = {s.context.span_id for s in items}
    attempts = [s for s in spans if s.name in attempt_names]
    assert attempts and all(s.parent and s.parent.span_id in item_ids for s in attempts)
    assert all(s.kind is trace.SpanKind.CLIENT for s in attempts)


def assert_no_key(telemetry: Telemetry, collected: Collected, *keys: str) -> None:
    """No key in any span's name or attribute, or any metric attribute."""
    texts = [s.name for s in telemetry.spans()]
    texts += [str(v) for s in telemetry.spans() for v in (s.attributes or {}).values()]
    texts += [str(p.attributes) for points in collected.points.values() for p in points]
    assert texts
    for key in keys:
        assert not [t for t in texts if key in t]


# -- tokens equal to what the emulator billed --------------------------------------------


async def test_sync_path_with_5xx_counts_the_billed_tokens_once_and_a_span_per_attempt(
    emulator: Emulator, otel: Telemetry
) -> None:
    emulator.faults.schedule("responses", "500", times=2)
    emulator.faults.schedule("responses", "503", times=1)
    out = await run(emulator, [f"prompt {i}" for i in range(8)], max_concurrent_requests=4)
    assert out["total_success"] == 8

    got = otel.metrics()
    billed = emulator.stats.billed_tokens
    chat = {"gen_ai__operation__name": "chat", "gen_ai__provider__name": "openai"}
    usage = "gen_ai.client.token.usage"
    assert got.sum(usage, gen_ai__token__type="input", **chat) == billed["input"] > 0
    assert got.sum(usage, gen_ai__token__type="output", **chat) == billed["output"] > 0
    assert got.count(usage, gen_ai__request__model=MODEL) == 16, "two points per answer"
    assert got.sum("genai_coroutines.items.finished", gen_ai__request__model=MODEL) == 8
    assert got.sum("genai_coroutines.items.failed") == 0
    assert got.sum("genai_coroutines.retries") == 3
    assert got.sum("genai_coroutines.cost.usd") > 0
    duration = "gen_ai.client.operation.duration"
    assert got.count(duration, **chat) == 11
    assert got.count(duration, error__type="server_error") == 3

    spans = otel.spans()
    attempts = by_name(spans, f"chat {MODEL}")
    assert len(attempts) == 11
    statuses = sorted(s.attributes["http.response.status_code"] for s in attempts)  # type: ignore[index]
    assert statuses == [200] * 8 + [500, 500, 503]
    for span in attempts:
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["gen_ai.provider.name"] == "openai"
        if attributes["http.response.status_code"] == 200:
            assert str(attributes["gen_ai.response.id"]).startswith("resp_")
            assert attributes["gen_ai.usage.input_tokens"] > 0  # type: ignore[operator]
            assert "error.type" not in attributes
        else:
            assert attributes["error.type"] == "server_error"
    assert sum(bool((s.attributes or {}).get("http.request.resend_count")) for s in attempts) == 3
    assert len(by_name(spans, "genai_coroutines item")) == 8
    assert_nested(spans, {f"chat {MODEL}"})
    assert_no_key(otel, got, emulator.config.openai_api_key)


async def test_background_mode_counts_tokens_once_however_often_a_response_is_polled(
    emulator: Emulator, otel: Telemetry
) -> None:
    emulator.config.background_queue_seconds = 0.05
    out = await run(
        emulator, [f"prompt {i}" for i in range(6)], background=True, poll_interval_secs=0.01
    )
    assert out["total_success"] == 6

    got = otel.metrics()
    billed = emulator.stats.billed_tokens
    usage = "gen_ai.client.token.usage"
    assert got.sum(usage, gen_ai__token__type="input") == billed["input"] > 0
    assert got.sum(usage, gen_ai__token__type="output") == billed["output"] > 0
    assert got.count(usage) == 12
    in_flight = got.matching("genai_coroutines.background.in_flight", {})
    assert in_flight and sum(p.value for p in in_flight) == 0, "every polled response ended"

    spans = otel.spans()
    polls = by_name(spans, f"poll_response {MODEL}")
    assert len(polls) > 6, "responses still queued were polled again"
    for span in polls:
        attributes = span.attributes or {}
        assert attributes["gen_ai.operation.name"] == "poll_response"
        assert str(attributes["gen_ai.response.id"]).startswith("resp_")
        assert "gen_ai.usage.input_tokens" not in attributes, "a poll adds no tokens"
    posts = by_name(spans, f"chat {MODEL}")
    assert len(posts) == 6 and all("gen_ai.usage.input_tokens" not in s.attributes for s in posts)  # type: ignore[operator]
    assert_nested(spans, {f"chat {MODEL}", f"poll_response {MODEL}"})
    assert_no_key(otel, got, emulator.config.openai_api_key)


async def test_batch_api_counts_the_lines_tokens_and_its_files_and_batches(
    emulator: Emulator, otel: Telemetry
) -> None:
    request = request_for(emulator, [f"prompt {i}" for i in range(20)])
    out = await ResponsesProcessor().process_batch(
        request, batch_api=BatchAPI(poll_interval_secs=0.01)
    )
    assert out["total_success"] == 20

    got = otel.metrics()
    billed = emulator.stats.billed_tokens
    usage = "gen_ai.client.token.usage"
    assert (
        got.sum(usage, gen_ai__token__type="input", gen_ai__request__model=MODEL)
        == (billed["input"])
    )
    assert got.sum(usage, gen_ai__token__type="output") == billed["output"] > 0
    assert got.sum("genai_coroutines.batch_api.files", status="uploaded") == 1
    assert got.sum("genai_coroutines.batch_api.batches", status="completed") == 1

    spans = otel.spans()
    (batch,) = by_name(spans, "genai_coroutines batch")
    wire = [s for s in spans if s.name in ("upload_file", "create_batch", "poll_batch")]
    assert {s.name for s in wire} == {"upload_file", "create_batch", "poll_batch"}
    assert all(s.parent and s.parent.span_id == batch.context.span_id for s in wire)
    batch_id = out["results"][0]["batch_id"]
    for span in by_name(spans, "poll_batch"):
        assert span.attributes["gen_ai.response.id"] == batch_id  # type: ignore[index]
        assert "gen_ai.usage.input_tokens" not in span.attributes  # type: ignore[operator]
    assert_no_key(otel, got, emulator.config.openai_api_key)


async def test_datalab_pages_and_cents_equal_the_emulators_with_a_span_per_upload_and_poll(
    emulator: Emulator, otel: Telemetry
) -> None:
    documents = [samples.pdf(1 + i % 3, tag=str(i)) for i in range(5)]
    config = config_for(emulator)
    endpoint = config.endpoint
    assert endpoint == "marker"
    results = await DocumentProcessor(config).process_multiparts(documents)
    assert all(r["success"] for r in results)

    got = otel.metrics()
    datalab = {"gen_ai__provider__name": "datalab"}
    assert got.sum("genai_coroutines.datalab.pages", **datalab) == (emulator.stats.pages_processed)
    assert emulator.stats.pages_processed == 1 + 2 + 3 + 1 + 2
    cents = sum(r["cost_breakdown"]["final_cost_cents"] for r in results)
    assert got.sum("genai_coroutines.datalab.cost.cents", **datalab) == pytest.approx(cents)
    assert cents > 0
    assert got.sum("genai_coroutines.items.finished", gen_ai__operation__name=endpoint) == 5

    spans = otel.spans()
    uploads, polls = by_name(spans, endpoint), by_name(spans, "poll_job")
    assert len(uploads) == 5 and polls
    request_ids = {r["request_id"] for r in results}
    assert {s.attributes["gen_ai.response.id"] for s in uploads} == request_ids  # type: ignore[index]
    assert all(s.attributes["gen_ai.provider.name"] == "datalab" for s in uploads + polls)  # type: ignore[index]
    assert_nested(spans, {endpoint, "poll_job"})
    assert_no_key(otel, got, emulator.config.datalab_api_key)


async def test_429s_are_counted_by_kind_rate_capacity_and_quota(
    emulator: Emulator, otel: Telemetry
) -> None:
    emulator.faults.schedule("responses", "429", times=2)
    assert (await run(emulator, ["a"]))["total_success"] == 1
    emulator.config.flex_unavailable_rate = 1.0
    await run(emulator, ["b"], service_tier="flex", max_retries=1)
    emulator.config.flex_unavailable_rate = 0.0
    emulator.config.insufficient_quota = True
    await run(emulator, ["c"])

    got = otel.metrics()
    kind = "genai_coroutines.rate_limited"
    assert got.sum(kind, genai_coroutines__rate_limit__kind="rate") == 2
    assert got.sum(kind, genai_coroutines__rate_limit__kind="capacity") == 2
    assert got.sum(kind, genai_coroutines__rate_limit__kind="quota") == 1
    assert got.sum("genai_coroutines.limiter.pause") > 0, "the rate 429s paused the key"
    failed = "genai_coroutines.items.failed"
    assert got.sum(failed, error__type="capacity_unavailable") == 1
    assert got.sum(failed, error__type="insufficient_quota") == 1


# -- without the extra, or without an SDK ------------------------------------------------

NO_SDK_RUN = """
import asyncio, sys
{block}
from genai_coroutines import ResponsesProcessor, ResponsesRequest
from genai_coroutines.engine import telemetry
request = ResponsesRequest(
    api_key=sys.argv[1], base_url=sys.argv[2], model="gpt-4o-mini", system_prompt="",
    user_prompts=["a", "b"], response_format={{"type": "text"}},
)
out = asyncio.run(ResponsesProcessor().process_batch(request))
print(out["total_success"], telemetry.sdk_installed(), sys.modules.get("opentelemetry") is not None)
"""


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "sys.modules['opentelemetry'] = None  # as if the extra were not installed",
            "False False",
        ),
        ("import opentelemetry.trace  # the API alone, no SDK", "False True"),
    ],
)
async def test_the_library_runs_without_opentelemetry_and_without_an_sdk(
    emulator: Emulator, block: str, expected: str
) -> None:
    code = NO_SDK_RUN.format(block=block)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        emulator.config.openai_api_key,
        emulator.openai_base_url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert out.decode().split() == ["2", *expected.split()]


# -- the CLI's /metrics -------------------------------------------------------------------


async def test_cli_serves_prometheus_metrics_while_the_job_runs(
    emulator: Emulator, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, ["one", "two", "three HANG"])
    emulator.faults.schedule("responses", "hang", when_input_contains="HANG")
    process = await start(
        emulator,
        tmp_path,
        "responses",
        str(prompts),
        "--model",
        MODEL,
        "--base-url",
        emulator.openai_base_url,
        "--metrics-port",
        "0",
        "--output",
        str(tmp_path / "out.jsonl"),
    )
    try:
        stderr = tmp_path / "stderr.txt"
        url = await _announced(process, stderr)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        text = await _scrape_until(process, url, "genai_coroutines_items_finished_total")
        assert process.returncode is None, "scraped while the job runs"
        lines = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line and not line[0] == "#"
        )
        finished = [v for k, v in lines.items() if k.startswith("genai_coroutines_items_finished")]
        assert [float(v) for v in finished] == [2.0]
        billed = emulator.stats.billed_tokens
        inputs = [
            float(v)
            for k, v in lines.items()
            if k.startswith("gen_ai_client_token_usage_sum") and 'token_type="input"' in k
        ]
        assert inputs == [billed["input"]]
        assert any(k.startswith("gen_ai_client_operation_duration_seconds_bucket") for k in lines)
        assert emulator.config.openai_api_key not in text
    finally:
        process.terminate()
        await process.wait()


async def test_cli_refuses_a_metrics_port_out_of_range_before_sending_anything(
    emulator: Emulator, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, ["one"])
    env = {**cli_env(emulator), "GENAI_COROUTINES_METRICS_PORT": "70000"}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "genai_coroutines", "responses", str(prompts)],
        *["--model", MODEL, "--base-url", emulator.openai_base_url],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2, err.decode()
    assert "70000" in err.decode()
    assert emulator.stats.total("responses") == 0


async def _announced(process: asyncio.subprocess.Process, stderr: Path) -> str:
    """The URL the CLI prints on stderr once /metrics is served."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while True:
        for line in stderr.read_text().splitlines() if stderr.exists() else ():
            if line.startswith("metrics: "):
                return line.removeprefix("metrics: ")
        assert process.returncode is None, stderr.read_text()
        assert loop.time() < deadline, "the CLI never said where /metrics is"
        await asyncio.sleep(0.02)


async def _scrape_until(process: asyncio.subprocess.Process, url: str, needle: str) -> str:
    """/metrics once it shows `needle` with two items finished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as response:
                assert response.status == 200
                text = await response.text()
            if f"{needle}{{" in text and any(
                line.startswith(needle) and line.endswith(" 2.0") for line in text.splitlines()
            ):
                return text
            assert process.returncode is None, "the CLI ended before two items finished"
            assert loop.time() < deadline, f"/metrics never showed two items:\n{text}"
            await asyncio.sleep(0.02)
