"""The Batch API path against the emulated Files and Batch APIs, the openai SDK as oracle.

Every test runs the real path: JSONL files written and uploaded, batches created and
polled, output and error files read back. Batches are time-compressed through the
emulator's config; what crossed the wire is read from the emulator's counters
(`files_uploaded`, `batches_created`, `batch_executions_by_custom_id`) and, through the
official SDK, from the files and batches it holds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import openai
import orjson
import pytest
from openai.types.responses import Response

from genai_coroutines import BatchAPI, BatchSummary, ResponsesProcessor, ResponsesRequest
from genai_coroutines.emulator import Emulator, EmulatorConfig, openai_batch
from genai_coroutines.engine import KeyLimits, MemoryStore, RateLimiter, limit_key
from genai_coroutines.engine.journal import Journal, request_digest
from genai_coroutines.engine.progress import Progress
from genai_coroutines.engine.stages import StageKey
from genai_coroutines.responses.batch.answers import judge
from genai_coroutines.responses.batch.spool import batch_line, custom_id
from genai_coroutines.responses.batch.submitter import HOUR
from genai_coroutines.responses.direct import DirectAdapter, Prepared
from tests.test_cli import output_lines, run, start, until, write_prompts

MODEL = "gpt-4o-mini"
NO_LIMITS = {"openai_rpm": 10**9, "openai_tpm": 10**12}
"""Advertised sync limits no test comes near, so the synchronous comparison is not paced."""


def fast(**options: Any) -> BatchAPI:
    return BatchAPI(poll_interval_secs=0.01, **options)


def prompts(n: int) -> list[str]:
    return [f"Summarise item number {i:04d}." for i in range(n)]


def make_request(emulator: Emulator, n: int, **fields: Any) -> ResponsesRequest:
    settings: dict[str, Any] = {
        "system_prompt": "Be brief.",
        "user_prompts": prompts(n),
        "model": MODEL,
        "response_format": {"type": "text"},
        "base_url": emulator.openai_base_url,
        "api_key": emulator.config.openai_api_key,
        "max_concurrent_requests": 100,
        "retry_delay_min_ms": 10,
        "retry_delay_max_ms": 50,
        **fields,
    }
    return ResponsesRequest(**settings)


async def all_batches(client: openai.AsyncOpenAI) -> list[Any]:
    return [batch async for batch in client.batches.list(limit=100)]


async def file_lines(client: openai.AsyncOpenAI, file_id: str) -> list[dict[str, Any]]:
    content = await client.files.content(file_id)
    return [orjson.loads(raw) for raw in content.content.splitlines()]


def executions(emulator: Emulator) -> dict[str, int]:
    return dict(emulator.stats.batch_executions_by_custom_id)


# -- must show: files, batches, order and shape ---------------------------------------------


async def test_1200_prompts_become_3_files_and_3_batches_shaped_like_the_sync_path(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    for name, value in NO_LIMITS.items():
        setattr(emulator.config, name, value)
    request = make_request(emulator, 1200)
    texts = prompts(1200)
    batch_summary = BatchSummary(model=MODEL)
    options = fast(max_requests_per_file=500, metadata={"run": "test"})
    batched = await ResponsesProcessor().process_batch(
        request, batch_api=options, summary=batch_summary
    )
    stats = emulator.stats
    assert (stats.files_uploaded, stats.batches_created) == (3, 3)
    assert stats.total("responses") == 0, "nothing went through POST /v1/responses"
    assert set(executions(emulator).values()) == {1} and len(executions(emulator)) == 1200

    sync_summary = BatchSummary(model=MODEL)
    direct = await ResponsesProcessor().process_batch(request, summary=sync_summary)
    assert batched["total_success"] == direct["total_success"] == 1200
    for index, (ours, theirs) in enumerate(zip(batched["results"], direct["results"], strict=True)):
        assert ours["index"] == theirs["index"] == index, "results in input order"
        assert list(ours) == [*theirs, "batch_id", "custom_id"], "the same shape, plus two keys"
        assert ours["service_tier"] == "batch" and ours["attempts"] == 1
        assert ours["usage"] == theirs["usage"]
        answer, expected = (
            Response.model_validate_json(ours["raw_response"]),
            Response.model_validate_json(theirs["raw_response"]),
        )
        assert answer.output_text == expected.output_text

    # The lines, as the API holds them: each body is exactly the synchronous path's.
    path = DirectAdapter(request, cast(RateLimiter, None))  # prepare() never touches it
    batches = await all_batches(client)
    assert len(batches) == 3
    by_id = {b.id: b for b in batches}
    seen: dict[str, int] = {}
    for batch in batches:
        assert (batch.endpoint, batch.completion_window, batch.status) == (
            "/v1/responses",
            "24h",
            "completed",
        )
        assert batch.metadata == {"run": "test"}
        for line in await file_lines(client, batch.input_file_id):
            index = int(line["custom_id"].split("-")[0])
            prepared = await path.prepare(index, texts[index])
            assert isinstance(prepared, Prepared)
            assert line["method"] == "POST" and line["url"] == "/v1/responses"
            assert line["body"] == orjson.loads(prepared.body)
            assert line["custom_id"] == custom_id(StageKey(index), prepared.body)
            seen[line["custom_id"]] = index
    assert sorted(seen.values()) == list(range(1200)), "every item in exactly one file"
    sizes = sorted(b.request_counts.total for b in batches if b.request_counts)
    assert sizes == [200, 500, 500]
    for result in batched["results"]:
        assert result["batch_id"] in by_id and seen[result["custom_id"]] == result["index"]

    # The summary: the same tokens, counted once, at half the synchronous price.
    assert batch_summary.input_tokens == sync_summary.input_tokens > 0
    assert batch_summary.output_tokens == sync_summary.output_tokens
    assert batch_summary.tiers == {"batch": 1200}
    assert batch_summary.cost_usd == pytest.approx(sync_summary.cost_usd / 2)


async def test_the_summary_shows_each_batchs_usage_beside_the_sums_of_its_lines(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genai_coroutines.responses")
    summary = BatchSummary(model=MODEL)
    await ResponsesProcessor().process_batch(
        make_request(emulator, 60), batch_api=fast(max_requests_per_file=25), summary=summary
    )
    figures, billed = summary.as_dict(), emulator.stats.billed_tokens
    assert emulator.stats.batches_created == 3
    assert figures["provider_reported"] == {
        "input_tokens": billed["input"],
        "cached_tokens": billed["cached_input"],
        "output_tokens": billed["output"],
        "reasoning_tokens": 0,
        "cost_cents": 0.0,
    }
    assert (figures["input_tokens"], figures["output_tokens"]) == (
        billed["input"],
        billed["output"],
    )
    assert not warnings_of(caplog, "provider_totals_differ")


async def test_lines_billed_but_unreadable_make_the_batch_usage_differ_with_a_warning(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Two lines answered (and billed, in the batch's `usage`) whose bodies are not
    responses: their items are sent again, so the provider reports more than the results."""
    caplog.set_level(logging.WARNING, logger="genai_coroutines.responses")
    emulator.faults.schedule("batch_lines", "line-body-not-json", times=2)
    summary = BatchSummary(model=MODEL)
    out = await ResponsesProcessor().process_batch(
        make_request(emulator, 10), batch_api=fast(), summary=summary
    )
    assert out["total_success"] == 10
    reported, billed = summary.as_dict()["provider_reported"], emulator.stats.billed_tokens
    assert (reported["input_tokens"], reported["output_tokens"]) == (
        billed["input"],
        billed["output"],
    )
    assert summary.input_tokens < billed["input"] and summary.output_tokens < billed["output"]
    (warning,) = warnings_of(caplog, "provider_totals_differ")
    assert f"input_tokens=ours={summary.input_tokens},provider={billed['input']}" in warning
    assert f"output_tokens=ours={summary.output_tokens},provider={billed['output']}" in warning


