"""A job's deadline (`deadline=`, `--deadline`): nothing sent after it, and with the Batch API
the batches giving way to the synchronous path in time for it.

Every test runs against the emulator, its batch clock compressed through its config
(`batch_seconds_per_line`); what was sent and answered where is counted there: batch lines
by `custom_id` (`batch_executions_by_custom_id`), synchronous answers by their input
(`completed_by_digest`), so an item answered by a batch and again synchronously shows.
(Not about one attempt's timeout: that is `test_attempt_timeouts.py`.)
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from genai_coroutines import BatchAPI, BatchSummary, ResponsesProcessor, ResponsesRequest
from genai_coroutines.cli import build_parser, main
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from genai_coroutines.engine import RateLimiter
from genai_coroutines.engine.stages import StageKey
from genai_coroutines.responses.batch.spool import key_of
from genai_coroutines.responses.direct import DirectAdapter, Prepared
from tests.pipeline_support import invoice_pdf, pipeline_for
from tests.responses_support import request_for
from tests.test_cli import responses_args, write_prompts

MODEL = "gpt-4o-mini"


def prompts(n: int) -> list[str]:
    return [f"Summarise item number {i:04d}." for i in range(n)]


def make_request(emulator: Emulator, n: int, **fields: Any) -> ResponsesRequest:
    return request_for(
        emulator,
        prompts(n),
        max_concurrent_requests=50,
        requests_per_minute=60_000,  # what the fallback plans the synchronous path by
        **fields,
    )


def batch(margin: float, **options: Any) -> BatchAPI:
    return BatchAPI(poll_interval_secs=0.01, fallback_margin_secs=margin, **options)


async def answers_per_item(emulator: Emulator, request: ResponsesRequest) -> list[int]:
    """How many times each item was answered, by a batch line and synchronously together."""
    path = DirectAdapter(request, cast(RateLimiter, None))  # prepare() never touches it
    by_batch: Counter[int] = Counter()
    for custom_id, runs in emulator.stats.batch_executions_by_custom_id.items():
        key = key_of(custom_id)
        assert key is not None
        by_batch[key.index] += runs
    counts = []
    for index, text in enumerate(cast(list[str], request.user_prompts)):
        prepared = await path.prepare(index, text)
        assert isinstance(prepared, Prepared)
        sent = orjson.dumps(orjson.loads(prepared.body)["input"])
        counts.append(by_batch[index] + emulator.stats.completed_by_digest[digest(sent)])
    return counts


# -- the Batch API with a deadline ----------------------------------------------------------


async def test_a_deadline_the_batches_meet_sends_nothing_synchronously_at_half_the_price(
    emulator: Emulator,
) -> None:
    request = make_request(emulator, 40)
    summary = BatchSummary(model=MODEL)
    done = await ResponsesProcessor().process_batch(
        request, batch_api=batch(margin=1.0), deadline=60, summary=summary
    )
    assert done["total_success"] == 40
    assert emulator.stats.total("responses") == 0, "no synchronous POST"
    assert emulator.stats.total("batches_cancel") == 0
    assert all(result["batch_id"] for result in done["results"])
    assert summary.tiers == {"batch": 40}

    full = BatchSummary(model=MODEL)
    await ResponsesProcessor().process_batch(request, summary=full)
    assert summary.cost_usd == pytest.approx(full.cost_usd / 2)


async def test_a_deadline_the_batches_would_miss_cancels_them_and_sends_the_rest_synchronously(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.batch_seconds_per_line = 0.1  # the batch would take 3 s
    request = make_request(emulator, 30)
    summary = BatchSummary(model=MODEL)
    with caplog.at_level(logging.INFO, logger="genai_coroutines"):
        done = await ResponsesProcessor().process_batch(
            request, batch_api=batch(margin=0.3), deadline=1.5, summary=summary
        )
    assert done["total_success"] == 30, "every item answered before the deadline"
    assert emulator.stats.total("batches_cancel") == 1, "the batch was cancelled"
    by_batch = [r for r in done["results"] if r["batch_id"] is not None]
    by_sync = [r for r in done["results"] if r["batch_id"] is None]
    assert by_batch and by_sync, "the batch's answered lines kept, the rest sent synchronously"
    assert {r["service_tier"] for r in by_batch} == {"batch"}
    assert {r["service_tier"] for r in by_sync} == {"default"}
    assert emulator.stats.total("responses") == len(by_sync)
    assert await answers_per_item(emulator, request) == [1] * 30, "nothing answered twice"
    assert summary.tiers == {"batch": len(by_batch), "default": len(by_sync)}
    switched = [r.getMessage() for r in caplog.records if "deadline_fallback" in r.getMessage()]
    assert len(switched) == 1 and "batches_cancelled=1" in switched[0]


async def test_a_deadline_too_short_for_the_batches_sends_synchronously_at_once(
    emulator: Emulator,
) -> None:
    request = make_request(emulator, 20)
    done = await ResponsesProcessor().process_batch(
        request, batch_api=batch(margin=30.0), deadline=10
    )
    assert done["total_success"] == 20
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (0, 0)
    assert emulator.stats.total("responses") == 20
    assert {r["batch_id"] for r in done["results"]} == {None}


# -- the synchronous path -------------------------------------------------------------------


async def test_past_the_deadline_nothing_is_sent_and_a_rerun_with_the_journal_sends_the_rest(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.latency = 0.1  # 40 prompts, 4 at a time: about a second
    journal = tmp_path / "run.journal"
    request = request_for(emulator, prompts(40), max_concurrent_requests=4)
    done = await ResponsesProcessor().process_batch(request, journal=journal, deadline=0.25)
    results = done["results"]
    assert [r["index"] for r in results] == list(range(40)), "none lost"
    late = [r for r in results if not r["success"]]
    assert done["total_success"] > 0 and late
    for result in late:
        assert (result["error_type"], result["attempts"]) == ("deadline_exceeded", 0)
    sent = emulator.stats.total("responses")
    assert sent == done["total_success"], "each request sent finished; none sent after"

    again = await ResponsesProcessor().process_batch(request, journal=journal)
    assert again["total_success"] == 40
    reused = [r for r in again["results"] if r.get("from_journal")]
    assert len(reused) == done["total_success"]
    assert emulator.stats.total("responses") == 40, "the rerun sent only the late ones"


# -- what deadline= takes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "error"),
    [
        (True, TypeError),
        ("30m", TypeError),
        (0, ValueError),
        (-5.0, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (datetime(2030, 1, 1), ValueError),  # naive
        (datetime.now(timezone.utc) - timedelta(minutes=1), ValueError),  # past
    ],
)
async def test_a_bad_deadline_is_refused_naming_it_before_anything_is_sent(
    emulator: Emulator, deadline: object, error: type[Exception]
) -> None:
    request = make_request(emulator, 2)
    with pytest.raises(error, match="^deadline"):
        await ResponsesProcessor().process_batch(request, deadline=deadline)  # type: ignore[arg-type]
    with pytest.raises(error, match="^deadline"):
        await ResponsesProcessor().process_batch(
            request,
            batch_api=True,
            deadline=deadline,  # type: ignore[arg-type]
        )
    with pytest.raises(error, match="^deadline"):
        await pipeline_for(emulator).process([b"%PDF-1.4"], deadline=deadline)
    assert emulator.stats.total("responses") == 0


async def test_a_timezone_aware_deadline_in_any_zone_is_taken(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    zone = timezone(timedelta(hours=5))
    when = datetime.now(zone) + timedelta(seconds=30)
    with caplog.at_level(logging.INFO, logger="genai_coroutines"):
        done = await ResponsesProcessor().process_batch(make_request(emulator, 3), deadline=when)
    assert done["total_success"] == 3
    start = next(r.getMessage() for r in caplog.records if "batch_start" in r.getMessage())
    assert f"deadline={when.astimezone(timezone.utc).isoformat(timespec='seconds')}" in start


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("45s", 45.0), ("30m", 1800.0), ("6h", 21600.0), ("1d", 86400.0)],
)
def test_deadline_flag_reads_durations(text: str, seconds: float) -> None:
    for command in (["responses", "p.jsonl"], ["extract", "a.pdf"]):
        extra = ["--schema", "s.json"] if command[0] == "extract" else []
        args = build_parser().parse_args([*command, *extra, "--model", MODEL, "--deadline", text])
        assert args.deadline == seconds


def test_deadline_flag_reads_an_iso_time_with_its_offset() -> None:
    args = build_parser().parse_args(
        ["responses", "p.jsonl", "--model", MODEL, "--deadline", "2030-03-02T09:00:00+01:00"]
    )
    assert args.deadline == datetime(2030, 3, 2, 8, 0, tzinfo=timezone.utc)
    args = build_parser().parse_args(
        ["responses", "p.jsonl", "--model", MODEL, "--deadline", "2030-03-02T09:00:00Z"]
    )
    assert args.deadline == datetime(2030, 3, 2, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text", ["soon", "0", "-5m", "5 m", "2030-03-02T09:00:00", "2020-01-01T00:00:00Z"]
)
async def test_a_bad_deadline_flag_is_a_usage_error(
    emulator: Emulator,
    tmp_path: Path,
    text: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", prompts(2))
    monkeypatch.setenv("OPENAI_API_KEY", emulator.config.openai_api_key)
    code = main(responses_args(emulator, tmp_path, "--deadline", text))
    assert code == 2
    err = capsys.readouterr().err
    assert "argument --deadline: " in err or "--deadline: deadline" in err
    assert not (tmp_path / "out.jsonl").exists(), "refused before the output was opened"
    assert emulator.stats.total("responses") == 0


async def test_background_responses_started_before_the_deadline_are_polled_to_their_end(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.background_queue_seconds = 0.4  # each response runs past the deadline
    journal = tmp_path / "run.journal"
    request = request_for(
        emulator,
        prompts(10),
        background=True,
        poll_interval_secs=0.02,
        max_concurrent_requests=2,
        max_waiting=0,  # a poll keeps its slot: two responses started, no more
    )
    done = await ResponsesProcessor().process_batch(request, journal=journal, deadline=0.2)
    started = emulator.stats.total("responses")
    assert done["total_success"] == started == 2, "both started responses collected"
    late = [r for r in done["results"] if not r["success"]]
    assert [(r["error_type"], r["attempts"]) for r in late] == [("deadline_exceeded", 0)] * 8

    again = await ResponsesProcessor().process_batch(request, journal=journal)
    assert again["total_success"] == 10
    assert emulator.stats.total("responses") == 10, "the rerun started only the late ones"


async def test_a_pipeline_past_its_deadline_sends_nothing_more_and_a_rerun_finishes(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.seconds_per_page = 0.1
    journal = tmp_path / "pipeline.journal"
    docs = [invoice_pdf(i) for i in range(8)]
    pipeline = pipeline_for(emulator, ocr={"max_concurrent_requests": 1, "max_waiting": 0})
    rows = await pipeline.process(docs, journal=journal, deadline=0.3)
    assert [row["index"] for row in rows] == list(range(8)), "none lost"
    late = [row for row in rows if not row["success"]]
    assert late and len(late) < 8
    assert {row["error_type"] for row in late} == {"deadline_exceeded"}
    converted = [row for row in late if row["failed_stage"] == "extraction"]  # OCR kept
    uploaded = len(emulator.stats.submissions_by_digest)
    assert uploaded == 8 - len(late) + len(converted), "no document uploaded after it"
    assert emulator.stats.total("responses") == 8 - len(late), "no extraction sent after it"

    again = await pipeline_for(emulator).process(docs, journal=journal)
    assert all(row["success"] for row in again)
    assert set(emulator.stats.submissions_by_digest.values()) == {1}, "none uploaded twice"
    assert set(emulator.stats.completed_by_digest.values()) == {1}, "none extracted twice"


@pytest.mark.parametrize(
    ("deadline", "margin", "tier"),
    [(1.5, 0.3, "flex"), (10.0, 30.0, "default")],  # in time for flex; short from the start
)
async def test_a_flex_request_falls_back_to_flex_when_the_time_allows(
    emulator: Emulator, deadline: float, margin: float, tier: str
) -> None:
    emulator.config.batch_seconds_per_line = 0.1
    request = make_request(emulator, 30, service_tier="flex")
    summary = BatchSummary(model=MODEL)
    done = await ResponsesProcessor().process_batch(
        request, batch_api=batch(margin=margin), deadline=deadline, summary=summary
    )
    assert done["total_success"] == 30
    by_sync = [r for r in done["results"] if r["batch_id"] is None]
    assert by_sync and {r["service_tier"] for r in by_sync} == {tier}
    assert summary.tiers[tier] == len(by_sync)
    assert await answers_per_item(emulator, request) == [1] * 30, "nothing answered twice"


async def test_a_batch_api_pipeline_the_batches_would_miss_sends_the_rest_synchronously(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The pipeline's extraction lines with a deadline their batch would miss: the batch is
    cancelled, what it answered kept, every other line sent synchronously, each extraction
    answered once, every row done before the deadline."""
    emulator.config.batch_seconds_per_line = 0.1  # the batch would take 2 s
    docs = [invoice_pdf(i) for i in range(20)]
    pipeline = pipeline_for(
        emulator, request={"max_concurrent_requests": 50, "requests_per_minute": 60_000}
    )
    with caplog.at_level(logging.INFO, logger="genai_coroutines"):
        rows = await pipeline.process(docs, batch_api=batch(margin=0.3), deadline=1.5)
    assert all(row["success"] for row in rows), "every row done before the deadline"
    assert emulator.stats.total("batches_cancel") >= 1, "no batch was cancelled"
    by_batch = [row for row in rows if row["batch_id"] is not None]
    by_sync = [row for row in rows if row["batch_id"] is None]
    assert by_batch and by_sync, "the batch's answered lines kept, the rest sent synchronously"
    assert {row["service_tier"] for row in by_batch} == {"batch"}
    assert {row["service_tier"] for row in by_sync} == {"default"}
    assert all(row["custom_id"] is None for row in by_sync)
    lines = emulator.stats.batch_executions_by_custom_id
    answered = Counter(cast(StageKey, key_of(line)).index for line in lines)
    assert set(answered.values()) == {1} and set(answered) == {r["index"] for r in by_batch}
    assert emulator.stats.total("responses") == len(by_sync), "a line answered twice"
    switched = [r.getMessage() for r in caplog.records if "deadline_fallback" in r.getMessage()]
    assert len(switched) == 1
