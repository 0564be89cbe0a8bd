"""The emulated Files and Batch APIs speak the real wire format: the official SDK drives them."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import orjson
import pytest
from openai.types import Batch
from openai.types.responses import Response

from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.openai_output import input_tokens

MODEL = "gpt-4o-mini"
TERMINAL = ("completed", "failed", "expired", "cancelled")
POLL_PAUSE = 0.002
POLL_TRIES = 3000
"""Polls before a wait gives up: a few seconds at most, far above what any state here needs."""


def line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": MODEL, "input": text, **body},
    }


def jsonl(items: list[Any]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def rows(count: int) -> list[dict[str, Any]]:
    return [line(f"row-{n}", f"Summarise item number {n}.") for n in range(count)]


async def submit(client: openai.AsyncOpenAI, data: bytes) -> Batch:
    uploaded = await client.files.create(file=("batch.jsonl", data), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h"
    )


async def wait_for(
    client: openai.AsyncOpenAI,
    batch_id: str,
    until: tuple[str, ...] = TERMINAL,
    pause: float = POLL_PAUSE,
) -> tuple[Batch, list[str]]:
    """Poll until the batch is in one of `until`; returns it and the statuses seen, in order."""
    seen: list[str] = []
    for _ in range(POLL_TRIES):
        batch = await client.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in until:
            return batch, seen
        await asyncio.sleep(pause)
    raise AssertionError(f"batch {batch_id} never reached {until}; seen {seen}")


async def read_lines(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [orjson.loads(raw) for raw in content.content.splitlines()]


async def test_files_upload_retrieve_and_content(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    data = jsonl(rows(3))
    uploaded = await client.files.create(file=("input.jsonl", data), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(data),
        "input.jsonl",
        "batch",
    )
    assert uploaded.expires_at is not None and uploaded.expires_at > uploaded.created_at
    assert await client.files.retrieve(uploaded.id) == uploaded
    assert (await client.files.content(uploaded.id)).content == data
    assert emulator.stats.files_uploaded == 1

    with pytest.raises(openai.NotFoundError) as missing:
        await client.files.retrieve("file-nope")
    assert missing.value.param == "id"
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        await client.files.create(file=("input.csv", data), purpose="batch")
    with pytest.raises(openai.BadRequestError) as purpose:
        await client.files.create(file=("input.jsonl", data), purpose="nonsense")  # type: ignore[arg-type]
    assert purpose.value.code == "invalid_value"
    async with openai.AsyncOpenAI(
        api_key="sk-wrong", base_url=emulator.openai_base_url, max_retries=0
    ) as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.files.retrieve(uploaded.id)
    assert emulator.stats.files_uploaded == 1


async def test_batch_runs_through_its_states_with_the_responses_answers(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    config = emulator.config
    config.batch_validating_seconds = 0.06
    config.batch_seconds_per_line = 0.015
    config.batch_finalizing_seconds = 0.06
    config.openai_rpm = 1  # the batch pool is separate: one RPM would stop four sync requests
    items = rows(4)
    created = await submit(client, jsonl(items))
    assert created.status == "validating" and created.object == "batch"
    assert created.request_counts is not None and created.request_counts.total == 0

    batch, seen = await wait_for(client, created.id)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.expires_at == batch.created_at + 24 * 3600
    assert batch.model == MODEL and batch.error_file_id is None and batch.errors is None
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (4, 4)

    output = await read_lines(client, batch.output_file_id)
    assert {item["custom_id"] for item in output} == {item["custom_id"] for item in items}
    bodies = {}
    for item in output:
        assert item["id"].startswith("batch_req_") and item["error"] is None
        assert item["response"]["status_code"] == 200
        assert item["response"]["request_id"].startswith("req_")
        bodies[item["custom_id"]] = Response.model_validate(item["response"]["body"])
    assert batch.usage is not None
    assert batch.usage.total_tokens == sum(b.usage.total_tokens for b in bodies.values() if b.usage)
    output_file = await client.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output"

    # The same code answers a line and a POST /v1/responses with the same body.
    config.openai_rpm = None
    direct = await client.responses.create(model=MODEL, input=items[2]["body"]["input"])
    assert bodies["row-2"].output_text == direct.output_text
    stats = emulator.stats
    assert stats.batches_created == 1
    assert dict(stats.batch_executions_by_custom_id) == {item["custom_id"]: 1 for item in items}
    assert stats.snapshot()["duplicate_batch_executions"] == 0
    assert stats.total("responses") == 1


async def test_failed_lines_go_to_the_error_file(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.batch_line_failure_rate = 0.4
    items = [*rows(30), line("bad", "Too hot.", temperature=5)]
    batch, _ = await wait_for(client, (await submit(client, jsonl(items))).id)
    assert batch.status == "completed" and batch.request_counts is not None
    output = await read_lines(client, batch.output_file_id)
    errors = await read_lines(client, batch.error_file_id)
    counts = batch.request_counts
    assert (counts.completed, counts.failed, counts.total) == (len(output), len(errors), 31)
    assert 0 < len(errors) < 31
    assert {i["custom_id"] for i in output} | {i["custom_id"] for i in errors} == {
        i["custom_id"] for i in items
    }
    assert not {i["custom_id"] for i in output} & {i["custom_id"] for i in errors}
    for item in errors:
        status, error = item["response"]["status_code"], item["response"]["body"]["error"]
        if status == 500:
            assert error["type"] == "server_error" and error["code"] == "server_error"
        else:  # the bad line, unless the draw failed it first
            assert (item["custom_id"], status, error["param"]) == ("bad", 400, "temperature")
    assert all(n == 1 for n in emulator.stats.batch_executions_by_custom_id.values())


async def test_batch_expires_partway_and_keeps_what_ran(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.batch_expire_after_lines = 3
    items = rows(7)
    batch, seen = await wait_for(client, (await submit(client, jsonl(items))).id)
    assert batch.status == "expired" and seen[-1] == "expired"
    assert batch.expired_at is not None and batch.completed_at is None
    output = await read_lines(client, batch.output_file_id)
    errors = await read_lines(client, batch.error_file_id)
    assert [i["custom_id"] for i in output] == ["row-0", "row-1", "row-2"]
    assert [i["custom_id"] for i in errors] == [f"row-{n}" for n in range(3, 7)]
    for item in errors:
        assert item["response"] is None and item["error"]["code"] == "batch_expired"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 4)
    assert set(emulator.stats.batch_executions_by_custom_id) == {"row-0", "row-1", "row-2"}


@pytest.mark.parametrize(
    ("content", "settings", "code", "line_number"),
    [
        (jsonl(rows(2)) + b"{not json\n", {}, "invalid_json_line", 3),
        (jsonl([*rows(2), line("row-0", "again")]), {}, "duplicate_custom_id", 3),
        (jsonl([{**line("a", "x"), "url": "/v1/chat/completions"}]), {}, "invalid_url", 1),
        (jsonl([line("a", "x"), {**line("b", "y"), "body": {"input": "y"}}]), {}, None, 2),
        (jsonl([line("a", "x"), line("b", "y", model="gpt-4o")]), {}, "mismatched_model", 2),
        (jsonl(rows(3)), {"batch_max_requests": 2}, "request_limit_exceeded", None),
        (jsonl(rows(3)), {"batch_max_bytes": 100}, "file_too_large", None),
        (b"\n", {}, "empty_file", None),
    ],
)
async def test_a_file_that_does_not_validate_fails_the_batch(
    emulator: Emulator,
    client: openai.AsyncOpenAI,
    content: bytes,
    settings: dict[str, int],
    code: str | None,
    line_number: int | None,
) -> None:
    for name, value in settings.items():
        setattr(emulator.config, name, value)
    batch, seen = await wait_for(client, (await submit(client, content)).id)
    assert seen == ["validating", "failed"]
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.errors is not None and batch.errors.object == "list" and batch.errors.data
    first = batch.errors.data[0]
    assert first.code == (code or "missing_required_parameter") and first.message
    assert first.line == line_number
    assert batch.output_file_id is None and batch.error_file_id is None
    assert not emulator.stats.batch_executions_by_custom_id


async def test_enqueued_token_limit_fails_a_batch_that_does_not_fit(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    items = rows(4)
    tokens = sum(input_tokens(item["body"]) for item in items)
    emulator.config.batch_enqueued_token_limit = tokens + tokens // 2
    emulator.config.batch_seconds_per_line = 0.05
    first = await submit(client, jsonl(items))
    await wait_for(client, first.id, until=("in_progress",))

    second, _ = await wait_for(client, (await submit(client, jsonl(items))).id)
    assert second.status == "failed" and second.errors and second.errors.data
    error = second.errors.data[0]
    assert error.code == "token_limit_exceeded" and error.line is None
    assert error.message and error.message.startswith(f"Enqueued token limit reached for {MODEL}")

    await client.batches.cancel(first.id)
    await wait_for(client, first.id)
    third, _ = await wait_for(client, (await submit(client, jsonl(items[:1]))).id)
    assert third.status == "completed"


async def test_cancel_keeps_the_lines_that_ran(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.batch_seconds_per_line = 0.02
    emulator.config.batch_cancelling_seconds = 0.02
    created = await submit(client, jsonl(rows(50)))
    for _ in range(POLL_TRIES):
        running = await client.batches.retrieve(created.id)
        if running.request_counts and running.request_counts.completed >= 2:
            break
        await asyncio.sleep(POLL_PAUSE)
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None

    batch, seen = await wait_for(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None
    ran = batch.request_counts.completed
    assert 2 <= ran < 50
    output = await read_lines(client, batch.output_file_id)
    assert len(output) == ran and batch.error_file_id is None
    assert len(emulator.stats.batch_executions_by_custom_id) == ran
    assert (await client.batches.cancel(created.id)).status == "cancelled"

    done, _ = await wait_for(client, (await submit(client, jsonl(rows(1)))).id)
    with pytest.raises(openai.ConflictError):
        await client.batches.cancel(done.id)


async def test_cancel_while_validating_runs_nothing(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.batch_validating_seconds = 5.0
    created = await submit(client, jsonl(rows(3)))
    assert (await client.batches.cancel(created.id)).status == "cancelling"
    batch, _ = await wait_for(client, created.id)
    assert batch.status == "cancelled" and batch.output_file_id is None
    assert not emulator.stats.batch_executions_by_custom_id


async def test_create_refuses_bad_requests(client: openai.AsyncOpenAI) -> None:
    uploaded = await client.files.create(file=("in.jsonl", jsonl(rows(1))), purpose="batch")
    with pytest.raises(openai.NotFoundError) as missing:
        await client.batches.create(
            input_file_id="file-nope", endpoint="/v1/responses", completion_window="24h"
        )
    assert missing.value.param == "input_file_id"
    with pytest.raises(openai.BadRequestError) as window:
        await client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/responses",
            completion_window="1h",  # type: ignore[arg-type]
        )
    assert window.value.param == "completion_window"
    with pytest.raises(openai.BadRequestError) as endpoint:
        await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    assert endpoint.value.param == "endpoint"
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_nope")


async def test_files_list_by_purpose_in_pages_newest_first_and_uploads_count_by_content(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    data = [jsonl(rows(n)) for n in (1, 2, 3)]
    ids = [(await client.files.create(file=(f"{n}.jsonl", d), purpose="batch")).id
           for n, d in enumerate(data)]  # fmt: skip
    await client.files.create(file=("other.jsonl", data[0]), purpose="user_data")
    page = await client.files.list(purpose="batch", limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    assert [f.id async for f in client.files.list(purpose="batch", limit=2)] == ids[::-1]
    oldest = await client.files.list(purpose="batch", order="asc", limit=1)
    assert [(f.id, f.bytes, f.filename) for f in oldest.data] == [(ids[0], len(data[0]), "0.jsonl")]
    assert len([f async for f in client.files.list()]) == 4
    with pytest.raises(openai.BadRequestError, match="limit"):
        await client.files.list(limit=10_001)
    assert sorted(emulator.stats.files_by_digest.values()) == [1, 1, 2]  # data[0] twice


async def test_list_pages_newest_first(client: openai.AsyncOpenAI) -> None:
    ids = [(await submit(client, jsonl(rows(1)))).id for _ in range(3)]
    page = await client.batches.list(limit=2)
    assert [batch.id for batch in page.data] == ids[::-1][:2] and page.has_more
    assert [batch.id async for batch in client.batches.list(limit=2)] == ids[::-1]
    metadata = await client.batches.create(
        input_file_id=(await client.batches.retrieve(ids[0])).input_file_id,
        endpoint="/v1/responses",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert metadata.metadata == {"job": "nightly"}


async def test_faults_on_the_batch_endpoints(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("files_upload", "503")
    with pytest.raises(openai.InternalServerError):
        await client.files.create(file=("in.jsonl", jsonl(rows(1))), purpose="batch")
    assert emulator.stats.files_uploaded == 0
    created = await submit(client, jsonl(rows(1)))
    emulator.faults.schedule("batches_poll", "500")
    with pytest.raises(openai.InternalServerError):
        await client.batches.retrieve(created.id)
    batch, _ = await wait_for(client, created.id)
    assert batch.status == "completed"
    assert emulator.stats.faults["batches_poll 500"] == 1
    assert emulator.stats.requests["batches_poll 500"] == 1


async def test_line_faults_spoil_what_a_batch_writes_of_its_lines(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    faults = emulator.faults
    for kind in ("line-odd-ids", "line-not-json", "line-body-not-json", "line-missing"):
        faults.schedule("batch_lines", kind)
    with pytest.raises(ValueError, match="only they"):
        faults.schedule("batch_lines", "503")
    with pytest.raises(ValueError, match="only they"):
        faults.schedule("batches_poll", "line-missing")
    created = await submit(client, jsonl(rows(5)))
    batch, _ = await wait_for(client, created.id)
    assert batch.status == "completed" and batch.output_file_id is not None
    raw = (await client.files.content(batch.output_file_id)).content.splitlines()
    assert len(raw) == 6, "row-0 and its two copies, row-1 cut, row-2, row-4; row-3 missing"
    ids = [orjson.loads(raw[n])["custom_id"] for n in (0, 1, 2, 4, 5)]
    assert ids == ["row-0", "\u00b2row-0", "9" * 5000 + "row-0", "row-2", "row-4"]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw[3])
    assert orjson.loads(raw[4])["response"]["status_code"] == 200
    assert isinstance(orjson.loads(raw[4])["response"]["body"], str)
    assert sum(emulator.stats.batch_executions_by_custom_id.values()) == 5, "every line ran"


async def test_a_20000_line_file_runs(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.batch_validating_seconds = 0.0
    emulator.config.batch_finalizing_seconds = 0.0
    padding = "lorem ipsum " * 80
    items = [line(f"r{n}", f"{n} {padding}") for n in range(20_000)]
    data = jsonl(items)
    assert len(data) > 20 * 2**20
    batch, _ = await wait_for(client, (await submit(client, data)).id, pause=0.05)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 20_000
    output = (await client.files.content(batch.output_file_id or "")).content
    assert output.count(b"\n") == 20_000 and output.count(b'"status_code":200') == 20_000
    assert emulator.stats.snapshot()["duplicate_batch_executions"] == 0
