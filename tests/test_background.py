"""Background mode (`ResponsesRequest(background=True)`) against the emulator.

What crossed the wire is counted by the emulator: `responses_by_digest` counts POSTs per
input (never GET polls), `requests["responses_poll <status>"]` the polls,
`completed_by_digest` the answers produced (what was paid for). The kill -9 tests run
the real CLI in a subprocess and print the figures the issue asks for (`-s` shows them).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from genai_coroutines import ResponsesProcessor, ResponsesRequest
from genai_coroutines.emulator import Emulator
from genai_coroutines.responses.background import BackgroundAdapter
from tests.responses_support import TEXT, request_for, sent_bodies
from tests.test_cli import (
    assert_each_index_once,
    journal_rows,
    output_lines,
    prompt_digest,
    responses_args,
    run,
    start,
    until,
    write_prompts,
)

FAST = {"background": True, "poll_interval_secs": 0.01}


def posts(emulator: Emulator) -> int:
    return sum(emulator.stats.responses_by_digest.values())


async def background(emulator: Emulator, prompts: Any, **options: Any) -> dict[str, Any]:
    request = request_for(emulator, prompts, **{**FAST, **options})
    return await ResponsesProcessor().process_batch(request)


async def test_background_posts_background_and_store_then_polls(emulator: Emulator) -> None:
    emulator.config.background_queue_seconds = 0.02
    prompts = [f"prompt {i}" for i in range(12)]
    out = await background(emulator, prompts, max_concurrent_requests=4)
    assert out["total_success"] == 12
    for body in sent_bodies(emulator):
        assert body["background"] is True and body["store"] is True
    assert set(emulator.stats.responses_by_digest.values()) == {1} and posts(emulator) == 12
    assert emulator.stats.requests["responses_poll 200"] >= 12
    for result, prompt in zip(out["results"], prompts, strict=True):
        response = orjson.loads(result["raw_response"])
        assert response["status"] == "completed" and response["background"] is True
        assert prompt in response["output"][0]["content"][0]["text"]
        assert result["attempts"] == 1 and result["usage"]["total_tokens"] > 0


def test_store_false_with_background_is_refused_before_any_request() -> None:
    with pytest.raises(ValueError, match="background=True needs store"):
        ResponsesRequest(
            api_key="sk-x",
            base_url="http://127.0.0.1:9/v1",  # nothing listens there: nothing could be sent
            model="gpt-4o-mini",
            system_prompt="",
            user_prompts=["x"],
            response_format=TEXT,
            background=True,
            store=False,
        )
    with pytest.raises(ValueError, match="stream"):
        ResponsesRequest(
            api_key="sk-x",
            model="gpt-4o-mini",
            system_prompt="",
            user_prompts=["x"],
            response_format=TEXT,
            background=True,
            stream=True,
        )


async def test_store_false_with_background_is_a_cli_usage_error(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", ["x"])
    args = responses_args(emulator, tmp_path, "--background", "--no-store")
    code, _, err = await run(emulator, *args)
    assert code == 2 and "store" in err
    assert emulator.stats.total("responses") == 0 and not (tmp_path / "out.jsonl").exists()


async def test_a_poll_failing_with_503_is_polled_again_never_posted_again(
    emulator: Emulator,
) -> None:
    emulator.faults.schedule("responses_poll", "503", times=2)
    [result] = (await background(emulator, ["only one"]))["results"]
    assert result["success"] and result["attempts"] == 1
    assert emulator.stats.requests["responses_poll 503"] == 2
    assert posts(emulator) == 1 and emulator.stats.requests["responses 200"] == 1


async def test_polls_failing_too_often_end_the_item_with_one_post(emulator: Emulator) -> None:
    emulator.faults.schedule("responses_poll", "503", times=3)
    [result] = (await background(emulator, ["one"], max_retries=2))["results"]
    assert not result["success"] and "failed 3 times in a row" in result["error"]
    assert posts(emulator) == 1


async def test_a_failed_response_is_sent_again_and_ends_with_the_apis_message(
    emulator: Emulator,
) -> None:
    emulator.config.background_failure_rate = 1.0  # every response ends `failed`, server_error
    [result] = (await background(emulator, ["doomed"], max_retries=2))["results"]
    assert not result["success"] and result["error_type"] == "server_error"
    assert result["error"].startswith("Response failed: ") and result["code"] == "server_error"
    assert result["attempts"] == 3 and posts(emulator) == 3  # retriable: POSTed again


async def test_an_expired_response_is_an_error_with_the_apis_message(emulator: Emulator) -> None:
    emulator.config.stored_response_ttl = 0.0  # gone before the first poll
    [result] = (await background(emulator, ["too late"], poll_interval_secs=0.02))["results"]
    assert not result["success"] and result["error_type"] == "not_found_error"
    assert "Response with id 'resp_" in result["error"] and "not found" in result["error"]
    assert result["status"] == 404 and posts(emulator) == 1


async def _interrupt_midway(
    emulator: Emulator, request: ResponsesRequest, journal: Path, *, running: int
) -> list[dict[str, Any]]:
    """Run the batch until `running` responses are journaled as started, then cancel it
    (what Ctrl-C does inside `asyncio.run`); returns the results it yielded."""
    results: list[dict[str, Any]] = []

    async def consume() -> None:
        async for result in ResponsesProcessor().stream(request, journal=journal):
            results.append(result)

    task = asyncio.ensure_future(consume())
    deadline = asyncio.get_running_loop().time() + 10
    while sum(1 for _, url, result in journal_rows(journal) if url and not result) < running:
        assert not task.done() and asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return results


async def test_interrupted_responses_keep_running_and_resume_collects_them(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.background_queue_seconds = 0.3
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(6)]
    request = request_for(emulator, prompts, **FAST, max_concurrent_requests=6)
    with caplog.at_level(logging.WARNING, logger="genai_coroutines.responses"):
        await _interrupt_midway(emulator, request, journal, running=6)
    left = [r for r in caplog.records if "left_running" in r.getMessage()]
    assert len(left) == 6 and all("resp_" in r.getMessage() for r in left)
    assert emulator.stats.total("responses_cancel") == 0
    assert posts(emulator) == 6

    out = await ResponsesProcessor().process_batch(request, journal=journal)
    assert out["total_success"] == 6
    assert posts(emulator) == 6, "resume polled the journaled responses, it did not POST"
    assert set(emulator.stats.completed_by_digest.values()) == {1}


async def test_a_rerun_without_background_warns_how_many_started_responses_it_abandons(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.background_queue_seconds = 0.3
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(4)]
    await _interrupt_midway(emulator, request_for(emulator, prompts, **FAST), journal, running=4)
    with caplog.at_level(logging.WARNING, logger="genai_coroutines.responses"):
        out = await ResponsesProcessor().process_batch(
            request_for(emulator, prompts), journal=journal
        )
    assert out["total_success"] == 4
    (warning,) = [
        r.getMessage() for r in caplog.records if "background_abandoned" in r.getMessage()
    ]
    assert "responses=4" in warning and "background=True" in warning


async def test_cancel_on_interrupt_cancels_the_running_responses(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.background_queue_seconds = 0.5
    journal = tmp_path / "batch.journal"
    prompts = [f"prompt {i}" for i in range(4)]
    request = request_for(emulator, prompts, **FAST, cancel_on_interrupt=True)
    await _interrupt_midway(emulator, request, journal, running=4)
    assert emulator.stats.requests["responses_cancel 200"] == 4
    assert sum(emulator.stats.completed_by_digest.values()) == 0, "nothing was produced"


async def test_a_resumed_response_that_expired_is_sent_afresh(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.background_queue_seconds = 0.3
    journal = tmp_path / "batch.journal"
    request = request_for(emulator, ["resume me"], **FAST)
    await _interrupt_midway(emulator, request, journal, running=1)
    for kept in emulator.openai.background._kept.values():  # an hour older: expired
        kept.created -= emulator.config.stored_response_ttl
    emulator.config.background_queue_seconds = 0.0
    [result] = (await ResponsesProcessor().process_batch(request, journal=journal))["results"]
    assert result["success"] and result["attempts"] == 1
    assert posts(emulator) == 2  # the lost one, and once afresh


async def test_a_response_past_max_wait_secs_ends_poll_timeout_and_a_rerun_polls_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A response still queued after `max_wait_secs` ends its item `poll_timeout` with the
    response's id; the journal keeps that id, not a final result: the rerun polls the very
    same responses (no POST) until they answer."""
    emulator.config.background_queue_seconds = 0.6
    journal = tmp_path / "batch.journal"
    prompts = [f"slow {i}" for i in range(3)]
    request = request_for(emulator, prompts, **FAST, max_wait_secs=0.05)
    first = (await ResponsesProcessor().process_batch(request, journal=journal))["results"]
    assert [r["error_type"] for r in first] == ["poll_timeout"] * 3
    assert all(r["response_id"].startswith("resp_") and r["is_retriable"] for r in first)
    assert all(r["response_id"] in r["error"] and "max_wait_secs" in r["error"] for r in first)
    assert posts(emulator) == 3
    journaled = {url.rsplit("/", 1)[-1] for _, url, result in journal_rows(journal) if not result}
    assert journaled == {r["response_id"] for r in first}, "kept as submitted, not final"

    again = await ResponsesProcessor().process_batch(
        request_for(emulator, prompts, **FAST, max_wait_secs=30), journal=journal
    )
    assert again["total_success"] == 3
    assert posts(emulator) == 3, "the rerun polled the journaled responses, it POSTed nothing"
    ids = [orjson.loads(r["raw_response"])["id"] for r in again["results"]]
    assert ids == [r["response_id"] for r in first]


