"""Duplicates sent once (`dedupe`) and a budget that stops the batch (`max_cost_usd`,
`max_cost_cents`), both in the engine's driver, against the emulator.

What was sent is counted by the emulator: `responses_by_digest` (OpenAI POSTs per input),
`submissions_by_digest` (Datalab uploads per file); what it cost is priced from each
answer's usage by the summary's table, or Datalab's own `cost_breakdown`.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from genai_coroutines import (
    PRICES,
    BatchAPI,
    BatchSummary,
    DocumentConfig,
    DocumentProcessor,
    ResponsesProcessor,
)
from genai_coroutines.documents.prices import page_budget
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine.budget import Budget
from genai_coroutines.engine.dedupe import Twins
from genai_coroutines.engine.outcome import ItemEnd
from genai_coroutines.responses.estimate import APPROXIMATION, token_counter
from tests.documents_support import config_for
from tests.responses_support import request_for
from tests.samples import ended, pdf
from tests.scale_support import billed_usd
from tests.test_cli import output_lines, responses_args, run, write_prompts

SYSTEM = "You are terse."  # request_for's system prompt
ALLOWANCE = 64


def posts(emulator: Emulator) -> int:
    return sum(emulator.stats.responses_by_digest.values())


# Dedupe


async def test_dedupe_sends_1000_prompts_with_100_distinct_as_100_requests(
    emulator: Emulator,
) -> None:
    prompts = [f"prompt {i % 100}" for i in range(1000)]
    summary = BatchSummary()
    request = request_for(emulator, prompts, max_concurrent_requests=20)
    out = await ResponsesProcessor().process_batch(request, dedupe=True, summary=summary)
    assert posts(emulator) == 100 and set(emulator.stats.responses_by_digest.values()) == {1}
    results = out["results"]
    assert out["total_success"] == 1000 and [r["index"] for r in results] == list(range(1000))
    sent = {r["index"]: r for r in results if r.get("duplicate_of") is None}
    assert len(sent) == 100
    for result in results:
        first = result.get("duplicate_of")
        if first is None:
            assert result["attempts"] == 1
            continue
        assert first in sent and prompts[first] == prompts[result["index"]]
        assert result["raw_response"] == sent[first]["raw_response"]
        assert result["attempts"] == 0 and "from_journal" not in result
    assert summary.duplicates == 900 and summary.succeeded == 1000
    alone = BatchSummary()
    for result in sent.values():
        alone.add(ended(result["usage"], model=result["model"], tier=result["service_tier"]))
    assert summary.cost_usd == pytest.approx(alone.cost_usd), "twins are not priced again"


async def test_dedupe_is_off_by_default(emulator: Emulator) -> None:
    out = await ResponsesProcessor().process_batch(request_for(emulator, ["same"] * 5))
    assert posts(emulator) == 5 and all("duplicate_of" not in r for r in out["results"])


async def test_dedupe_works_on_a_lazy_input(emulator: Emulator) -> None:
    def prompts() -> Iterator[str]:
        for i in range(300):
            yield f"lazy {i % 30}"

    results = [
        result
        async for result in ResponsesProcessor().stream(
            request_for(emulator, prompts()), dedupe=True
        )
    ]
    assert len(results) == 300 and all(r["success"] for r in results)
    assert posts(emulator) == 30


async def test_twins_of_batch_api_lines_wait_for_them_and_take_their_answers(
    emulator: Emulator,
) -> None:
    """On the Batch API every original waits for its batch, so every twin waits with it
    (as a link to its index): 300 prompts, 30 distinct, are 30 lines, and each twin ends
    with its original's answer, rendered at its own index."""
    prompts = [f"prompt {i % 30}" for i in range(300)]
    out = await ResponsesProcessor().process_batch(
        request_for(emulator, prompts),
        dedupe=True,
        batch_api=BatchAPI(poll_interval_secs=0.01, max_requests_per_file=10),
    )
    executed = emulator.stats.batch_executions_by_custom_id
    assert len(executed) == 30 and set(executed.values()) == {1}
    assert emulator.stats.batches_created == 3 and posts(emulator) == 0
    results = out["results"]
    assert [r["index"] for r in results] == list(range(300))
    assert all(r["success"] for r in results)
    for r in results[30:]:
        original = results[r["duplicate_of"]]
        assert original["index"] == r["index"] % 30 and "duplicate_of" not in original
        assert r["raw_response"] == original["raw_response"] and r["attempts"] == 0


