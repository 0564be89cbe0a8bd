"""Background responses, stored-response retrieval, the flex tier and the two token accountings
of the emulated `/v1/responses`, driven by the official SDK."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest
from openai.types.responses import Response

from genai_coroutines.emulator import Emulator, EmulatorConfig
from genai_coroutines.emulator.openai_output import input_tokens
from genai_coroutines.emulator.state import digest

MODEL = "gpt-4o-mini"
PENDING = ("queued", "in_progress")
POLL_PAUSE = 0.002
POLL_TRIES = 2000


async def settle(client: openai.AsyncOpenAI, response_id: str) -> tuple[Response, list[str]]:
    """Poll until the response leaves queued/in_progress; returns it and the statuses seen."""
    seen: list[str] = []
    for _ in range(POLL_TRIES):
        response = await client.responses.retrieve(response_id)
        if not seen or seen[-1] != response.status:
            seen.append(str(response.status))
        if response.status not in PENDING:
            return response, seen
        await asyncio.sleep(POLL_PAUSE)
    raise AssertionError(f"{response_id} still pending; seen {seen}")


async def test_background_goes_queued_in_progress_completed(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    text = "Describe a lighthouse."
    direct = await client.responses.create(model=MODEL, input=text)  # also warms the SDK up
    emulator.config.background_queue_seconds = 0.05
    emulator.config.latency = 0.05
    queued = await client.responses.create(model=MODEL, input=text, background=True)
    assert queued.status == "queued" and queued.background is True
    assert queued.output == [] and queued.usage is None and queued.id.startswith("resp_")

    done, seen = await settle(client, queued.id)
    assert seen == ["queued", "in_progress", "completed"]
    assert done.id == queued.id and done.background is True and done.usage is not None
    assert done.output_text == direct.output_text

    stats = emulator.stats
    key = digest(orjson.dumps(text))
    assert stats.responses_by_digest[key] == 2  # the background POST and the direct one
    assert stats.completed_by_digest[key] == 2
    assert stats.requests["responses_poll 200"] == stats.total("responses_poll") >= len(seen)
    assert (await client.responses.retrieve(queued.id)).status == "completed"


async def test_background_requires_store(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model=MODEL, input="x", background=True, store=False)
    assert refused.value.param == "background"


async def test_background_can_fail_or_stop_incomplete(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.background_queue_seconds = 0.0
    emulator.config.background_failure_rate = 1.0
    failed, _ = await settle(
        client, (await client.responses.create(model=MODEL, input="x", background=True)).id
    )
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error"
    emulator.config.background_failure_rate = 0.0
    long = "Explain everything about tides in detail. " * 20
    cut = await client.responses.create(
        model=MODEL, input=long, background=True, max_output_tokens=16
    )
    incomplete, _ = await settle(client, cut.id)
    assert incomplete.status == "incomplete"
    assert incomplete.incomplete_details is not None
    assert incomplete.incomplete_details.reason == "max_output_tokens"


async def test_cancel_a_background_response(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.background_queue_seconds = 30.0
    queued = await client.responses.create(model=MODEL, input="slow", background=True)
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    assert (await client.responses.retrieve(queued.id)).status == "cancelled"
    assert (await client.responses.cancel(queued.id)).status == "cancelled"  # idempotent
    assert not emulator.stats.completed_by_digest[digest(orjson.dumps("slow"))]

    foreground = await client.responses.create(model=MODEL, input="quick")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(foreground.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_nope")
    assert emulator.stats.total("responses_cancel") == 4


async def test_stored_responses_expire(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    stored = await client.responses.create(model=MODEL, input="keep me")
    assert (await client.responses.retrieve(stored.id)).output_text == stored.output_text
    emulator.config.stored_response_ttl = 0.05  # checked at each retrieve: it now runs out
    for _ in range(POLL_TRIES):
        try:
            await client.responses.retrieve(stored.id)
        except openai.NotFoundError as gone:
            assert gone.message.endswith(f"Response with id '{stored.id}' not found.")
            break
        await asyncio.sleep(POLL_PAUSE)
    else:
        raise AssertionError("the stored response never expired")
    unstored = await client.responses.create(model=MODEL, input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)


async def test_poll_faults(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.background_queue_seconds = 0.0
    queued = await client.responses.create(model=MODEL, input="x", background=True)
    emulator.faults.schedule("responses_poll", "503")
    with pytest.raises(openai.InternalServerError):
        await client.responses.retrieve(queued.id)
    done, _ = await settle(client, queued.id)
    assert done.status == "completed"
    assert emulator.stats.faults["responses_poll 503"] == 1
    assert emulator.stats.responses_by_digest[digest(orjson.dumps("x"))] == 1


async def test_flex_is_sometimes_unavailable_without_using_quota(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.flex_unavailable_rate = 0.5
    emulator.config.openai_rpm = 60
    refused = served = 0
    for n in range(40):
        try:
            response = await client.responses.create(
                model=MODEL, input=f"flex {n}", service_tier="flex"
            )
        except openai.RateLimitError as error:
            refused += 1
            assert error.status_code == 429 and error.code == "resource_unavailable"
            assert "You will not be charged" in error.message
        else:
            served += 1
            assert response.service_tier == "flex"
    assert 8 <= refused <= 32 and emulator.stats.flex_unavailable == refused
    raw = await client.responses.with_raw_response.create(model=MODEL, input="after")
    remaining = int(raw.headers["x-ratelimit-remaining-requests"])
    assert 60 - served - 1 <= remaining <= 60 - served  # flex 429s took nothing


@pytest.mark.parametrize(
    ("tier", "reported"),
    [(None, "default"), ("auto", "default"), ("default", "default"), ("flex", "flex")],
)
async def test_every_response_reports_its_service_tier(
    client: openai.AsyncOpenAI, tier: str | None, reported: str
) -> None:
    extra = {} if tier is None else {"service_tier": tier}
    response = await client.responses.create(model=MODEL, input="tier", **extra)  # type: ignore[call-overload]
    assert response.service_tier == reported
    queued = await client.responses.create(model=MODEL, input="tier", background=True, **extra)  # type: ignore[call-overload]
    assert queued.service_tier == reported


async def test_settle_accounting_refunds_the_unused_allowance(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.openai_tpm = 600
    raw = await client.responses.with_raw_response.create(
        model=MODEL, input="hello", max_output_tokens=300
    )
    used = raw.parse().usage
    assert used is not None and used.total_tokens < 300
    remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 600 - used.total_tokens - 1 <= remaining <= 600 - used.total_tokens + 10


async def test_provider_accounting_charges_the_allowance_and_refused_requests(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    config = emulator.config
    config.token_accounting = "provider"
    config.openai_tpm = 600
    raw = await client.responses.with_raw_response.create(
        model=MODEL, input="hello", max_output_tokens=300
    )
    charged = input_tokens({"input": "hello"}) + 300
    remaining = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 600 - charged - 1 <= remaining <= 600 - charged + 10
    raw = await client.responses.with_raw_response.create(model=MODEL, input="hello")
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) <= remaining + 10 - (
        input_tokens({"input": "hello"}) + EmulatorConfig().default_output_tokens
    )


@pytest.mark.parametrize(("accounting", "low", "high"), [("settle", 25, 31), ("provider", 55, 61)])
async def test_refused_requests_count_against_rpm_only_for_the_provider(
    emulator: Emulator, client: openai.AsyncOpenAI, accounting: str, low: float, high: float
) -> None:
    config = emulator.config
    config.token_accounting = accounting  # type: ignore[assignment]
    config.openai_rpm = 2  # one request per 30 s once the two of the burst are spent
    for _ in range(2):
        await client.responses.create(model=MODEL, input="x")
    waits = []
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as limited:
            await client.responses.create(model=MODEL, input="x")
        waits.append(int(limited.value.response.headers["retry-after-ms"]) / 1000)
    assert 25 <= waits[0] <= 31  # the first refusal waits for the next request either way
    assert low <= waits[1] <= high  # the provider counted the first refusal too
