"""Duplicates sent once (`dedupe`) and a budget that stops the batch (`max_cost_usd`,
`max_cost_cents`), both in the engine's driver, against the emulator.

What was sent is counted by the emulator: `responses_by_digest` (OpenAI POSTs per input),
`submissions_by_digest` (Datalab uploads per file); what it cost is priced from each
answer's usage by the summary's table, or Datalab's own `cost_breakdown`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import (
    PRICES,
    BatchSummary,
    DocumentConfig,
    DocumentProcessor,
    ResponsesProcessor,
)
from genai_coroutines.documents.prices import page_budget
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine.budget import Budget
from genai_coroutines.engine.dedupe import Twin, Twins
from genai_coroutines.engine.outcome import ItemEnd
from tests.responses_support import request_for
from tests.samples import ended, pdf
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


async def test_twins_keep_bounded_memory_and_share_only_with_the_waiting() -> None:
    twins = Twins(remembered=3)
    for i in range(10):
        assert twins.admit(i, f"d{i}", 0.0) is None
        twins.finished(replace(ended(), index=i))
    assert len(twins._done) == 3 and not twins._running and not twins._leading
    answered = twins.admit(20, "d9", 0.0)  # remembered: answered at once
    assert isinstance(answered, ItemEnd) and answered.duplicate_of == 9
    assert answered.origin == "twin" and answered.outcome.attempts == 0
    assert twins.admit(21, "d0", 0.0) is None  # forgotten: sent again
    waiting = twins.admit(22, "d0", 0.0)
    assert isinstance(waiting, Twin) and waiting.index == 21
    failed = replace(ended(success=False), index=21)
    twins.finished(failed)
    assert waiting.result.result() is failed
    assert twins.admit(23, "d0", 0.0) is None, "a failure is not handed to later twins"
    twins.abandoned(23)
    assert not twins._running


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
    config = DocumentConfig(
        api_key="dl-emulator", api_url=emulator.marker_url, poll_interval_secs=0.01
    )
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
    **options: Any,
) -> tuple[dict[str, Any], BatchSummary]:
    summary = BatchSummary()
    request = request_for(emulator, prompts, max_output_tokens=ALLOWANCE, **options)
    out = await ResponsesProcessor().process_batch(
        request, max_cost_usd=limit, summary=summary, journal=journal
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


async def test_an_unpriced_model_cannot_have_a_budget(emulator: Emulator) -> None:
    request = request_for(emulator, ["x"], model="my-finetune")
    with pytest.raises(ValueError, match="needs a price"):
        await ResponsesProcessor().process_batch(request, max_cost_usd=1.0)
    assert posts(emulator) == 0


async def test_max_cost_cents_stops_datalab_uploads_settled_by_cost_breakdown(
    emulator: Emulator,
) -> None:
    config = DocumentConfig(
        api_key="dl-emulator",
        api_url=emulator.marker_url,
        poll_interval_secs=0.01,
        max_concurrent_requests=1,
    )  # mode "accurate": 0.6 cents a page, as the emulator bills it
    documents = [pdf(2, tag=f"doc {i}") for i in range(8)]
    summary = BatchSummary()
    results = await DocumentProcessor(config).process(documents, max_cost_cents=5, summary=summary)
    assert [r["success"] for r in results] == [True] * 4 + [False] * 4
    assert {r["error_type"] for r in results[4:]} == {"budget_exceeded"}
    assert sum(emulator.stats.submissions_by_digest.values()) == 4
    assert summary.cost_cents == pytest.approx(4.8)  # the real cost_breakdown, under 5


async def test_every_refusal_quotes_the_figures_that_stopped_the_batch(
    emulator: Emulator,
) -> None:
    """A cheaper item after the stop is refused too; its message must not quote its own
    figures, which fit within the budget (3.6 spent + 0.6 is under 5), but the stop's."""
    config = DocumentConfig(
        api_key="dl-emulator",
        api_url=emulator.marker_url,
        poll_interval_secs=0.01,
        max_concurrent_requests=1,
    )  # mode "accurate": 0.6 cents a page
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


def test_a_budget_settles_by_the_real_cost_and_frees_what_never_ended() -> None:
    budget: Budget[int] = page_budget(10, cents_per_page=1.0, pages=lambda pages: pages)
    held = budget.reserve(6)
    assert held == 6.0 and budget.in_flight == 6.0
    budget.settle(6.0, ended(cents=2.5).outcome)
    assert budget.spent == 2.5 and budget.in_flight == 0.0
    held = budget.reserve(7)
    assert held == 7.0
    budget.release(7.0)
    assert budget.in_flight == 0.0
    refused = budget.reserve(8)
    assert not isinstance(refused, float) and refused.error_type == "budget_exceeded"
    assert not isinstance(budget.reserve(1), float), "once reached, nothing more is sent"
    assert budget.reserve(5, paid=True) == 5.0, "work accepted earlier is polled regardless"
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
