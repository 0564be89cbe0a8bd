"""Rate limits: the batch stays under RPM and TPM, and a 429 pauses every worker.

Whether the limits held is counted on the emulator (its 429s), never timed.

Plain rate limiting never costs an item: with `token_accounting = "provider"` the emulator
charges each request's input plus an output allowance it reserves for a request without
`max_output_tokens` (at admission, never refunded), and tells the client neither the
allowance nor the limits. A 429 naming its wait is the scheduler's business: items wait it
out without spending `max_retries`, the limiter learns the allowance from the first token
429s ("Requested N"), and the storm does not repeat.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from genai_coroutines import KeyLimits, ResponsesProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import MemoryStore, RateLimiter, limit_key
from tests.responses_support import record_attempts, request_for, run, sent_bodies
from tests.server_support import Server


async def test_given_rpm_is_never_exceeded(emulator: Emulator) -> None:
    emulator.config.openai_rpm = 6000
    emulator.config.burst_seconds = 1.0
    results = await run(
        emulator,
        [f"p{i}" for i in range(160)],
        max_concurrent_requests=50,
        requests_per_minute=6000,
    )
    assert results["total_success"] == 160
    assert emulator.stats.rate_limited == 0


async def test_limits_are_learned_from_headers_when_not_given(emulator: Emulator) -> None:
    emulator.config.openai_rpm = 6000
    emulator.config.burst_seconds = 1.0
    results = await run(emulator, [f"p{i}" for i in range(160)], max_concurrent_requests=50)
    assert results["total_success"] == 160
    assert emulator.stats.rate_limited <= 3  # <= 2% of the requests


async def test_token_reservation_counts_max_output_tokens(emulator: Emulator) -> None:
    """Each request is charged about 2,000 tokens (its output allowance) against a bucket of
    20,000: a client that reserved only its input would send all 25 at once."""
    emulator.config.openai_tpm = 1_200_000
    emulator.config.burst_seconds = 1.0
    results = await run(
        emulator,
        [f"p{i}" for i in range(25)],
        max_concurrent_requests=25,
        max_output_tokens=2000,
        tokens_per_minute=1_200_000,
    )
    assert results["total_success"] == 25
    assert emulator.stats.rate_limited == 0


async def test_a_429_pauses_every_worker(emulator: Emulator, monkeypatch: Any) -> None:
    """After a 429 no worker sends anything until the pause is over, not only the one that
    got it. (The fault's 429 carries no rate-limit headers, so only the pause holds them.)"""
    log = record_attempts(monkeypatch)
    emulator.faults.schedule("responses", "429")
    results = await run(
        emulator,
        [f"p{i}" for i in range(12)],
        max_concurrent_requests=3,
        requests_per_minute=1_000_000,
        retry_delay_min_ms=300,
        retry_delay_max_ms=300,
    )
    assert results["total_success"] == 12
    limited = next(a for a in log if a.status == 429)
    later = [a for a in log if a.started > limited.ended]
    assert len(later) >= 9
    assert min(a.started for a in later) >= limited.ended + 0.3


async def test_a_replys_remaining_already_counts_the_requests_sent_before_it(
    emulator: Emulator, monkeypatch: Any
) -> None:
    """One request at a time, each answered within milliseconds (as a 429 is, right after
    the burst that emptied the bucket): the last reply's `remaining` counts it and every
    request before it, so none of them may be taken off it again as still in transit.
    That would put the bucket below the server's, and idle the key until it refilled."""
    emulator.config.openai_rpm = 600
    emulator.config.burst_seconds = 1.0
    log = record_attempts(monkeypatch)
    store = MemoryStore()
    request = request_for(
        emulator, ["p0", "p1", "p2"], max_concurrent_requests=1, requests_per_minute=600
    )
    results = await ResponsesProcessor(limits=KeyLimits(store)).process_batch(request)
    assert results["total_success"] == 3
    level = store.snapshot(limit_key(request.base_url, request.api_key or "", request.model))
    remaining = int(log[-1].headers["x-ratelimit-remaining-requests"])
    assert remaining < 10  # the reply lowered the bucket
    assert level["requests"] > remaining - 0.5


async def test_a_given_limit_is_a_ceiling_the_server_cannot_raise() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, "key", 600, None, learn=True)
    await limiter.acquire()
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
        }
    )
    assert (await store.limits("key"))["requests"] == 600
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "300",
            "x-ratelimit-remaining-requests": "299",
            "x-ratelimit-reset-requests": "200ms",
        }
    )
    assert (await store.limits("key"))["requests"] == 300  # but it may lower it