def digest(n: int) -> str:
    """A journal digest (SHA-256 hex) of its own."""
    return f"{n:064x}"


async def test_twins_keep_bounded_memory_and_share_only_with_the_waiting() -> None:
    twins = Twins(remembered=3)
    for i in range(10):
        assert twins.admit(i, digest(i), 0.0) is None
        assert twins.finished(replace(ended(), index=i)) == []
    assert len(twins._done) == 3 and not twins._running and not len(twins._sent)
    answered = twins.admit(20, digest(9), 0.0)  # remembered: answered at once
    assert isinstance(answered, ItemEnd) and answered.duplicate_of == 9
    assert answered.origin == "twin" and answered.outcome.attempts == 0
    assert twins.admit(21, digest(0), 0.0) is None  # forgotten: sent again
    assert twins.admit(22, digest(0), 1.5) == 21  # waits for 21: a link, no future
    assert twins.admit(24, digest(0), 2.5) == 21
    failed = replace(ended(success=False), index=21)
    handed = twins.finished(failed)
    assert [(end.index, end.started, end.duplicate_of) for end in handed] == [
        (22, 1.5, 21),
        (24, 2.5, 21),
    ]
    assert all(end.outcome.value is failed.outcome.value for end in handed)
    assert twins.admit(23, digest(0), 0.0) is None, "a failure is not handed to later twins"
    assert twins.admit(25, digest(0), 0.0) == 23
    assert twins.abandoned(23) == 1  # its twin is let go with it
    assert not twins._running and not twins._waiting and not len(twins._sent)