async def test_lines_that_fail_with_500_come_back_through_a_follow_up_batch(
    emulator: Emulator,
) -> None:
    emulator.config.batch_line_failure_rate = 0.05
    results = (
        await ResponsesProcessor().process_batch(
            make_request(emulator, 400), batch_api=fast(max_requests_per_file=200)
        )
    )["results"]
    assert all(r["success"] for r in results)
    runs = executions(emulator)
    retried = [r for r in results if r["attempts"] > 1]
    assert retried, "the seeded 5% failed some lines"
    assert emulator.stats.batches_created > 2, "follow-up batches were created"
    for result in results:  # a result's attempts are the times its line ran
        assert runs[result["custom_id"]] == result["attempts"]
    first_round = {r["batch_id"] for r in results if r["attempts"] == 1}
    assert not first_round & {r["batch_id"] for r in retried}


async def test_a_batch_that_expires_halfway_keeps_its_finished_lines_and_resubmits_the_rest(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.batch_expire_after_lines = 60
    results = (
        await ResponsesProcessor().process_batch(make_request(emulator, 100), batch_api=fast())
    )["results"]
    assert all(r["success"] for r in results)
    assert set(executions(emulator).values()) == {1}, "no finished line ran again"
    assert emulator.stats.batches_created == 2
    expired = [b for b in await all_batches(client) if b.status == "expired"]
    assert len(expired) == 1
    kept = [r for r in results if r["batch_id"] == expired[0].id]
    resent = [r for r in results if r["batch_id"] != expired[0].id]
    assert [r["index"] for r in kept] == list(range(60)) and all(r["attempts"] == 1 for r in kept)
    assert [r["index"] for r in resent] == list(range(60, 100))
    assert all(r["attempts"] == 2 for r in resent)


async def test_an_expired_batch_whose_rounds_are_spent_says_its_lines_never_ran(
    emulator: Emulator,
) -> None:
    emulator.config.batch_expire_after_lines = 3
    results = (
        await ResponsesProcessor().process_batch(
            make_request(emulator, 5, max_retries=0), batch_api=fast()
        )
    )["results"]
    assert [r["success"] for r in results] == [True] * 3 + [False] * 2
    for result in results[3:]:
        assert result["error"].startswith("batch_expired: never ran")
        assert result["code"] == "batch_expired" and result["is_retriable"] is True


async def test_a_batch_that_fails_validation_fails_its_items_with_the_message(
    emulator: Emulator,
) -> None:
    emulator.config.batch_max_requests = 100
    results = (
        await ResponsesProcessor().process_batch(make_request(emulator, 150), batch_api=fast())
    )["results"]
    assert emulator.stats.batches_created == 1, "a file-level failure is not sent again"
    assert not executions(emulator)
    for result in results:
        assert not result["success"] and result["code"] == "request_limit_exceeded"
        assert "failed validation: The batch input file holds 150 requests" in result["error"]
        assert result["batch_id"] and result["custom_id"]


async def test_a_line_named_by_validation_fails_with_its_message_the_rest_are_sent_again(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = openai_batch.parse_lines
    calls = 0

    def one_bad_line(data: bytes, endpoint: str) -> Any:
        nonlocal calls
        calls += 1
        lines, errors = real(data, endpoint)
        if calls == 1:  # the first file: its third line is refused
            errors = [openai_batch.line_error("invalid_value", "Bad line.", 3, "body.input")]
        return lines, errors

    monkeypatch.setattr(openai_batch, "parse_lines", one_bad_line)
    results = (
        await ResponsesProcessor().process_batch(make_request(emulator, 6), batch_api=fast())
    )["results"]
    assert [r["success"] for r in results] == [True, True, False, True, True, True]
    bad = results[2]
    assert "failed validation: line 3: Bad line." in bad["error"]
    assert (bad["code"], bad["param"], bad["is_retriable"]) == (
        "invalid_value",
        "body.input",
        False,
    )
    assert emulator.stats.batches_created == 2
    assert all(r["attempts"] == 2 for r in results if r["success"])


async def test_a_completed_batch_whose_every_line_failed_says_so_line_by_line(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.batch_line_failure_rate = 1.0
    results = (
        await ResponsesProcessor().process_batch(
            make_request(emulator, 20, max_retries=0), batch_api=fast()
        )
    )["results"]
    (batch,) = await all_batches(client)
    assert batch.status == "completed" and batch.output_file_id is None
    for result in results:
        assert not result["success"] and result["status"] == 500
        assert result["error_type"] == "server_error" and result["is_retriable"]
        assert result["error"].startswith("500 Internal Server Error: The server had an error")


def warnings_of(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith(event)
    ]


async def test_custom_ids_this_run_did_not_write_are_ignored_with_a_warning(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genai_coroutines.responses")
    emulator.faults.schedule("batch_lines", "line-odd-ids", times=2)  # "²0-…", "999…9990-…"
    done = await ResponsesProcessor().process_batch(make_request(emulator, 10), batch_api=fast())
    assert done["total_success"] == 10, "no paid result is lost to a line that is not ours"
    assert all(r["attempts"] == 1 for r in done["results"])
    assert set(executions(emulator).values()) == {1}
    (warning,) = warnings_of(caplog, "batch_api_foreign_lines")
    assert f"batch={done['results'][0]['batch_id']}" in warning and "count=4" in warning
    assert len(warning) < 400, "a 5,000-digit custom_id is not logged whole"


async def test_lines_bought_again_are_logged_with_the_batch_the_count_and_the_reason(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genai_coroutines.responses")
    faults = emulator.faults
    faults.schedule("batch_lines", "line-body-not-json", times=2)
    faults.schedule("batch_lines", "line-not-json")
    faults.schedule("batch_lines", "line-missing", times=3)
    results = (
        await ResponsesProcessor().process_batch(make_request(emulator, 10), batch_api=fast())
    )["results"]
    assert all(r["success"] for r in results)
    assert [r["attempts"] for r in results] == [2] * 6 + [1] * 4
    first = results[9]["batch_id"]
    (resend,) = warnings_of(caplog, "batch_api_resend")
    assert f"batch={first}" in resend and "count=6" in resend
    assert "2 x 200 OK but the body is not a complete response" in resend
    assert f"4 x batch {first} ended completed without a line for this request" in resend
    (unreadable,) = warnings_of(caplog, "batch_api_unreadable_lines")
    assert f"batch={first}" in unreadable and "count=1" in unreadable


def test_lines_are_judged_by_their_status_code_and_body() -> None:
    body = {"id": "resp_1", "object": "response", "status": "completed", "output": []}
    ok = judge({"custom_id": "0-a", "response": {"status_code": 200, "body": body}}, "")
    assert not isinstance(ok, Exception) and hasattr(ok, "value")
    zero = judge({"response": {"status_code": 0, "body": None}, "error": None}, "")
    assert getattr(zero, "retriable", None) is True and "status_code 0" in str(zero)
    throttled = judge(
        {"response": {"status_code": 429, "body": {"error": {"message": "Slow down"}}}}, ""
    )
    assert getattr(throttled, "retriable", None) is True
    refused = judge(
        {"response": {"status_code": 400, "body": {"error": {"message": "No", "param": "x"}}}},
        "",
    )
    assert getattr(refused, "retriable", None) is False and getattr(refused, "param", "") == "x"
    not_a_response = judge({"response": {"status_code": 200, "body": ["nope"]}}, "")
    assert getattr(not_a_response, "error_type", "") == "invalid_response"
    failed = judge(
        {"response": {"status_code": 200, "body": {**body, "status": "failed", "error": {}}}}, ""
    )
    assert getattr(failed, "error_type", "") in ("server_error", "response_failed")
    expired = judge({"response": None, "error": {"code": "batch_expired", "message": "late"}}, "")
    assert getattr(expired, "retriable", None) is True and "never ran" in str(expired)
    assert getattr(judge({}, ""), "retriable", None) is True


# -- limits ----------------------------------------------------------------------------------


async def test_files_wait_for_room_under_max_enqueued_tokens(emulator: Emulator) -> None:
    request = make_request(emulator, 300)
    per_item = request._template.estimate(prompts(1)[0])  # text prompts of equal length
    limit = 100 * per_item + per_item // 2
    emulator.config.batch_enqueued_token_limit = limit  # the API would fail a batch past it
    results = (
        await ResponsesProcessor().process_batch(request, batch_api=fast(max_enqueued_tokens=limit))
    )["results"]
    assert all(r["success"] for r in results)
    assert emulator.stats.batches_created == 3 and len({r["batch_id"] for r in results}) == 3


async def test_an_enqueued_token_limit_failure_is_sent_again_once_a_batch_ends(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    request = make_request(emulator, 200)
    per_item = request._template.estimate(prompts(1)[0])
    emulator.config.batch_enqueued_token_limit = 120 * per_item
    emulator.config.batch_seconds_per_line = 0.001
    results = (
        await ResponsesProcessor().process_batch(request, batch_api=fast(max_requests_per_file=100))
    )["results"]
    assert all(r["success"] for r in results)
    failed = [b for b in await all_batches(client) if b.status == "failed"]
    assert failed and failed[0].errors and failed[0].errors.data
    assert failed[0].errors.data[0].code == "token_limit_exceeded"
    assert set(executions(emulator).values()) == {1}


async def test_two_runs_on_one_limits_store_share_one_enqueued_token_allowance(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    """Two processors on one store stand for two processes: each alone would enqueue two
    files at once, the API admits two in all, and the store's allowance holds them to
    that (no batch is refused for its tokens). Their leases are all given back."""
    per_item = make_request(emulator, 1)._template.estimate(prompts(1)[0])
    limit = 25 * per_item  # two files of 10 lines fit, three do not
    emulator.config.batch_enqueued_token_limit = limit
    emulator.config.batch_seconds_per_line = 0.002
    store = MemoryStore()
    options = fast(max_requests_per_file=10, max_enqueued_tokens=limit)
    runs = await asyncio.gather(
        *(
            ResponsesProcessor(limits=KeyLimits(store)).process_batch(
                make_request(emulator, 40), batch_api=options
            )
            for _ in range(2)
        )
    )
    assert all(run["total_success"] == 40 for run in runs)
    refused = [
        batch
        for batch in await all_batches(client)
        if batch.errors
        and batch.errors.data
        and batch.errors.data[0].code == "token_limit_exceeded"
    ]
    assert refused == [] and emulator.stats.batches_created == 8
    endpoint = emulator.openai_base_url.rstrip("/") + "/batches"
    key = limit_key(endpoint, emulator.config.openai_api_key, MODEL)
    assert await store.lease(key, limit, limit, 1) is not None, "every lease was given back"


async def test_uploads_creations_and_polls_go_through_the_retry_policy(
    emulator: Emulator,
) -> None:
    emulator.faults.schedule("files_upload", "503", times=2)
    emulator.faults.schedule("batches_create", "500", times=1)
    emulator.faults.schedule("batches_poll", "502", times=2)
    emulator.faults.schedule("files_read", "reset", times=1)
    results = (
        await ResponsesProcessor().process_batch(make_request(emulator, 10), batch_api=fast())
    )["results"]
    assert all(r["success"] for r in results)
    stats = emulator.stats
    assert (stats.files_uploaded, stats.batches_created) == (1, 1)
    assert stats.requests["files_upload 503"] == 2 and stats.requests["batches_create 500"] == 1


async def test_a_create_whose_answer_was_lost_is_found_not_created_twice(
    emulator: Emulator,
) -> None:
    emulator.config.slow_seconds = 0.3  # the batch is created after the client gave up
    emulator.faults.schedule("batches_create", "slow", times=1)
    request = make_request(
        emulator, 5, timeout_secs=0.15, retry_delay_min_ms=400, retry_delay_max_ms=400
    )
    results = (await ResponsesProcessor().process_batch(request, batch_api=fast()))["results"]
    assert all(r["success"] for r in results)
    assert emulator.stats.batches_created == 1, "the retry listed the batches and found it"


def creation_waits(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "batch_api_creation_limit" in r.getMessage()]


async def test_batches_created_per_hour_are_one_count_in_the_shared_limits_store(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processors stand for two processes: the hour's creations are counted in the
    limits store they share, not per processor or per process. The store's clock is moved
    on by the test so that the first run's creations leave the hour 0.3 s later."""
    shift = 0.0
    shared = MemoryStore(clock=lambda: time.monotonic() + shift)
    options = fast(max_requests_per_file=1, max_batches_per_hour=2)
    caplog.set_level(logging.WARNING, logger="genai_coroutines.responses")
    first_started = time.monotonic()
    first = await ResponsesProcessor(limits=KeyLimits(shared)).process_batch(
        make_request(emulator, 2), batch_api=options
    )
    assert first["total_success"] == 2 and emulator.stats.batches_created == 2
    assert not creation_waits(caplog)
    shift = HOUR - 0.3 - (time.monotonic() - first_started)

    second_started = time.monotonic()
    second = await ResponsesProcessor(limits=KeyLimits(shared)).process_batch(
        make_request(emulator, 1), batch_api=options
    )
    assert second["total_success"] == 1 and emulator.stats.batches_created == 3
    assert time.monotonic() - second_started >= 0.25, "it waited for the first to leave the hour"
    assert len(waits := creation_waits(caplog)) == 1 and "per_hour=2" in waits[0]

    caplog.clear()  # a store of its own counts an hour of its own
    own = await ResponsesProcessor(limits=KeyLimits(MemoryStore())).process_batch(
        make_request(emulator, 1), batch_api=options
    )
    assert own["total_success"] == 1 and not creation_waits(caplog)


async def journal_a_file(
    emulator: Emulator, client: openai.AsyncOpenAI, journal: Path, request: ResponsesRequest
) -> str:
    """What a run killed right after its upload leaves: the file at OpenAI, in the journal."""
    path = DirectAdapter(request, cast(RateLimiter, None))
    members, data = [], b""
    for index, prompt in enumerate(cast(list[str], request.user_prompts)):
        prepared = await path.prepare(index, prompt)
        assert isinstance(prepared, Prepared)
        line_id = custom_id(StageKey(index), prepared.body)
        members.append((StageKey(index), request_digest(prepared.body), line_id, 0, None))
        data += batch_line(line_id, prepared.body)
    uploaded = await client.files.create(file=("killed.jsonl", data), purpose="batch")
    with Journal(journal, "responses") as records:
        records.record_group(uploaded.id, members, tokens=len(members))
    return uploaded.id


async def test_a_file_uploaded_before_a_crash_gets_its_batch_without_a_second_upload(
    emulator: Emulator, client: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    journal, request = tmp_path / "batch.journal", make_request(emulator, 8)
    file_id = await journal_a_file(emulator, client, journal, request)
    done = await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal)
    assert done["total_success"] == 8
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)
    (batch,) = await all_batches(client)
    assert batch.input_file_id == file_id


async def test_a_file_journaled_by_a_version_without_input_digests_gets_its_batch(
    emulator: Emulator, client: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    """Group lines journaled before they kept input digests (no such column) resume as the
    crash above does, their answers journaled without one."""
    journal, request = tmp_path / "batch.journal", make_request(emulator, 8)
    await journal_a_file(emulator, client, journal, request)
    db = sqlite3.connect(journal)
    db.execute("ALTER TABLE group_lines DROP COLUMN input_digest")
    db.commit()
    db.close()
    done = await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal)
    assert done["total_success"] == 8
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)
    db = sqlite3.connect(journal)
    (kept,) = db.execute("SELECT COUNT(*) FROM items WHERE input_digest IS NOT NULL").fetchone()
    db.close()
    assert kept == 0


async def test_a_batch_created_before_a_crash_journaled_it_is_found_not_created_again(
    emulator: Emulator, client: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    journal, request = tmp_path / "batch.journal", make_request(emulator, 8)
    file_id = await journal_a_file(emulator, client, journal, request)
    created = await client.batches.create(
        input_file_id=file_id, endpoint="/v1/responses", completion_window="24h"
    )
    done = await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal)
    assert done["total_success"] == 8
    assert {r["batch_id"] for r in done["results"]} == {created.id}
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)
    assert set(executions(emulator).values()) == {1}


async def test_changed_prompts_leave_the_journaled_file_which_is_not_batched(
    emulator: Emulator, client: openai.AsyncOpenAI, tmp_path: Path
) -> None:
    journal, request = tmp_path / "batch.journal", make_request(emulator, 8)
    stale = await journal_a_file(emulator, client, journal, request)
    texts = [f"A new question {i}." for i in range(4)] + prompts(8)[4:]
    changed = make_request(emulator, 8, user_prompts=texts)
    done = await ResponsesProcessor().process_batch(changed, batch_api=fast(), journal=journal)
    assert done["total_success"] == 8
    batches = await all_batches(client)
    assert stale not in {b.input_file_id for b in batches}, "its stale lines are never run"
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (3, 2)
    assert len(executions(emulator)) == 8 and set(executions(emulator).values()) == {1}
    sent = set()
    for batch in batches:
        sent |= {line["body"]["input"] for line in await file_lines(client, batch.input_file_id)}
    assert sent == set(texts)


async def test_a_bad_key_fails_every_item_at_the_upload(emulator: Emulator) -> None:
    request = make_request(emulator, 5, api_key="sk-wrong")
    results = (await ResponsesProcessor().process_batch(request, batch_api=fast()))["results"]
    assert all(r["error_type"] == "authentication_error" for r in results)
    assert emulator.stats.files_uploaded == 0


# -- journal, kill -9, Ctrl-C ----------------------------------------------------------------


async def test_items_failed_at_their_upload_are_journaled_under_their_digests_from_the_spool(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The driver lets a line's digest go once its spool holds it; a file whose upload
    failed was never journaled, so each failure is journaled under the digest the spool
    hands back: the very one a rerun journals its answer under, and nothing is reused."""
    journal = tmp_path / "batch.journal"
    bad = make_request(emulator, 5, api_key="sk-wrong")
    failed = await ResponsesProcessor().process_batch(bad, batch_api=fast(), journal=journal)
    assert all(r["error_type"] == "authentication_error" for r in failed["results"])

    def digests() -> list[bytes]:
        db = sqlite3.connect(journal)
        try:
            return [row[0] for row in db.execute("SELECT digest FROM items ORDER BY idx")]
        finally:
            db.close()

    journaled = digests()
    assert len(journaled) == 5 and all(journaled)
    again = await ResponsesProcessor().process_batch(
        make_request(emulator, 5), batch_api=fast(), journal=journal
    )
    assert again["total_success"] == 5
    assert not any(r.get("from_journal") for r in again["results"])
    assert digests() == journaled


async def test_the_journal_records_files_and_batches_and_a_rerun_reuses_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    request = make_request(emulator, 50)
    first = await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal)
    assert first["total_success"] == 50
    again = await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal)
    assert all(r["from_journal"] for r in again["results"])
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)
    with Journal(journal, "responses") as done:
        assert len(done.results()) == 50
    db = sqlite3.connect(journal)
    (files,) = db.execute("SELECT COUNT(*) FROM group_files").fetchone()
    (jobs,) = db.execute("SELECT COUNT(*) FROM group_jobs").fetchone()
    (waiting,) = db.execute("SELECT COUNT(*) FROM group_lines").fetchone()
    db.close()
    assert (files, jobs, waiting) == (1, 1, 0), "every item left its group with its result"


async def test_results_of_the_sync_path_are_reused_by_the_batch_path(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    for name, value in NO_LIMITS.items():
        setattr(emulator.config, name, value)
    await ResponsesProcessor().process_batch(make_request(emulator, 10), journal=journal)
    results = (
        await ResponsesProcessor().process_batch(
            make_request(emulator, 15), batch_api=fast(), journal=journal
        )
    )["results"]
    assert [bool(r.get("from_journal")) for r in results] == [True] * 10 + [False] * 5
    assert len(executions(emulator)) == 5


async def test_a_batch_that_cannot_be_polled_is_asked_again_by_the_rerun_not_resent(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal, request = tmp_path / "batch.journal", make_request(emulator, 10, max_retries=1)
    emulator.faults.schedule("batches_poll", "503", times=2)
    first = (await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal))[
        "results"
    ]
    assert all(not r["success"] and r["batch_pending"] for r in first)
    assert all("rerun with the same journal" in r["error"] for r in first)
    again = (await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal))[
        "results"
    ]
    assert all(r["success"] for r in again)
    assert {r["batch_id"] for r in again} == {first[0]["batch_id"]}
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)


async def test_a_batch_past_max_wait_secs_ends_poll_timeout_and_the_rerun_collects_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.batch_seconds_per_line = 0.1
    journal, request = tmp_path / "batch.journal", make_request(emulator, 5)
    waited = fast(max_wait_secs=0.05)
    first = (await ResponsesProcessor().process_batch(request, batch_api=waited, journal=journal))[
        "results"
    ]
    assert {r["error_type"] for r in first} == {"poll_timeout"}
    assert all(r["batch_pending"] and "max_wait_secs (0.05s)" in r["error"] for r in first)
    again = (await ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal))[
        "results"
    ]
    assert all(r["success"] for r in again)
    assert {r["batch_id"] for r in again} == {first[0]["batch_id"]}
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)


async def interrupt_after_the_batch_is_created(
    request: ResponsesRequest, journal: Path, batches: int = 1
) -> str:
    """Run `request` on the Batch API path until its batch is journaled, then cancel it
    (what Ctrl-C does inside `asyncio.run`): the batch runs on. Returns its id."""
    task = asyncio.ensure_future(
        ResponsesProcessor().process_batch(request, batch_api=fast(), journal=journal)
    )
    deadline = asyncio.get_running_loop().time() + 10
    while len(journal_jobs(journal)) < batches:
        assert not task.done() and asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return journal_jobs(journal)[0][0]


async def test_a_rerun_without_batch_api_collects_the_journaled_batch_instead_of_paying_twice(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.batch_seconds_per_line = 0.005  # the batch runs on after the interrupt
    journal = tmp_path / "batch.journal"
    request = make_request(emulator, 60, poll_interval_secs=0.01)
    batch_id = await interrupt_after_the_batch_is_created(request, journal)
    for other in ({"background": True}, {"stream": True}):  # other bodies: refused, unsent
        with pytest.raises(ValueError, match=f"{batch_id}.*rerun with batch_api=True"):
            await ResponsesProcessor().process_batch(
                make_request(emulator, 60, **other), journal=journal
            )
    caplog.set_level(logging.WARNING, logger="genai_coroutines.responses")
    again = await ResponsesProcessor().process_batch(request, journal=journal)
    assert again["total_success"] == 60
    assert emulator.stats.total("responses") == 0, "nothing was POSTed synchronously"
    assert len(executions(emulator)) == 60 and set(executions(emulator).values()) == {1}
    assert {r["batch_id"] for r in again["results"]} == {batch_id}
    assert (emulator.stats.files_uploaded, emulator.stats.batches_created) == (1, 1)
    (collecting,) = warnings_of(caplog, "batch_api_collect")
    assert batch_id in collecting


async def test_a_rerun_without_batch_api_sends_synchronously_only_what_its_batch_does_not_answer(
    emulator: Emulator, tmp_path: Path
) -> None:
    for name, value in NO_LIMITS.items():
        setattr(emulator.config, name, value)
    emulator.config.batch_seconds_per_line = 0.005
    emulator.config.batch_line_failure_rate = 0.2
    journal = tmp_path / "batch.journal"
    batch_id = await interrupt_after_the_batch_is_created(make_request(emulator, 40), journal)
    longer = make_request(emulator, 60, poll_interval_secs=0.01)
    results = (await ResponsesProcessor().process_batch(longer, journal=journal))["results"]
    assert all(r["success"] for r in results)
    collected = [r for r in results[:40] if r.get("batch_id") == batch_id]
    failed_in_batch = [r for r in results[:40] if r.get("batch_id") != batch_id]
    assert failed_in_batch, "the seeded 20% failed some lines"
    assert all(r["attempts"] == 2 for r in failed_in_batch), "one batch, then one POST"
    assert all(r["attempts"] == 1 for r in collected)
    assert emulator.stats.total("responses") == len(failed_in_batch) + 20
    assert emulator.stats.batches_created == 1, "what the batch failed is not batched again"
    assert set(executions(emulator).values()) == {1}


def journal_jobs(path: Path) -> list[tuple[str, int]]:
    """(batch id, cancelled) of every batch journaled, read without writing."""
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT job_id, cancelled FROM group_jobs").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return []


def cli_args(emulator: Emulator, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--log-level",
        "INFO",
        "responses",
        str(tmp_path / "prompts.jsonl"),
        "--model",
        MODEL,
        "--base-url",
        emulator.openai_base_url,
        "--output",
        str(tmp_path / "out.jsonl"),
        "--journal",
        str(tmp_path / "batch.journal"),
        "--batch-api",
        "--batch-poll-interval",
        "0.02",
        *extra,
    ]


async def test_kill_9_after_the_second_batch_then_resume_creates_3_batches_and_uploads_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    texts = prompts(1200)
    write_prompts(tmp_path / "prompts.jsonl", texts)
    request = make_request(emulator, 1)
    per_item = request._template.estimate(texts[0]) - request._template.max_output
    emulator.config.batch_seconds_per_line = 0.002  # a batch of 500 runs for a second
    journal, output = tmp_path / "batch.journal", tmp_path / "out.jsonl"
    args = cli_args(
        emulator,
        tmp_path,
        "--system",
        "Be brief.",
        "--batch-max-requests-per-file",
        "500",
        "--batch-max-enqueued-tokens",  # two files fit; the third waits for a batch to end
        str(1100 * per_item),
    )

    first = await start(emulator, tmp_path, *args)
    await until(first, lambda: len(journal_jobs(journal)) == 2, "the second batch was created")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    stats = emulator.stats
    assert (stats.files_uploaded, stats.batches_created) == (2, 2)
    assert not output_lines(output)

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    assert (stats.files_uploaded, stats.batches_created) == (3, 3), "no file uploaded twice"
    assert len(executions(emulator)) == 1200 and set(executions(emulator).values()) == {1}
    records = output_lines(output)
    assert sorted(r["index"] for r in records) == list(range(1200)), "every item once"
    assert all(r["success"] and r["service_tier"] == "batch" for r in records)
    assert len({r["batch_id"] for r in records}) == 3
    assert "tokens:" in err and "items: 1200 (1200 ok" in err


async def test_kill_9_between_an_upload_and_its_journal_line_then_resume_uploads_nothing_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The emulator stores the first upload and never answers it (`files_stored`), so the
    run is killed with its file at the API and only the upload's intent journaled; the
    resume lists the files, finds it by name (its digest) and size, and batches it."""
    write_prompts(tmp_path / "prompts.jsonl", prompts(30))
    emulator.faults.schedule("files_stored", "hang", times=1)
    args = cli_args(emulator, tmp_path, "--batch-max-requests-per-file", "20")
    first = await start(emulator, tmp_path, *args)
    stats = emulator.stats
    await until(first, lambda: stats.files_uploaded == 1, "the first file was stored")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    assert stats.batches_created == 0 and not journal_jobs(tmp_path / "batch.journal")

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    assert stats.files_uploaded == 2 and set(stats.files_by_digest.values()) == {1}, (
        "two files, each uploaded once"
    )
    assert stats.batches_created == 2 and "batch_api_file_found" in err
    records = output_lines(tmp_path / "out.jsonl")
    assert sorted(r["index"] for r in records) == list(range(30))
    assert all(r["success"] for r in records)


async def test_ctrl_c_leaves_the_batches_running_and_resume_collects_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", prompts(60))
    emulator.config.batch_seconds_per_line = 0.02  # 1.2 seconds of work
    journal = tmp_path / "batch.journal"
    args = cli_args(emulator, tmp_path)
    process = await start(emulator, tmp_path, *args)
    await until(process, lambda: len(journal_jobs(journal)) == 1, "the batch was created")
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 10) == 130
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "batch_api_interrupted" in stderr and "action=left_running" in stderr
    assert "--resume" in stderr
    ((batch_id, cancelled),) = journal_jobs(journal)
    assert not cancelled
    assert emulator.openai.batches.batches[batch_id].status in (
        "validating",
        "in_progress",
        "finalizing",
    ), "still running at OpenAI"

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    assert emulator.stats.batches_created == 1 and emulator.stats.files_uploaded == 1
    records = output_lines(tmp_path / "out.jsonl")
    assert sorted(r["index"] for r in records) == list(range(60))
    assert {r["batch_id"] for r in records} == {batch_id}


async def test_cancel_on_interrupt_cancels_and_resume_sends_only_what_never_ran(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", prompts(60))
    emulator.config.batch_seconds_per_line = 0.02
    journal = tmp_path / "batch.journal"
    args = cli_args(emulator, tmp_path, "--cancel-on-interrupt")
    process = await start(emulator, tmp_path, *args)
    batches = emulator.openai.batches.batches

    def running() -> bool:
        jobs = journal_jobs(journal)
        return bool(jobs) and batches[jobs[0][0]].counts["completed"] >= 5

    await until(process, running, "the batch ran a few lines")
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 10) == 130
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "action=cancelled" in stderr
    ((batch_id, cancelled),) = journal_jobs(journal)
    assert cancelled and batches[batch_id].status in ("cancelling", "cancelled")

    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    records = output_lines(tmp_path / "out.jsonl")
    assert sorted(r["index"] for r in records) == list(range(60))
    assert set(executions(emulator).values()) == {1}, "what ran before the cancel was kept"
    assert emulator.stats.batches_created == 2


async def test_batch_api_flags_need_batch_api(emulator: Emulator, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl", prompts(2))
    code, _, err = await run(
        emulator,
        "responses",
        str(tmp_path / "prompts.jsonl"),
        "--model",
        MODEL,
        "--batch-poll-interval",
        "1",
    )
    assert code == 2 and "--batch-poll-interval: only with --batch-api" in err


# -- progress, options ------------------------------------------------------------------------


async def test_progress_shows_each_batch_state_and_counts(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    notes: list[Any] = []
    real = Progress.note

    def recording(self: Progress, **fields: Any) -> None:
        notes.append(fields.get("batches"))
        real(self, **fields)

    monkeypatch.setattr(Progress, "note", recording)
    caplog.set_level(logging.INFO, logger="genai_coroutines.responses")
    await ResponsesProcessor().process_batch(
        make_request(emulator, 30), batch_api=fast(), progress=True
    )
    shown = [note for note in notes if note]
    assert any("validating" in note for note in shown)
    assert any("completed 30/30" in note for note in shown)
    statuses = [r.getMessage() for r in caplog.records if "batch_api_status" in r.getMessage()]
    assert any("status=completed completed=30 failed=0 total=30" in s for s in statuses)


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"poll_interval_secs": 0}, ValueError, "poll_interval_secs"),
        ({"poll_interval_secs": "1"}, TypeError, "poll_interval_secs"),
        ({"completion_window": "1h"}, ValueError, "completion_window"),
        ({"max_requests_per_file": 50_001}, ValueError, "max_requests_per_file"),
        ({"max_requests_per_file": 0}, ValueError, "max_requests_per_file"),
        ({"max_bytes_per_file": 300 * 2**20}, ValueError, "max_bytes_per_file"),
        ({"max_enqueued_tokens": 0}, ValueError, "max_enqueued_tokens"),
        ({"metadata": {"a": 1}}, TypeError, "metadata"),
        ({"max_batches_per_hour": 0}, ValueError, "max_batches_per_hour"),
        ({"max_batches_per_hour": 1.5}, TypeError, "max_batches_per_hour"),
        ({"flush_idle_secs": 0}, ValueError, "flush_idle_secs"),
        ({"flush_idle_secs": "1"}, TypeError, "flush_idle_secs"),
        ({"flush_max_wait_secs": -1.0}, ValueError, "flush_max_wait_secs"),
        ({"flush_max_wait_secs": None}, TypeError, "flush_max_wait_secs"),
        ({"max_wait_secs": 0}, ValueError, "max_wait_secs"),
        ({"max_wait_secs": "3600"}, TypeError, "max_wait_secs"),
        # declared once, on the request (`ResponsesRequest.cancel_on_interrupt`)
        ({"cancel_on_interrupt": True}, TypeError, "cancel_on_interrupt"),
    ],
)
def test_batch_api_options_are_checked_at_construction(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        BatchAPI(**options)


async def test_batch_api_refuses_what_a_batch_cannot_do(emulator: Emulator) -> None:
    assert BatchAPI.of(True) == BatchAPI() and BatchAPI.of(False) is None
    with pytest.raises(TypeError, match="batch_api"):
        BatchAPI.of("yes")
    with pytest.raises(ValueError, match="stream=True"):
        await ResponsesProcessor().process_batch(
            make_request(emulator, 1, stream=True), batch_api=True
        )


def test_process_batch_sync_runs_the_batch_api_path(emulator_config: EmulatorConfig) -> None:
    """No loop of its own: the emulator runs in a thread's loop, the call blocks this one."""
    loop = asyncio.new_event_loop()
    emulator = Emulator(emulator_config)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(10)
    try:
        request = make_request(emulator, 3)
        done = ResponsesProcessor().process_batch_sync(request, batch_api=fast())
        assert done["total_success"] == 3
        assert [r["index"] for r in done["results"]] == [0, 1, 2]
    finally:
        asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def test_batch_lines_carry_planned_prompt_cache_keys(emulator: Emulator) -> None:
    """`prompt_cache_key="auto"` plans the Batch API's lines as the synchronous requests:
    40 lines sharing a long prefix, 3 keys of at most 15 lines, none spilled."""
    emulator.config.prompt_caching = True
    request = make_request(
        emulator, 40, system_prompt="Be brief and exact. " * 260, prompt_cache_key="auto"
    )
    out = await ResponsesProcessor().process_batch(request, batch_api=fast())
    assert out["total_success"] == 40
    assert emulator.stats.prompt_cache_lookups == {"miss": 3, "hit": 37}


# -- partly filled files go out after a short wait --------------------------------------------


async def slow_prompts(emulator: Emulator, first: int, pause: float) -> AsyncIterator[str]:
    """`first` prompts, then more every `pause` seconds (none: at once) until a batch exists,
    then one last prompt. Fails after 5 s without a batch: its lines waited for the input's
    end, which never comes."""
    texts = prompts(first + 1000)
    for text in texts[:first]:
        yield text
    deadline = asyncio.get_running_loop().time() + 5.0
    sent = first
    while emulator.stats.batches_created == 0:
        assert asyncio.get_running_loop().time() < deadline, "no batch before the input ended"
        await asyncio.sleep(pause or 0.005)
        if pause:
            yield texts[sent]
            sent += 1
    yield texts[sent]


@pytest.mark.parametrize(
    ("options", "first", "pause"),
    [
        ({"flush_idle_secs": 0.05}, 3, 0.0),  # no new line for 0.05 s
        ({"flush_max_wait_secs": 0.2}, 1, 0.01),  # a line every 0.01 s: never idle for 30 s
    ],
)
async def test_a_partly_filled_file_goes_out_without_waiting_for_the_input_end(
    emulator: Emulator, options: dict[str, Any], first: int, pause: float
) -> None:
    """Lines that come slowly go out after a short wait (idle, or since the file's first
    line), and the line that comes after that batch was created goes in a file of its own."""
    request = make_request(emulator, 0, user_prompts=slow_prompts(emulator, first, pause))
    out = await ResponsesProcessor().process_batch(request, batch_api=fast(**options))
    results = out["results"]
    assert out["total_success"] == len(results) > first
    assert emulator.stats.batches_created == 2
    first_batch = results[0]["batch_id"]
    assert [r["batch_id"] == first_batch for r in results[:first]] == [True] * first
    assert results[-1]["batch_id"] != first_batch, "the last line went out at the input's end"


async def test_lines_held_back_for_an_upload_go_in_in_turn(emulator: Emulator) -> None:
    """Past `UNSENT_FILES` files of lines not yet uploaded, lines wait for an upload and go
    in first come, first served: a worker whose items go straight into the file must not
    take every place an upload frees while a line held back earlier stays back (to the
    input's end, its journal digest keeping the index range behind it in memory). So each
    file holds lines close together in the input."""
    per_file, concurrency = 5, 10
    request = make_request(emulator, 150, max_concurrent_requests=concurrency)
    out = await ResponsesProcessor().process_batch(
        request, batch_api=fast(max_requests_per_file=per_file)
    )
    assert out["total_success"] == 150
    files: dict[str, list[int]] = {}
    for result in out["results"]:
        files.setdefault(result["batch_id"], []).append(result["index"])
    spans = sorted(max(indices) - min(indices) for indices in files.values())
    assert spans[-1] < per_file + 2 * concurrency, spans