@pytest.mark.parametrize(
    ("value", "error"), [("60", TypeError), (0, ValueError), (-1.5, ValueError), (True, TypeError)]
)
def test_max_wait_secs_is_checked_naming_it(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_wait_secs"):
        ResponsesRequest(
            api_key="sk-x",
            model="gpt-4o-mini",
            system_prompt="",
            user_prompts=["x"],
            response_format=TEXT,
            background=True,
            max_wait_secs=value,
        )
    for fine in (0.25, 7200, None):  # a float, an int, no limit
        ResponsesRequest(
            api_key="sk-x",
            model="gpt-4o-mini",
            system_prompt="",
            user_prompts=["x"],
            response_format=TEXT,
            background=True,
            max_wait_secs=fine,
        )


def test_background_path_polls_where_it_posted() -> None:
    request = ResponsesRequest(
        api_key="sk-x",
        base_url="http://127.0.0.1:9/v1/",
        model="gpt-4o-mini",
        system_prompt="",
        user_prompts=["x"],
        response_format=TEXT,
        background=True,
        service_tier="flex",
    )
    path = BackgroundAdapter(request, limiter=None)  # type: ignore[arg-type]
    assert path.responses_url == "http://127.0.0.1:9/v1/responses/"
    assert path.timeout == 900 and path.poll_timeout == 60  # polls are quick


async def test_ctrl_c_of_a_background_cli_batch_says_how_to_collect_what_runs(
    emulator: Emulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", [f"prompt {i}" for i in range(8)])
    emulator.config.background_queue_seconds = 2.0  # still queued when interrupted
    journal = tmp_path / "batch.journal"
    args = responses_args(emulator, tmp_path, "--background", "--poll-interval", "0.02")
    process = await start(emulator, tmp_path, *args)
    await until(process, lambda: len(journal_rows(journal)) == 8, "8 responses started")
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 10) == 130
    stderr = (tmp_path / "stderr.txt").read_text()
    assert stderr.count("left_running") == 8 and "--resume to collect them" in stderr
    assert emulator.stats.total("responses_cancel") == 0 and posts(emulator) == 8


# The kill -9 figures: a real CLI batch killed mid-way, then resumed.

KILL_PROMPTS = 60


async def _kill_then_resume(
    emulator: Emulator, tmp_path: Path, *extra: str, quiesce: bool = False
) -> tuple[list[str], dict[str, int]]:
    """Kill a batch midway, then resume it with its journal. `quiesce`: before the kill,
    every later POST hangs unanswered (the emulator never takes it) and the kill waits
    until each response the emulator accepted is journaled, so what is measured is the
    resume, not a kill landing between a POST's answer and its journal line (the one
    window no client can close: that response would be bought again)."""
    prompts = [f"prompt {i}" for i in range(KILL_PROMPTS)]
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    emulator.config.latency = 0.15  # 60 prompts, 10 at a time: under a second either way
    emulator.config.background_queue_seconds = 0.05
    journal, output = tmp_path / "batch.journal", tmp_path / "out.jsonl"
    args = responses_args(emulator, tmp_path, "--concurrency", "10", *extra)

    def midway() -> bool:
        return len(output_lines(output)) >= 15 and len(journal_rows(journal)) >= 25

    first = await start(emulator, tmp_path, *args)
    await until(first, midway, "15 results written and 25 items started")
    if quiesce:
        emulator.config.hang_seconds = 30.0
        emulator.faults.schedule("responses", "hang", times=1000)

        def journaled() -> bool:
            return sum(1 for _, url, _ in journal_rows(journal) if url) == posts(emulator)

        await until(first, journaled, "every accepted response journaled")
    first.kill()
    assert await first.wait() == -signal.SIGKILL
    emulator.faults.clear()
    started = sum(1 for _, url, result in journal_rows(journal) if url and not result)
    code, _, err = await run(emulator, *args, "--resume")
    assert code == 0, err
    records = output_lines(output)
    assert_each_index_once(records, KILL_PROMPTS)
    assert all(r["success"] for r in records)
    return prompts, {
        "posts": posts(emulator),
        "posted_twice": sum(1 for n in emulator.stats.responses_by_digest.values() if n > 1),
        "rebought": sum(emulator.stats.completed_by_digest.values()) - KILL_PROMPTS,
        "from_journal": sum(1 for r in records if r.get("from_journal")),
        "running_at_kill": started,
    }


async def test_kill_9_a_background_batch_then_resume_posts_no_item_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    prompts, figures = await _kill_then_resume(
        emulator, tmp_path, "--background", "--poll-interval", "0.02", quiesce=True
    )
    print(f"\nkill -9 with --background: {figures}")
    for prompt in prompts:
        assert emulator.stats.responses_by_digest[prompt_digest(prompt)] == 1, prompt
    assert figures["posts"] == KILL_PROMPTS and figures["rebought"] == 0
    assert figures["running_at_kill"] >= 1, "some responses were polled on resume, not sent"
    assert emulator.stats.requests["responses_poll 200"] > 0


async def test_kill_9_a_synchronous_batch_then_resume_rebuys_what_was_in_flight(
    emulator: Emulator, tmp_path: Path
) -> None:
    _, figures = await _kill_then_resume(emulator, tmp_path)
    print(f"\nkill -9 without --background: {figures}")
    assert figures["rebought"] >= 1, "what was in flight at the kill is paid for again"
    assert figures["posted_twice"] == figures["posts"] - KILL_PROMPTS
