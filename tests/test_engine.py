"""The engine's pieces on their own: header parsing, retry policy, runner, limiter, journal."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import BatchSummary, Price
from genai_coroutines.engine import (
    Capacity,
    Failure,
    MemoryStore,
    RateLimiter,
    Retried,
    RetryPolicy,
    Success,
    collect_in_order,
    parse_duration,
    retry_after,
    retrying,
    run_streaming,
)
from genai_coroutines.engine.budget import Budget
from genai_coroutines.engine.headers import count
from genai_coroutines.engine.indexed import BLOCK, IndexedDigests, IndexedFloats, Starts
from genai_coroutines.engine.journal import Journal, JournalMismatch, request_digest
from genai_coroutines.engine.outcome import Ids, Outcome
from genai_coroutines.engine.pricing import Charges
from genai_coroutines.engine.stages import StageKey
from genai_coroutines.engine.summary import Summary
from genai_coroutines.responses.prices import price_for
from tests.samples import ended


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1h2m3.5s", 3723.5), ("2.5", 2.5)],
)
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_rejects_junk() -> None:
    assert parse_duration("soon") is None
    assert parse_duration(None) is None


def test_retry_after_prefers_milliseconds_then_seconds_then_date() -> None:
    assert retry_after({"retry-after-ms": "450", "retry-after": "9"}) == pytest.approx(0.45)
    assert retry_after({"retry-after": "2.5"}) == pytest.approx(2.5)
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after({"retry-after": future}) or 0) <= 31
    assert retry_after({}) is None


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "9" * 400])
def test_rate_limit_headers_that_are_not_numbers_are_ignored(value: str) -> None:
    assert count(value) is None
    assert retry_after({"retry-after": value}) in (None, 0.0)
    assert parse_duration(value) in (None, 0.0)


def test_a_header_count_is_a_whole_number_below_2_to_the_53() -> None:
    assert (count("42"), count("1000.0"), count(str(2**53 - 1))) == (42, 1000, 2**53 - 1)
    assert count(str(2**53)) is count("-1") is count("1_0x") is None


def _failure(**overrides: object) -> Failure:
    fields: dict[str, object] = {"message": "boom", "error_type": "server_error", "retriable": True}
    fields.update(overrides)
    return Failure(**fields)  # type: ignore[arg-type]


def test_policy_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(max_retries=10, initial_delay=1.0, max_delay=8.0, jitter=0.25)
    for retry, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (7, 8.0)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert min(delays) >= base * 0.75
        assert max(delays) <= base * 1.25
        assert max(delays) - min(delays) > 0


def test_policy_never_waits_less_than_the_server_asks() -> None:
    policy = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.002)
    assert policy.delay_for(1, _failure(status=503, retry_after=1.5)) == pytest.approx(1.5)
    assert policy.delay_for(1, _failure(status=429, retry_after=0.3)) == pytest.approx(0.3)


def test_policy_gives_up_on_fatal_errors_spent_retries_and_long_server_waits() -> None:
    policy = RetryPolicy(max_retries=2, max_server_wait=120.0)
    assert policy.delay_for(1, _failure(retriable=False)) is None
    assert policy.delay_for(3, _failure()) is None
    assert policy.delay_for(1, _failure(status=429, retry_after=1800.0)) is None


def test_more_than_a_thousand_retries_do_not_overflow_the_backoff() -> None:
    policy = RetryPolicy(max_retries=5000, initial_delay=0.5, max_delay=30.0)
    failure = Failure("boom", "server_error", retriable=True, status=503)
    assert policy.backoff(1500) <= 30.0 and policy.delay_for(2000, failure) is not None


async def test_retrying_counts_attempts_and_stops_at_max_retries() -> None:
    calls = 0

    async def always_fails() -> Success[int] | Failure:
        nonlocal calls
        calls += 1
        return _failure()

    counts = Retried()
    policy = RetryPolicy(max_retries=2, initial_delay=0.0)
    outcome = await retrying(always_fails, policy, counts=counts)
    assert isinstance(outcome, Failure)
    assert counts.attempts == calls == 3
    assert counts.retries == 2


async def test_retrying_returns_success_after_transient_failures() -> None:
    replies: list[Success[str] | Failure] = [_failure(), _failure(), Success("ok")]
    seen: list[int] = []

    async def attempt() -> Success[str] | Failure:
        return replies.pop(0)

    counts = Retried()
    outcome = await retrying(
        attempt,
        RetryPolicy(initial_delay=0.0),
        on_retry=lambda details: seen.append(details.retry_number),
        counts=counts,
    )
    assert outcome == Success("ok")
    assert counts.attempts == 3
    assert seen == [1, 2]


async def test_a_rate_limit_wait_spends_no_retry_but_is_bounded_in_time() -> None:
    """A 429 about the quota is the scheduler's business: with max_retries=0 an item still
    waits out three of them and succeeds; one whose waits would pass the time bound ends."""
    limited = _failure(status=429, retry_after=0.01, error_type="rate_limit_error")
    replies: list[Success[str] | Failure] = [limited, limited, limited, Success("ok")]

    async def attempt() -> Success[str] | Failure:
        return replies.pop(0)

    counts = Retried()
    outcome = await retrying(attempt, RetryPolicy(max_retries=0), counts=counts)
    assert outcome == Success("ok")
    assert (counts.attempts, counts.retries, counts.rate_limited) == (4, 0, 3)

    async def always_limited() -> Success[str] | Failure:
        return limited

    bounded = RetryPolicy(max_retries=0, max_rate_limit_wait=0.05)
    counts = Retried()
    assert await retrying(always_limited, bounded, counts=counts) == limited
    assert counts.rate_limited == 6  # five waits of 0.01 s fit in 0.05 s; the sixth ends it


async def test_a_429_beyond_the_wait_ceiling_ends_the_item_and_pauses_nobody() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, "key", requests_per_minute=600_000)
    limited = _failure(status=429, retry_after=1800.0, error_type="rate_limit_error")

    async def attempt() -> Success[str] | Failure:
        return limited

    outcome = await retrying(attempt, RetryPolicy(max_server_wait=120.0), limiter=limiter)
    assert outcome == limited
    await asyncio.wait_for(limiter.acquire(), 0.5)  # not paused for 30 minutes


async def test_runner_bounds_concurrency_and_reads_input_lazily() -> None:
    pulled = 0
    running = peak = 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for i in range(50):
            pulled += 1
            yield i

    async def work(index: int, item: int) -> tuple[int, int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert pulled <= index + 1 + 4, "the runner read ahead of its free slots"
        await asyncio.sleep(0.001 * (item % 3))
        running -= 1
        return index, item * 2

    results = await collect_in_order(run_streaming(source(), work, concurrency=4), lambda r: r[0])
    assert results == [(i, i * 2) for i in range(50)]
    assert peak == 4


async def test_runner_accepts_async_iterables() -> None:
    async def source() -> AsyncIterator[str]:
        for word in ["a", "b", "c"]:
            yield word

    async def work(index: int, item: str) -> str:
        return f"{index}{item}"

    assert sorted([r async for r in run_streaming(source(), work, concurrency=2)]) == [
        "0a",
        "1b",
        "2c",
    ]


async def test_runner_cancels_in_flight_work_when_the_consumer_stops() -> None:
    cancelled = 0
    started = asyncio.Event()

    async def work(index: int, item: int) -> int:
        nonlocal cancelled
        if index == 0:
            return index
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return index

    stream = run_streaming(range(10), work, concurrency=3)
    first = await stream.__anext__()
    await started.wait()
    await stream.aclose()
    assert first == 0
    assert cancelled == 3  # items 1 and 2, and 3, which the worker freed by item 0 took


async def test_runner_holds_back_while_finished_results_wait_for_the_consumer() -> None:
    """A consumer that stops reading stops the batch: once `concurrency` finished results
    wait for it, no worker takes another input."""
    taken = 0

    def source() -> Iterator[int]:
        nonlocal taken
        for item in range(1000):
            taken += 1
            yield item

    async def work(index: int, item: int) -> int:
        await asyncio.sleep(0)
        return item

    stream = run_streaming(source(), work, concurrency=4)
    assert await stream.__anext__() == 0
    for _ in range(20):  # every worker gets as many turns as it would take
        await asyncio.sleep(0)
    assert taken <= 4 + 4 + 1  # those waiting, those running when the room filled, one taken
    assert sorted([r async for r in stream]) == list(range(1, 1000))


async def test_limiter_admits_a_burst_then_paces_at_the_rate() -> None:
    limiter = RateLimiter(MemoryStore(), "key", requests_per_minute=60_000, burst_seconds=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(10):
        await limiter.acquire()
    burst = loop.time() - start
    for _ in range(20):
        await limiter.acquire()
    assert burst < 0.05
    assert loop.time() - start >= 20 / 1000 * 0.9


async def test_limiter_lets_an_oversized_token_request_borrow_instead_of_hanging() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, "key", tokens_per_minute=600_000, burst_seconds=0.01)
    await asyncio.wait_for(limiter.acquire(tokens=50_000), timeout=1.0)
    assert store.snapshot("key")["tokens"] < 0


async def test_limiter_pause_holds_everyone_without_stacking() -> None:
    limiter = RateLimiter(MemoryStore(), "key", requests_per_minute=600_000, burst_seconds=1.0)
    await limiter.acquire()
    for _ in range(5):
        await limiter.pause(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await limiter.acquire()
    waited = loop.time() - start
    assert 0.045 <= waited < 0.2


async def test_limiter_learns_limits_from_headers_and_sends_one_probe_first() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, "key", learn=True)
    await limiter.acquire()
    second = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert not second.done(), "a second request went out before the limits were known"
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "9",
            "x-ratelimit-reset-requests": "100ms",
            "x-ratelimit-limit-tokens": "60000",
            "x-ratelimit-remaining-tokens": "59000",
            "x-ratelimit-reset-tokens": "1s",
        }
    )
    await asyncio.wait_for(second, 1.0)
    assert await store.limits("key") == {"requests": 600.0, "tokens": 60000.0}
    again = RateLimiter(store, "key", learn=True)  # another process on the key: no new probe
    await asyncio.wait_for(asyncio.gather(again.acquire(), again.acquire()), 1.0)


async def test_after_the_probe_a_newcomer_does_not_queue_behind_the_callers_it_held() -> None:
    """The callers the probe held leave the lock one per turn of the event loop; a
    newcomer queueing behind them would keep that queue alive for the whole batch, every
    request paying a lock and a suspension."""
    limiter = RateLimiter(MemoryStore(), "key", learn=True)
    await limiter.acquire()  # the probe
    held = [asyncio.ensure_future(limiter.acquire()) for _ in range(20)]
    await asyncio.sleep(0)  # one turn: one waits for the probe, holding the lock; 19 for it
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "60000",
            "x-ratelimit-remaining-requests": "59999",
            "x-ratelimit-limit-tokens": "6000000",
            "x-ratelimit-remaining-tokens": "5999999",
        }
    )
    await asyncio.sleep(0)  # one turn: the caller the probe held is answered, 19 wait
    newcomer = limiter.acquire()
    with pytest.raises(StopIteration):  # answered without suspending
        newcomer.send(None)
    await asyncio.wait_for(asyncio.gather(*held), 1.0)


async def test_a_replys_remaining_does_not_forget_the_requests_still_on_their_way() -> None:
    """The server counted `remaining` before the requests just sent reached it: lowering
    the bucket to the bare figure would spend their tokens a second time (a 429 under
    OpenAI's accounting, which keeps the output allowance the client gives back)."""
    store = MemoryStore(clock=lambda: 0.0)  # no refill while the test runs
    limiter = RateLimiter(store, "key", requests_per_minute=60_000, tokens_per_minute=600_000)
    await limiter.acquire(1_000)
    await limiter.acquire(500)
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "60000",
            "x-ratelimit-remaining-requests": "1000",
            "x-ratelimit-limit-tokens": "600000",
            "x-ratelimit-remaining-tokens": "8000",
        }
    )
    assert store.snapshot("key") == {"requests": 998.0, "tokens": 6_500.0}


