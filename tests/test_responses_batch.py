"""Batches as a whole: order, streaming out results, SSE, bounded concurrency, large batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from genai_coroutines import ResponsesProcessor, parse_responses
from genai_coroutines.emulator import Emulator
from tests.responses_support import request_for, run

SEED_SUCCESS_KEYS = {"success", "raw_response", "usage"}
SEED_ERROR_KEYS = {"success", "error", "error_type", "param", "code", "is_retriable", "attempts"}
OUR_KEYS = {"index", "status", "latency_ms", "attempts", "rate_limited", "model"}
OUR_SUCCESS_KEYS = OUR_KEYS | {"service_tier"}


async def test_results_keep_input_order_under_random_latency(emulator: Emulator) -> None:
    emulator.config.latency = 0.01  # lognormal around 10 ms: completions interleave
    prompts = [f"prompt number {i}" for i in range(300)]
    request = request_for(emulator, prompts, max_concurrent_requests=50)
    finished = [result["index"] async for result in ResponsesProcessor().stream(request)]
    assert finished != sorted(finished)  # they really did finish out of order

    results = await ResponsesProcessor().process_batch(request)
    assert [r["index"] for r in results["results"]] == list(range(300))
    for prompt, text in zip(prompts, parse_responses(results), strict=True):
        assert text == f'Emulated answer to "{prompt}".'


async def test_result_shape_is_the_seeds_plus_ours(emulator: Emulator) -> None:
    emulator.faults.schedule("responses", "400")
    results = await run(emulator, ["bad", "good"], max_concurrent_requests=1)
    assert set(results) == {"total_success", "total_errors", "results"}
    assert (results["total_success"], results["total_errors"]) == (1, 1)
    failed, ok = results["results"]
    assert set(ok) == SEED_SUCCESS_KEYS | OUR_SUCCESS_KEYS
    assert set(failed) == SEED_ERROR_KEYS | OUR_KEYS
    assert isinstance(ok["raw_response"], str) and isinstance(ok["usage"], dict)
    assert ok["usage"]["total_tokens"] == orjson.loads(ok["raw_response"])["usage"]["total_tokens"]
    assert ok["latency_ms"] >= 0 and failed["status"] == 400


async def test_stream_yields_each_result_as_soon_as_it_finishes(emulator: Emulator) -> None:
    """Prompt 0 is answered seconds late, so a stream that kept input order would yield it
    first. (The limits are given: a learning limiter would send prompt 0 alone first, to
    read the limits off its answer.)"""
    emulator.config.slow_seconds = 5
    emulator.faults.schedule("responses", "slow", when_input_contains="held")
    request = request_for(
        emulator, ["held", "quick"], max_concurrent_requests=2, requests_per_minute=6000
    )
    stream = ResponsesProcessor().stream(request)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert first["index"] == 1 and first["success"]
    assert emulator.stats.faults["responses slow"] == 1


async def test_sse_streaming_gives_the_same_results_as_plain(emulator: Emulator) -> None:
    schema = {
        "type": "object",
        "properties": {"essay": {"type": "string", "minLength": 100_000}},  # a >64 KiB event
        "required": ["essay"],
        "additionalProperties": False,
    }
    formats: list[dict[str, Any]] = [
        {"type": "text"},
        {"type": "json_schema", "json_schema": {"name": "essay", "schema": schema, "strict": True}},
    ]
    for response_format in formats:
        prompts = ["Write about rivers.", "Write about hills."]
        plain = await run(emulator, prompts, response_format=response_format)
        streamed = await run(emulator, prompts, response_format=response_format, stream=True)
        assert parse_responses(streamed) == parse_responses(plain)
        assert streamed["total_success"] == 2
        for a, b in zip(plain["results"], streamed["results"], strict=True):
            assert set(a) == set(b) and a["usage"] == b["usage"]
            assert orjson.loads(b["raw_response"])["status"] == "completed"
    assert sum(1 for seen in emulator.stats.received if seen["body"].get("stream") is True) == 4
    assert len(parse_responses(streamed)[0]) > 100_000


async def test_concurrency_is_an_upper_bound_and_is_used(emulator: Emulator) -> None:
    emulator.config.latency = 0.02
    await run(emulator, [f"p{i}" for i in range(60)], max_concurrent_requests=7)
    assert emulator.stats.peak_in_flight == 7


async def test_one_pool_per_batch_reuses_connections(emulator: Emulator) -> None:
    results = await run(emulator, [f"p{i}" for i in range(100)], max_concurrent_requests=5)
    assert results["total_success"] == 100
    peers = [seen["peer"] for seen in emulator.stats.received]
    assert len(peers) == 100 and None not in peers
    assert len(set(peers)) <= 5  # 100 requests over at most 5 kept-alive connections


async def test_prompts_are_pulled_lazily(emulator: Emulator) -> None:
    pulled = 0

    def prompts() -> Iterator[str]:
        nonlocal pulled
        for i in range(500):
            pulled += 1
            yield f"p{i}"

    request = request_for(emulator, prompts(), max_concurrent_requests=4)
    stream = ResponsesProcessor().stream(request)
    await anext(stream)
    assert pulled <= 5  # the four in flight, and the one that just replaced the first
    rest = [result async for result in stream]
    assert len(rest) == 499 and pulled == 500


async def test_async_iterable_prompts(emulator: Emulator) -> None:
    async def prompts() -> AsyncIterator[str]:
        for i in range(20):
            yield f"async prompt {i}"

    results = await ResponsesProcessor().process_batch(request_for(emulator, prompts()))
    assert results["total_success"] == 20
    assert parse_responses(results)[19] == 'Emulated answer to "async prompt 19".'


async def test_leaving_a_stream_early_cancels_the_rest(emulator: Emulator) -> None:
    emulator.config.latency = 0.05
    request = request_for(emulator, [f"p{i}" for i in range(50)], max_concurrent_requests=10)
    stream = ResponsesProcessor().stream(request)
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert emulator.stats.total("responses") < 50


async def test_thousand_prompts_with_ten_percent_faults_all_accounted_for(
    emulator: Emulator,
) -> None:
    emulator.config.fault_rates = {
        "responses": {"500": 0.02, "502": 0.02, "503": 0.02, "reset": 0.02, "malformed": 0.02}
    }
    prompts = [f"item {i}" for i in range(1000)]
    results = await run(emulator, prompts, max_concurrent_requests=50, max_retries=6)
    assert results["total_success"] == 1000 and results["total_errors"] == 0
    assert [r["index"] for r in results["results"]] == list(range(1000))
    assert sum(emulator.stats.faults.values()) >= 50  # the faults did happen...
    sent = emulator.stats.total("responses") + emulator.stats.faults["responses reset"]
    assert sum(r["attempts"] for r in results["results"]) == sent
    snapshot = emulator.stats.snapshot()
    assert snapshot["duplicate_completions"] == 0  # ...and no answer was paid for twice
    assert len(snapshot["completed_by_digest"]) == 1000
    texts = parse_responses(results)
    assert all(text == f'Emulated answer to "{p}".' for p, text in zip(prompts, texts, strict=True))


async def test_sse_framing_crlf_comments_split_chunks_and_multiline_data(
    emulator: Emulator,
) -> None:
    emulator.faults.schedule("responses", "stream-reframed")
    results = await run(emulator, ["hi"], stream=True)
    assert parse_responses(results) == ['Emulated answer to "hi".']
    assert results["results"][0]["attempts"] == 1
    assert emulator.stats.faults["responses stream-reframed"] == 1
