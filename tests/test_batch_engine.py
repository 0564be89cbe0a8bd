"""The batch driver and the key's limits, across batches: what several batches on one key
share, and what one summary shared by batches of different models adds up to.

Whether the limits held is counted on the emulator (its 429s and its admitted requests),
never timed."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from genai_coroutines import BatchSummary, Price, ResponsesProcessor
from genai_coroutines.emulator import Emulator
from tests.responses_support import request_for
from tests.samples import ended


async def test_three_batches_at_once_on_one_key_share_its_limits(emulator: Emulator) -> None:
    """Limits given only by the server's headers: three concurrent batches (two processors)
    learn them once and pace together, instead of each spending the whole quota."""
    emulator.config.openai_rpm = 3000
    emulator.config.openai_tpm = 480_000
    emulator.config.burst_seconds = 1.0
    emulator.config.latency = 0.05
    shared, other = ResponsesProcessor(), ResponsesProcessor()

    def batch(tag: str) -> object:
        prompts = [f"{tag} prompt {i} " + "word " * (20 + i % 60) for i in range(60)]
        return request_for(emulator, prompts, max_concurrent_requests=50)

    results = await asyncio.gather(
        shared.process_batch(batch("a")),  # type: ignore[arg-type]
        shared.process_batch(batch("b")),  # type: ignore[arg-type]
        other.process_batch(batch("c")),  # type: ignore[arg-type]
    )

    assert [r["total_success"] for r in results] == [60, 60, 60]
    sent = emulator.stats.total("responses")
    assert emulator.stats.rate_limited <= 0.01 * sent
    assert sent - emulator.stats.rate_limited == 180  # nothing sent twice


async def test_a_shared_summary_prices_each_batch_at_its_own_model(emulator: Emulator) -> None:
    prices = {"model-a": Price(1.0, 0.5, 2.0), "model-b": Price(10.0, 5.0, 20.0)}
    summary = BatchSummary(prices=prices)
    processor = ResponsesProcessor()
    [a, b] = [
        (await processor.process_batch(request_for(emulator, ["x"], model=m), summary=summary))[
            "results"
        ][0]
        for m in ("model-a", "model-b")
    ]

    def cost(result: dict[str, object], price: Price) -> float:
        usage = result["usage"]
        assert isinstance(usage, dict)
        return (usage["input_tokens"] * price.input + usage["output_tokens"] * price.output) / 1e6

    expected = cost(a, prices["model-a"]) + cost(b, prices["model-b"])
    assert abs(summary.cost_usd - expected) < 1e-12
    assert summary.tiers == {"default": 2}


def test_flex_and_batch_results_are_priced_at_half() -> None:
    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    summary = BatchSummary(prices={"m": Price(2.0, 1.0, 8.0)})
    for tier in ("default", "flex", "batch"):
        summary.add(ended(usage, model="m", tier=tier))
    assert summary.cost_usd == 2.0 + 1.0 + 1.0
    assert summary.tiers == {"default": 1, "flex": 1, "batch": 1}


def test_token_counts_are_read_from_any_dict_and_any_number() -> None:
    """Counts that are not plain ints (a float, a numeric string, a bool) and details in a
    dict subclass (a usage built by other code) are counted as `int()` reads them."""
    summary = BatchSummary(prices={"m": Price(1.0, 0.5, 2.0)})
    usage = {
        "input_tokens": 10.0,
        "input_tokens_details": OrderedDict(cached_tokens="4"),
        "output_tokens": True,
        "output_tokens_details": OrderedDict(reasoning_tokens=0),
    }
    summary.add(ended(usage, model="m"))
    assert (summary.input_tokens, summary.cached_tokens, summary.output_tokens) == (10, 4, 1)
    assert type(summary.output_tokens) is int