async def test_a_replys_remaining_counts_the_requests_sent_before_its_own() -> None:
    """Only the requests reserved after the one a reply answers are still on their way:
    the ones before it reached the server first and are in its `remaining`."""
    store = MemoryStore(clock=lambda: 0.0)  # no refill while the test runs
    limiter = RateLimiter(store, "key", requests_per_minute=60_000, tokens_per_minute=600_000)
    tickets = [await limiter.acquire(tokens) for tokens in (1_000, 500, 200, 40)]
    assert tickets[1] is not None
    await limiter.observe(
        {
            "x-ratelimit-limit-requests": "60000",
            "x-ratelimit-remaining-requests": "1000",
            "x-ratelimit-limit-tokens": "600000",
            "x-ratelimit-remaining-tokens": "8000",
        },
        number=tickets[1],  # the second request's reply: the third and fourth are in transit
    )
    assert store.snapshot("key") == {"requests": 996.0, "tokens": 7_760.0}


async def test_limiter_without_headers_stops_learning_and_runs_free() -> None:
    store = MemoryStore()
    limiter = RateLimiter(store, "key", learn=True)
    await limiter.acquire()
    await limiter.observe(None)
    await asyncio.wait_for(limiter.acquire(), 1.0)
    await limiter.observe({"content-type": "application/json"})
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(100))), 1.0)
    assert await store.limits("key") == {}