async def test_a_pause_survives_a_lower_reported_limit_as_time_not_units() -> None:
    """A 0.3 s pause taken at a given 1,000,000 RPM, then the server reporting 10,000 RPM,
    must still be about 0.3 s, not the 30 s the same deficit in requests would take."""
    store = MemoryStore()
    limiter = RateLimiter(store, "key", 1_000_000, None)
    await limiter.acquire()
    await limiter.pause(0.3)
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
        }
    )
    assert (await store.limits("key"))["requests"] == 10000
    wait = (await store.take("key", (("requests", 1),))).wait
    assert 0.2 < wait < 0.35


BIG = "word " * 16_000
"""A prompt estimated at about 20,000 tokens (four characters a token)."""


async def test_a_request_above_the_tpm_limit_is_not_sent_and_holds_no_one_back(
    emulator: Emulator,
) -> None:
    """It can never pass. Sent, it would take a full bucket (100 tokens at 6,000 TPM) and
    borrow the rest, and the prompts behind it would wait some 200 s to repay that."""
    emulator.config.openai_tpm = 6000
    store = MemoryStore()
    request = request_for(
        emulator,
        [BIG, "p1", "p2", "p3"],
        max_concurrent_requests=2,
        tokens_per_minute=6000,
    )
    processor = ResponsesProcessor(limits=KeyLimits(store))
    results = await asyncio.wait_for(processor.process_batch(request), 5)
    big, *small = results["results"]
    assert big["error_type"] == "request_too_large" and big["attempts"] == 0
    assert big["is_retriable"] is False and "6,000 tokens per minute" in big["error"]
    assert results["total_success"] == 3 and all(r["attempts"] == 1 for r in small)
    assert [body["input"] for body in sent_bodies(emulator)] == ["p1", "p2", "p3"]
    key = limit_key(request.base_url, request.api_key or "", request.model)
    assert store.snapshot(key)["tokens"] > 0  # nothing borrowed


async def test_a_request_too_large_for_the_server_gives_its_borrow_back_at_once(
    emulator: Emulator,
) -> None:
    """The client believes in 60,000 TPM (a bucket of 1,000 tokens, refilled at 1,000 a
    second), the server enforces 6,000: the big prompt borrows 19,000 tokens, the prompt
    behind it goes to sleep for 19 s, and the server refuses the big one "Request too
    large". Its reservation comes back, and the sleeper must not sleep on."""
    emulator.config.openai_tpm = 6000
    request = request_for(
        emulator, [BIG, "p1", "p2"], max_concurrent_requests=2, tokens_per_minute=60_000
    )
    processor = ResponsesProcessor(limits=KeyLimits(MemoryStore()))
    results = await asyncio.wait_for(processor.process_batch(request), 5)
    big, *small = results["results"]
    assert big["error_type"] == "request_too_large" and big["status"] == 429
    assert big["attempts"] == 1 and big["is_retriable"] is False
    assert results["total_success"] == 2 and emulator.stats.total("responses") == 3


@pytest.mark.parametrize("concurrency", [20, 100])
async def test_an_unknown_output_allowance_costs_no_item(
    emulator: Emulator, concurrency: int
) -> None:
    emulator.config.token_accounting = "provider"
    emulator.config.default_output_tokens = 1000
    emulator.config.openai_tpm = 1_500_000  # 25,000 a second: about 25 requests
    emulator.config.burst_seconds = 1.0
    prompts = [f"prompt {i} " + "word " * 40 for i in range(120)]
    results = await run(emulator, prompts, max_concurrent_requests=concurrency, max_retries=1)

    assert results["total_success"] == 120
    sent = emulator.stats.total("responses")
    print(f"c={concurrency}: {sent} sent, {emulator.stats.rate_limited} answered 429")
    assert emulator.stats.rate_limited <= concurrency  # the first wave at most, not every refill


async def test_a_server_announcing_infinite_limits_is_survived(
    servers: tuple[Server, Server], emulator: Emulator
) -> None:
    api, _ = servers

    async def infinite(request: web.Request) -> web.Response:
        reply = await emulator.openai.create_response(request)
        headers = {**reply.headers, "x-ratelimit-limit-requests": "inf"}
        assert isinstance(reply, web.Response)
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    await api.start([("POST", "/v1/responses", infinite)])
    results = await run(emulator, ["a", "b", "c"], base_url=f"{api.url}/v1")
    assert results["total_success"] == 3