async def test_dedupe_with_a_journal_resumes_without_sending(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    request = request_for(emulator, ["a", "b", "a", "c", "b", "a"])
    processor = ResponsesProcessor()
    first = await processor.process_batch(request, dedupe=True, journal=journal)
    assert posts(emulator) == 3 and first["total_success"] == 6
    again = await processor.process_batch(request, dedupe=True, journal=journal)
    assert posts(emulator) == 3 and all(r["from_journal"] for r in again["results"])
    assert [r.get("duplicate_of") for r in again["results"]] == [None, None, 0, None, 1, 0]


async def test_identical_documents_are_converted_once(emulator: Emulator) -> None:
    config = config_for(emulator)
    documents = [pdf(2, tag="one"), pdf(3, tag="two"), pdf(2, tag="one")]
    results = await DocumentProcessor(config).process(documents, dedupe=True)
    assert [r["success"] for r in results] == [True] * 3
    assert sum(emulator.stats.submissions_by_digest.values()) == 2
    assert results[2]["duplicate_of"] == 0 and results[2]["json_response"]


# Budgets


def estimate_usd(prompt: str) -> float:
    """The budget's estimate of one request: its input estimate plus `max_output_tokens`."""
    price = PRICES["gpt-4o-mini"]
    tokens_in = math.ceil((len(SYSTEM) + len(prompt)) / 4)
    return (tokens_in * price.input + ALLOWANCE * price.output) / 1_000_000


async def _budgeted(
    emulator: Emulator,
    prompts: list[str],
    limit: float,
    journal: Path | None = None,
    budget_name: str | None = None,
    **options: Any,
) -> tuple[dict[str, Any], BatchSummary]:
    summary = BatchSummary()
    request = request_for(emulator, prompts, max_output_tokens=ALLOWANCE, **options)
    out = await ResponsesProcessor().process_batch(
        request, max_cost_usd=limit, summary=summary, journal=journal, budget_name=budget_name
    )
    return out, summary


async def test_max_cost_stops_sending_within_one_request_of_the_budget_then_resume_finishes(
    emulator: Emulator, tmp_path: Path
) -> None:
    prompts = [f"budget prompt {i:02d}" for i in range(40)]
    limit, journal = 1.5e-4, tmp_path / "batch.journal"
    out, summary = await _budgeted(emulator, prompts, limit, journal, max_concurrent_requests=1)
    results = out["results"]
    sent = [r for r in results if r["success"]]
    refused = [r for r in results if not r["success"]]
    assert 0 < len(sent) < 40 and posts(emulator) == len(sent)  # counted by the emulator
    assert [r["index"] for r in sent] == list(range(len(sent)))
    assert all(r["error_type"] == "budget_exceeded" and r["attempts"] == 0 for r in refused)
    assert (
        "budget of $0.00015" in refused[0]["error"] and "raise it and resume" in refused[0]["error"]
    )
    spent = summary.cost_usd
    assert spent <= limit < spent + estimate_usd(prompts[len(sent)])
    print(f"\nbudget ${limit}: {len(sent)} sent, ${spent:.6f} spent, {len(refused)} refused")

    again, _ = await _budgeted(emulator, prompts, 1.0, journal, max_concurrent_requests=1)
    assert again["total_success"] == 40
    assert set(emulator.stats.responses_by_digest.values()) == {1}, "an item was sent twice"
    assert sum(1 for r in again["results"] if r.get("from_journal")) == len(sent)


async def test_a_rerun_with_the_same_budget_sends_nothing_more(
    emulator: Emulator, tmp_path: Path
) -> None:
    prompts = [f"budget prompt {i:02d}" for i in range(30)]
    journal = tmp_path / "batch.journal"
    first, _ = await _budgeted(emulator, prompts, 1e-4, journal, max_concurrent_requests=1)
    sent = posts(emulator)
    again, _ = await _budgeted(emulator, prompts, 1e-4, journal, max_concurrent_requests=1)
    assert posts(emulator) == sent, "the journal's spend counts against the same budget"
    assert again["total_success"] == first["total_success"]


async def test_the_budget_counts_what_is_in_flight(emulator: Emulator) -> None:
    emulator.config.latency = 0.02
    prompts = [f"budget prompt {i:02d}" for i in range(60)]
    limit = 2e-4
    out, summary = await _budgeted(emulator, prompts, limit, max_concurrent_requests=8)
    assert summary.cost_usd <= limit
    assert summary.cost_usd > limit - 8 * estimate_usd(prompts[0])
    assert posts(emulator) == out["total_success"] < 60


async def test_two_batches_on_one_budget_name_share_it_within_the_process(
    emulator: Emulator, tmp_path: Path
) -> None:
    """No limits store: the process's memory keeps the named total. Two batches running
    at once stay within one budget together, a third on the name and the same budget
    sends nothing, and a rerun with its journal and a higher budget continues from the
    name's total (its journaled results are not charged again)."""
    name, limit = f"nightly-{uuid.uuid4().hex}", 2e-4
    first = [f"first batch {i:02d}" for i in range(80)]
    second = [f"second batch {i:02d}" for i in range(40)]
    journal = tmp_path / "first.journal"
    (one, _), (two, _) = await asyncio.gather(
        _budgeted(emulator, first, limit, journal, budget_name=name, max_concurrent_requests=1),
        _budgeted(emulator, second, limit, budget_name=name, max_concurrent_requests=1),
    )
    billed = billed_usd(emulator.stats.billed_tokens)
    largest = max(estimate_usd(prompt) for prompt in first + second)
    assert limit - 2 * largest < billed <= limit, "within one request per batch of it"
    assert one["total_success"] > 0 and two["total_success"] > 0
    assert posts(emulator) == one["total_success"] + two["total_success"]
    refused = next(r for r in two["results"] if not r["success"])
    assert refused["error_type"] == "budget_exceeded" and repr(name) in refused["error"]

    third, _ = await _budgeted(emulator, ["third"], limit, budget_name=name)
    assert (
        third["total_errors"] == 1
        and posts(emulator) == one["total_success"] + two["total_success"]
    ), "the name's total is spent: a third batch sends nothing"

    again, _ = await _budgeted(
        emulator, first, 2 * limit, journal, budget_name=name, max_concurrent_requests=1
    )
    billed = billed_usd(emulator.stats.billed_tokens)
    assert 2 * limit - largest < billed <= 2 * limit, "replayed results are not charged twice"
    assert again["total_success"] > one["total_success"]


async def test_budget_name_needs_a_budget(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="budget_name needs max_cost_usd"):
        await ResponsesProcessor().process_batch(request_for(emulator, ["x"]), budget_name="n")
    with pytest.raises(ValueError, match="budget_name"):
        await ResponsesProcessor().process_batch(
            request_for(emulator, ["x"]), max_cost_usd=1.0, budget_name=" "
        )
    assert posts(emulator) == 0


async def test_an_unpriced_model_cannot_have_a_budget(emulator: Emulator) -> None:
    request = request_for(emulator, ["x"], model="my-finetune")
    with pytest.raises(ValueError, match="needs a price"):
        await ResponsesProcessor().process_batch(request, max_cost_usd=1.0)
    own_table = ResponsesProcessor(prices={"models": {"gpt-4o": PRICES["gpt-4o"]}})
    with pytest.raises(ValueError, match="needs a price for model 'gpt-4o-mini'"):
        await own_table.process_batch(request_for(emulator, ["x"]), max_cost_usd=1.0)
    assert posts(emulator) == 0


# Prices as data

ODD = {"input": 3.0, "cached_input": 0.7, "output": 11.0}
"""Prices no built-in model has, so a figure at them cannot come from the built-in table."""


def priced_at(price: dict[str, float], summary: BatchSummary | Any) -> float:
    cached = summary.cached_tokens
    fresh = summary.input_tokens - cached
    paid = fresh * price["input"] + cached * price["cached_input"]
    return (paid + summary.output_tokens * price["output"]) / 1_000_000


async def test_a_price_file_changes_the_summarys_figure_exactly(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.prompt_caching = True  # cached input, at the file's cached rate
    file = tmp_path / "prices.json"
    file.write_bytes(orjson.dumps({"date": "2030-01-01", "models": {"gpt-4o-mini": ODD}}))
    prompts = [f"priced row {n}" for n in range(4)]
    request = request_for(emulator, prompts, system_prompt="Rules. " * 800)
    processor = ResponsesProcessor(prices=str(file))
    await processor.process_batch(request)
    summary = processor.last_summary
    assert summary is not None and summary.cached_tokens > 0
    assert summary.cost_usd == pytest.approx(priced_at(ODD, summary), rel=1e-12)
    assert summary.cost_usd != pytest.approx(priced_at(vars_of("gpt-4o-mini"), summary))
    saved = summary.cached_tokens * (ODD["input"] - ODD["cached_input"]) / 1_000_000
    assert summary.as_dict()["cache_saving_usd"] == pytest.approx(saved, abs=1e-6)

    write_prompts(tmp_path / "prompts.jsonl", prompts)  # the CLI's --prices: its figure too
    code, _, err = await run(emulator, *responses_args(emulator, tmp_path, "--prices", str(file)))
    assert code == 0, err
    tokens = re.search(r"tokens: (\d+) in \((\d+) cached\), (\d+) out", err)
    assert tokens is not None, err
    fresh, cached, out = int(tokens[1]) - int(tokens[2]), int(tokens[2]), int(tokens[3])
    usd = (fresh * ODD["input"] + cached * ODD["cached_input"] + out * ODD["output"]) / 1e6
    assert f"estimated cost: ${usd:.4f}" in err and usd > 0


def vars_of(model: str) -> dict[str, float]:
    price = PRICES[model]
    return {"input": price.input, "cached_input": price.cached_input, "output": price.output}


async def test_an_unpriced_model_costs_none_and_is_named_in_one_warning(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    processor = ResponsesProcessor(prices={"models": {"gpt-4o": ODD}})
    with caplog.at_level("WARNING", logger="genai_coroutines"):
        out = await processor.process_batch(request_for(emulator, ["a", "b", "c"]))
    assert out["total_success"] == 3
    assert processor.last_summary is not None
    figures = processor.last_summary.as_dict()
    assert figures["cost_usd"] is None and figures["unpriced_models"] == ["gpt-4o-mini"]
    warned = [r.getMessage() for r in caplog.records if "unpriced_model" in r.getMessage()]
    assert len(warned) == 1 and "model=gpt-4o-mini" in warned[0]


async def test_bad_prices_are_refused_naming_prices(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    bad: list[tuple[Any, type[Exception]]] = [
        (str(tmp_path / "missing.json"), ValueError),
        (str(tmp_path / "broken.json"), ValueError),
        (str(tmp_path / "list.json"), TypeError),
        ({"models": {"m": {"input": 1.0, "output": 2.0}}}, ValueError),  # no cached_input
        ({"models": {"m": {**ODD, "input": -1.0}}}, ValueError),
        ({"models": {"m": {**ODD, "output": "2"}}}, TypeError),
        ({"models": {"m": ODD}, "tiers": {"flex": True}}, TypeError),
        ({"models": {"m": ODD}, "currency": "EUR"}, ValueError),
        ([("m", ODD)], TypeError),
    ]
    for prices, error in bad:
        with pytest.raises(error, match="prices"):
            ResponsesProcessor(prices=prices)
    write_prompts(tmp_path / "prompts.jsonl", ["x"])
    args = responses_args(emulator, tmp_path, "--prices", str(tmp_path / "broken.json"))
    code, _, err = await run(emulator, *args)
    assert code == 2 and "--prices" in err
    assert posts(emulator) == 0


async def test_max_cost_cents_stops_datalab_uploads_settled_by_cost_breakdown(
    emulator: Emulator,
) -> None:
    config = config_for(
        emulator, max_concurrent_requests=1
    )  # mode "accurate": 0.6 cents a page, as the emulator bills it
    documents = [pdf(2, tag=f"doc {i}") for i in range(8)]
    summary = BatchSummary()
    results = await DocumentProcessor(config).process(documents, max_cost_cents=5, summary=summary)
    assert [r["success"] for r in results] == [True] * 4 + [False] * 4
    assert {r["error_type"] for r in results[4:]} == {"budget_exceeded"}
    assert sum(emulator.stats.submissions_by_digest.values()) == 4
    assert summary.cost_cents == pytest.approx(4.8)  # the real cost_breakdown, under 5


async def test_a_named_cents_budget_continues_across_document_batches(
    emulator: Emulator,
) -> None:
    config = config_for(
        emulator, max_concurrent_requests=1
    )  # mode "accurate": 0.6 cents a page, 1.2 a document here
    name = f"ocr-{uuid.uuid4().hex}"
    processor = DocumentProcessor(config)
    first = [pdf(2, tag=f"first {i}") for i in range(3)]
    done = await processor.process(first, max_cost_cents=5, budget_name=name)
    assert [r["success"] for r in done] == [True] * 3
    second = [pdf(2, tag=f"second {i}") for i in range(3)]
    done = await processor.process(second, max_cost_cents=5, budget_name=name)
    assert [r["success"] for r in done] == [True, False, False], "3.6 spent: one more fits"
    assert sum(emulator.stats.cents_billed.values()) == pytest.approx(4.8)


async def test_every_refusal_quotes_the_figures_that_stopped_the_batch(
    emulator: Emulator,
) -> None:
    """A cheaper item after the stop is refused too; its message must not quote its own
    figures, which fit within the budget (3.6 spent + 0.6 is under 5), but the stop's."""
    config = config_for(emulator, max_concurrent_requests=1)  # mode "accurate": 0.6 cents a page
    documents = [pdf(2, tag=f"doc {i}") for i in range(3)] + [pdf(8, tag="big"), pdf(1)]
    results = await DocumentProcessor(config).process(documents, max_cost_cents=5)
    assert [r["success"] for r in results] == [True] * 3 + [False] * 2
    assert {r["error_type"] for r in results[3:]} == {"budget_exceeded"}
    # The three jobs are polled without a driver slot, so when the big one comes they may be
    # spent or still in flight: their 3.6 cents are quoted either way.
    figures = re.search(r"spent ([0-9.]+) cents, in flight ([0-9.]+) cents", results[4]["error"])
    assert figures is not None and float(figures[1]) + float(figures[2]) == pytest.approx(3.6)
    assert "up to 4.8 cents" in results[4]["error"], results[4]["error"]
    assert results[4]["error"] == results[3]["error"]


async def test_a_budget_settles_by_the_real_cost_and_frees_what_never_ended() -> None:
    budget: Budget[int] = page_budget(10, cents_per_page=1.0, pages=lambda pages: pages)
    held = await budget.reserve(6)
    assert held == 6.0 and budget.in_flight == 6.0
    budget.settle(6.0, ended(cents=2.5).outcome)
    assert budget.spent == 2.5 and budget.in_flight == 0.0
    held = await budget.reserve(7)
    assert held == 7.0
    budget.release(7.0)
    assert budget.in_flight == 0.0
    refused = await budget.reserve(8)
    assert not isinstance(refused, float) and refused.error_type == "budget_exceeded"
    assert not isinstance(await budget.reserve(1), float), "once reached, nothing more is sent"
    assert await budget.reserve(5, paid=True) == 5.0, "work accepted earlier is polled regardless"
    with pytest.raises(ValueError):
        page_budget(-1, cents_per_page=1.0, pages=lambda pages: pages)


async def test_cli_dedupe_and_max_cost(emulator: Emulator, tmp_path: Path) -> None:
    prompts = [f"cli prompt {i % 5}" for i in range(20)]
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    args = responses_args(emulator, tmp_path, "--dedupe", "--max-output-tokens", "64")
    code, _, err = await run(emulator, *args, "--max-cost", "1")
    assert code == 0, err
    assert posts(emulator) == 5 and "15 duplicates sent once" in err
    records = output_lines(tmp_path / "out.jsonl")
    assert sum(1 for r in records if r.get("duplicate_of") is not None) == 15

    write_prompts(tmp_path / "more.jsonl", [f"more {i}" for i in range(10)])
    more = [*args[:1], str(tmp_path / "more.jsonl"), *args[2:]]
    more[more.index("--journal") + 1] = str(tmp_path / "more.journal")
    code, _, err = await run(emulator, *more, "--max-cost", "0.0001")
    assert code == 1, err
    records = output_lines(tmp_path / "out.jsonl")
    assert any(r.get("error_type") == "budget_exceeded" for r in records)
    assert posts(emulator) == 5 + sum(1 for r in records if r["success"])


async def test_an_extract_budget_prices_the_parse_and_the_extraction(emulator: Emulator) -> None:
    """/extract from a file bills the parse and the extraction (0.6 + 0.6 cents a page in
    "accurate"): estimated at the parse alone, the second document would be sent and the
    budget passed."""
    config = DocumentConfig(
        api_key=emulator.config.datalab_api_key,
        api_url=f"{emulator.datalab_base_url}/api/v1/extract",
        page_schema='{"type": "object", "properties": {"title": {"type": "string"}}}',
        poll_interval_secs=0.01,
        max_concurrent_requests=1,
    )
    documents = [pdf(2, tag=f"doc {i}") for i in range(3)]
    summary = BatchSummary()
    results = await DocumentProcessor(config).process(documents, max_cost_cents=4, summary=summary)
    assert [r["success"] for r in results] == [True, False, False]
    assert summary.cost_cents == pytest.approx(2.4)
    # The first job polls without a driver slot, so it may be spent or still in flight when
    # the second is refused: its 2.4 cents are quoted either way.
    figures = re.search(r"spent ([0-9.]+) cents, in flight ([0-9.]+) cents", results[1]["error"])
    assert figures and float(figures[1]) + float(figures[2]) == pytest.approx(2.4)
    assert "the next request up to 2.4" in results[1]["error"]


# Estimates before spending


def without_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without the `[estimate]` extra: `import tiktoken` fails."""
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    token_counter.cache_clear()


async def test_the_estimates_sync_input_cost_is_within_15_percent_of_a_real_runs(
    emulator: Emulator,
) -> None:
    prompts = [f"Summarise ticket {n}: " + "the printer jams. " * (n % 9) for n in range(40)]
    request = request_for(emulator, prompts, max_output_tokens=ALLOWANCE)
    processor = ResponsesProcessor()
    guess = await processor.estimate(request)
    assert posts(emulator) == 0, "an estimate sends nothing"
    await processor.process_batch(request)
    summary = processor.last_summary
    assert summary is not None and summary.cached_tokens == 0
    real = summary.input_tokens * PRICES["gpt-4o-mini"].input / 1_000_000
    sync = guess["paths"]["sync"]
    assert sync["input_cost_usd"] == pytest.approx(real, rel=0.15)
    assert (
        sync["output_tokens"] == 40 * ALLOWANCE and guess["output_assumed"] == "max_output_tokens"
    )
    assert guess["paths"]["batch_api"]["cost_usd"] == pytest.approx(sync["cost_usd"] / 2)


async def test_without_tiktoken_the_estimate_counts_as_the_limiter_does(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_tiktoken(monkeypatch)
    long_system = "House rules. " * 400  # 5,200 characters: 1,300 tokens, 1,280 cacheable
    prompts = [f"row {n}" for n in range(30)]
    request = request_for(
        emulator, prompts, system_prompt=long_system, requests_per_minute=600, tokens_per_minute=1e6
    )
    guess = await ResponsesProcessor().estimate(request)
    assert guess["tokenizer"] == APPROXIMATION
    counted = sum(math.ceil((len(long_system) + len(p)) / 4) for p in prompts)
    sync = guess["paths"]["sync"]
    assert sync["input_tokens"] == counted
    assert guess["output_tokens_per_request"] == 4096 and "default" in guess["output_assumed"]
    assert sync["minutes"] == pytest.approx(max(30 / 600, (counted + 30 * 4096) / 1e6), abs=0.01)
    caching = sync["with_prompt_caching"]
    assert caching["cached_input_tokens"] == (30 - 2) * 1280, "each of 2 keys' first misses"
    assert caching["input_cost_usd"] < sync["input_cost_usd"]
    assert guess["paths"]["batch_api"]["minutes"] is None
    unpriced = await ResponsesProcessor(prices={"models": {}}).estimate(request)
    assert unpriced["paths"]["sync"]["cost_usd"] is None and not unpriced["priced"]
    assert posts(emulator) == 0