async def test_capacity_admits_oversized_requests_alone() -> None:
    pages = Capacity(MemoryStore(), "key", 10)
    six = await pages.acquire(6)
    big = asyncio.ensure_future(pages.acquire(50))
    await asyncio.sleep(0)
    assert not big.done()
    await pages.release(six)
    held = await asyncio.wait_for(big, 1.0)
    assert await pages.store.lease("key", 1, 10, 60.0) is None  # the big one holds it all
    await pages.release(held)
    assert await pages.store.lease("key", 10, 10, 60.0) is not None


async def test_capacity_reclaims_the_lease_of_a_holder_that_never_released() -> None:
    store = MemoryStore()
    pages = Capacity(store, "key", 10, lease_secs=0.05, recheck_secs=0.01)
    await pages.acquire(10)  # and never released, as by a process that died
    await asyncio.wait_for(pages.acquire(10), 1.0)


def test_journal_returns_results_only_for_the_same_request(tmp_path: Path) -> None:
    path = tmp_path / "batch.journal"
    journal = Journal(path, "responses")
    digest = request_digest(b'{"input": "hello"}')
    journal.record_result(3, digest, {"index": 3, "success": True})
    journal.close()

    reopened = Journal(path, "responses")
    assert reopened.finished(3, digest) == {"index": 3, "success": True}
    assert reopened.finished(3, request_digest(b'{"input": "changed"}')) is None
    assert reopened.finished(4, digest) is None
    with pytest.raises(JournalMismatch):
        Journal(path, "documents")


def test_journal_keeps_submitted_jobs_until_they_finish(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "ocr.journal", "documents")
    journal.record_submission(StageKey(0), "d0", "req-1", "http://127.0.0.1/api/v1/marker/req-1")
    assert journal.submitted(StageKey(0), "d0") == ("req-1", "http://127.0.0.1/api/v1/marker/req-1")
    assert journal.submitted(StageKey(0), "other") is None
    journal.record_result(0, "d0", {"index": 0, "success": True})
    assert journal.submitted(StageKey(0), "d0") is None
    assert journal.results() == [{"index": 0, "success": True}]


def test_summary_prices_cached_and_reasoning_tokens_and_sums_datalab_cents() -> None:
    summary = BatchSummary(model="gpt-4o-mini")
    usage = {
        "input_tokens": 1_000_000,
        "input_tokens_details": {"cached_tokens": 400_000},
        "output_tokens": 100_000,
        "output_tokens_details": {"reasoning_tokens": 30_000},
    }
    summary.add(ended(usage, attempts=3, model="gpt-4o-2024-08-06"))
    summary.add(ended(attempts=1, rate_limited=2, success=False))
    summary.add(ended(pages=4, cents=6))
    # gpt-4o (dated snapshot -> family): 600k new input, 400k cached, 100k output
    assert summary.cost_usd == pytest.approx(0.6 * 2.50 + 0.4 * 1.25 + 0.1 * 10.00)
    figures = summary.finish().as_dict()
    assert figures["succeeded"] == 2 and figures["failed"] == 1
    assert figures["retries"] == 2 and figures["rate_limited"] == 2
    assert figures["reasoning_tokens"] == 30_000 and figures["cached_tokens"] == 400_000
    assert figures["pages"] == 4 and figures["cost_cents"] == 6


def test_summary_keeps_the_providers_figures_beside_its_sums(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An answer's own usage (cached and reasoning tokens too) and a job's cents are the
    provider's figures; a Batch API line counts by its batch's `usage` instead."""
    logger = logging.getLogger("genai_coroutines.test_summary")
    caplog.set_level(logging.WARNING, logger=logger.name)
    summary = BatchSummary(model="gpt-4o-mini")
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 400},
        "output_tokens": 100,
        "output_tokens_details": {"reasoning_tokens": 30},
    }
    summary.add(ended(usage))
    summary.add(ended(pages=2, cents=1.2))
    line = ended({"input_tokens": 50, "output_tokens": 5}, tier="batch")
    summary.add(replace(line, outcome=replace(line.outcome, ids=Ids(group="batch_1", line="0"))))
    summary.report_group((50, 0, 5, 0))  # the batch object's usage, as its lines summed
    reported = summary.as_dict()["provider_reported"]
    assert reported == {
        "input_tokens": 1050,
        "cached_tokens": 400,
        "output_tokens": 105,
        "reasoning_tokens": 30,
        "cost_cents": 1.2,
    }
    summary.check_reported(logger)
    assert not caplog.records and summary.differences() == {}

    summary.report_group((70, 0, 9, 0))  # a batch billed lines no result shows
    summary.check_reported(logger)
    summary.check_reported(logger)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("provider_totals_differ")
    assert "input_tokens=ours=1050,provider=1120" in warning
    assert "output_tokens=ours=105,provider=114" in warning and "cached" not in warning
    summary.report_group(None)  # a batch that reports no usage: nothing to check against
    assert summary.as_dict()["provider_reported"] is None and summary.differences() == {}


def test_summary_price_table_can_be_overridden_and_unknown_models_are_named() -> None:
    summary = BatchSummary(model="my-finetune", prices={"my-finetune": Price(1.0, 0.5, 2.0)})
    summary.add(ended({"input_tokens": 1_000_000, "output_tokens": 0}))
    summary.add(ended({"input_tokens": 10}, model="mystery-model"))
    assert summary.cost_usd == pytest.approx(1.0)
    figures = summary.as_dict()
    assert figures["unpriced_models"] == ["mystery-model"]
    assert figures["cost_usd"] is None, "never a guessed figure"
    assert figures["estimated_cost_usd"] == pytest.approx(1.0), "the priced part"
    assert "cost: unknown (no price for mystery-model)" in summary.describe()


def test_only_a_dated_snapshot_is_priced_as_its_family() -> None:
    table = {"gpt-4o": Price(2.5, 1.25, 10.0)}
    assert price_for("gpt-4o-2024-08-06", table) == table["gpt-4o"]
    assert price_for("gpt-4o-mini", table) is None, "another model, never a guess"
    assert price_for("gpt-4o-mini-2024-07-18", table) is None


@dataclass(eq=False)
class PerMinutePrices:
    """A provider added in its own room: it bills seconds of audio (`audio_seconds`) at
    $0.006 a minute, reported in cents, and its model's tokens at $1 a million."""

    def read(self, outcome: Outcome[Any], charges: Charges) -> None:
        heard = getattr(outcome, "value", None)
        if isinstance(heard, Mapping) and heard.get("audio_seconds"):
            charges.cost_cents += 0.6 * heard["audio_seconds"] / 60
            billed = charges.billed.setdefault((self, "whisper-x", 1.0), [0, 0, 0, 0])
            billed[0] += heard["tokens"]

    def usd(self, model: str, share: float, inputs: int, cached: int, outputs: int) -> float:
        return share * (inputs + outputs) / 1_000_000

    def cost(self, outcome: Outcome[Any]) -> float | None:
        heard = getattr(outcome, "value", None)
        seconds = heard.get("audio_seconds") if isinstance(heard, Mapping) else None
        return None if seconds is None else 0.6 * seconds / 60


async def test_a_price_model_of_its_own_prices_the_summary_and_settles_the_budget() -> None:
    """The summary and the budget call only the price model they are given: a provider's
    figures come from its own model, and the built-in ones price nothing of its results."""
    result = ended(value={"audio_seconds": 120, "tokens": 500_000})
    summary = Summary(pricing=(PerMinutePrices(),))
    summary.add(result)
    summary.add(ended({"input_tokens": 10**6}, model="gpt-4o"))
    assert summary.cost_usd == pytest.approx(0.5) and summary.cost_cents == pytest.approx(1.2)
    figures = summary.finish().as_dict()
    assert figures["input_tokens"] == 500_000 and figures["estimated_cost_usd"] == 0.5
    assert "estimated cost: $0.5000" in summary.describe()
    built_in = BatchSummary()
    built_in.add(result)
    assert (built_in.cost_usd, built_in.cost_cents, built_in.input_tokens) == (0, 0, 0)

    budget: Budget[float] = Budget(2.0, lambda cents: cents, PerMinutePrices())
    held = await budget.reserve(1.0)
    assert isinstance(held, float)
    budget.settle(held, result.outcome)
    assert budget.spent == pytest.approx(1.2)
    assert not isinstance(await budget.reserve(1), float), "1.2 + 1 is over 2 cents"


def test_indexed_floats_keep_each_index_its_own_number_as_items_come_and_go() -> None:
    """The driver's start times and budget holds of waiting items (`engine.indexed`): indices
    set mostly in order, below the front, past the end; popped mostly oldest first."""
    kept, expected = IndexedFloats(), {}
    draw = random.Random(3)
    for step in range(20_000):
        if draw.random() < 0.55 or not expected:
            index = max(0, step // 2 + draw.randrange(-50, 400))
            kept[index] = expected[index] = float(step)
        else:
            oldest = sorted(expected)[:20]
            index = draw.choice(oldest) if draw.random() < 0.9 else draw.randrange(12_000)
            assert kept.pop(index) == expected.pop(index, None)
        assert len(kept) == len(expected)
    assert sorted(kept) == sorted(expected)
    assert all(kept.get(index) == value for index, value in expected.items())
    for index in list(expected):
        assert kept.pop(index) == expected.pop(index)
    assert len(kept) == 0 and list(kept) == [] and kept.get(0) is None


def test_starts_report_each_waiting_item_its_blocks_earliest_start() -> None:
    """The driver's waiting lines (`engine.indexed.Starts`): indices kept mostly in order,
    below the front, past the end, popped mostly oldest first; each reports the earliest
    start of its block of `BLOCK` indices (never later than its own), and a million waiting
    items cost a quarter of a byte each."""
    kept, expected = Starts(), {}
    starts: dict[int, set[float]] = {}
    """The starts of the items kept in each block."""
    draw, used = random.Random(5), set()
    for step in range(20_000):
        if draw.random() < 0.55 or not expected:
            index = max(0, step // 2 + draw.randrange(-50, 400))
            if index in used:  # each index waits once in a run
                continue
            used.add(index)
            kept.add(index, float(step))
            expected[index] = float(step)
            starts.setdefault(index // BLOCK, set()).add(float(step))
        else:
            oldest = sorted(expected)[:20]
            index = draw.choice(oldest) if draw.random() < 0.9 else draw.randrange(12_000)
            started = kept.pop(index)
            if index in expected:
                assert started in starts[index // BLOCK] and started <= expected.pop(index)
            else:
                assert started is None
        assert len(kept) == len(expected)
    assert sorted(kept) == sorted(expected) and all(index in kept for index in expected)
    with pytest.raises(ValueError, match="already"):
        kept.add(next(iter(expected)), 0.0)
    for index in sorted(expected, reverse=True):
        started = kept.pop(index)
        assert started in starts[index // BLOCK] and started <= expected.pop(index)
    assert len(kept) == 0 and list(kept) == [] and kept.pop(0) is None
    for index in range(1_000_000):
        kept.add(index, 1.0)
    assert sys.getsizeof(kept._bits) + sys.getsizeof(kept._times) < 260 * 1024


def test_indexed_digests_give_back_each_index_its_own_digest() -> None:
    """The journal digests of items in flight (`bookkeeping.Digests`), 32 bytes each."""
    kept = IndexedDigests()
    for index in (5, 3, 9, 4):
        kept[index] = request_digest(b"%d" % index)
    assert kept.pop(3) == request_digest(b"3") and kept.pop(3) is None
    assert sorted(kept) == [4, 5, 9] and kept.get(9) == request_digest(b"9")
    kept[9] = request_digest(b"again")
    assert kept.get(9) == request_digest(b"again") and len(kept) == 3
