"""The emulated prompt cache: a repeated long prefix comes back as `cached_tokens`, within a
TTL, on a machine per prefix and `prompt_cache_key` that serves about 15 requests a minute;
the official SDK reads the figures, the emulator's counters bill them."""

from __future__ import annotations

import asyncio
import time
import typing

import openai
from openai.types.responses import response_create_params as create_params

from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.openai_validate import CACHE_RETENTIONS
from genai_coroutines.emulator.prompt_cache import CACHE_INCREMENT, MIN_CACHED_TOKENS
from tests.test_emulator_background import settle
from tests.test_emulator_batch_api import jsonl, line, read_lines, submit, wait_for
from tests.test_emulator_openai import create, post

MODEL = "gpt-4o-mini"
SYSTEM = ("You extract invoice fields. Follow every rule below exactly. " * 200)[:8000]
"""A 2,000-token system prompt (4 characters a token): 15 whole blocks of 128 tokens."""
SYSTEM_CACHED = len(SYSTEM) // (CACHE_INCREMENT * 4) * CACHE_INCREMENT


async def cached(client: openai.AsyncOpenAI, text: str, **params: typing.Any) -> int:
    """Ask with `SYSTEM` as instructions; the cached tokens the SDK reads off the answer."""
    response = await create(client, model=MODEL, instructions=SYSTEM, input=text, **params)
    assert response.usage is not None
    return response.usage.input_tokens_details.cached_tokens


async def test_a_repeated_long_system_prompt_is_cached_after_the_first_request(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    assert SYSTEM_CACHED == 1920
    assert [await cached(client, f"Invoice {n}") for n in range(2)] == [0, 0]  # off by default
    assert emulator.stats.snapshot()["prompt_cache_lookups"] == {}
    emulator.reset()
    emulator.config.prompt_caching = True
    assert [await cached(client, f"Invoice {n}") for n in range(3)] == [0, 1920, 1920]
    snapshot = emulator.stats.snapshot()
    assert snapshot["prompt_cache_lookups"] == {"miss": 1, "hit": 2}
    billed = snapshot["billed_tokens"]
    assert billed["cached_input"] == 2 * 1920
    assert billed["uncached_input"] == billed["input"] - 2 * 1920 > 0


async def test_the_hit_is_the_longest_shared_prefix_in_128_token_steps_from_1024(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.prompt_caching = True
    exact = "y" * (MIN_CACHED_TOKENS * 4)
    first = await create(client, model=MODEL, input=exact)
    again = await create(client, model=MODEL, input=exact)
    assert first.usage is not None and again.usage is not None
    assert (first.usage.input_tokens, again.usage.input_tokens_details.cached_tokens) == (
        1024,
        1024,
    )
    short = "z" * (MIN_CACHED_TOKENS * 4 - 4)  # 1023 tokens: never cached, never looked up
    for _ in range(3):
        answer = await create(client, model=MODEL, input=short)
        assert answer.usage is not None and answer.usage.input_tokens_details.cached_tokens == 0
    assert emulator.stats.prompt_cache_lookups == {"miss": 1, "hit": 1}
    await cached(client, "A")
    shared = await create(client, model=MODEL, instructions=SYSTEM[:5000] + "!", input="B")
    little = await create(client, model=MODEL, instructions=SYSTEM[:3000] + "!", input="C")
    assert shared.usage is not None and little.usage is not None
    assert shared.usage.input_tokens_details.cached_tokens == 5000 // 512 * 128 == 1152
    assert little.usage.input_tokens_details.cached_tokens == 0  # 640 shared: below 1024


async def test_different_cache_keys_do_not_share(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.prompt_caching = True
    got = [
        await cached(client, "one", prompt_cache_key="tenant-a"),
        await cached(client, "two", prompt_cache_key="tenant-b"),
        await cached(client, "three"),
        await cached(client, "four", prompt_cache_key="tenant-b"),
        await cached(client, "five", prompt_cache_key="tenant-a"),
        await cached(client, "six"),
    ]
    assert got == [0, 0, 0, 1920, 1920, 1920]


async def test_beyond_15_requests_a_minute_per_prefix_and_key_requests_spill(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.prompt_caching = True
    assert emulator.config.prompt_cache_rpm_per_key == 15
    hot = [await cached(client, f"row {n}", prompt_cache_key="hot") for n in range(20)]
    assert hot == [0] + [1920] * 14 + [0] * 5
    other = [await cached(client, f"row {n}", prompt_cache_key="other") for n in range(2)]
    assert other == [0, 1920]
    assert emulator.stats.prompt_cache_lookups == {"miss": 2, "hit": 15, "spill": 5}
    emulator.reset()  # forgets the machines: the hot key starts cold, with a fresh share
    assert [await cached(client, f"row {n}", prompt_cache_key="hot") for n in range(2)] == [
        0,
        1920,
    ]


async def test_a_cached_prefix_expires_after_the_ttl_unless_kept_24h(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    config = emulator.config
    config.prompt_caching, config.prompt_cache_ttl = True, 0.5
    kept = "Long-lived rules. " + SYSTEM  # another first 256 tokens: another machine
    assert [await cached(client, f"a{n}") for n in range(2)] == [0, 1920]
    extended = await create(
        client, model=MODEL, instructions=kept, input="b0", prompt_cache_retention="24h"
    )
    assert extended.prompt_cache_retention == "24h"
    last_use = time.monotonic()
    while time.monotonic() < last_use + config.prompt_cache_ttl:  # bounded by the TTL itself
        await asyncio.sleep(0.05)
    assert await cached(client, "a2") == 0
    again = await create(client, model=MODEL, instructions=kept, input="b1")
    assert again.usage is not None
    assert again.usage.input_tokens_details.cached_tokens == len(kept) // 512 * 128


async def test_background_responses_and_batch_lines_are_cached_too(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.prompt_caching = True
    queued = [
        await client.responses.create(
            model=MODEL, instructions=SYSTEM, input=f"bg {n}", background=True
        )
        for n in range(2)
    ]
    done = [(await settle(client, response.id))[0] for response in queued]
    assert sorted(r.usage.input_tokens_details.cached_tokens for r in done if r.usage) == [0, 1920]

    lines = [
        line(f"row-{n}", f"batch {n}", instructions=SYSTEM, prompt_cache_key="batch")
        for n in range(3)
    ] + [line("bad", "batch x", instructions=SYSTEM, prompt_cache_retention="forever")]
    batch, _ = await wait_for(client, (await submit(client, jsonl(lines))).id)
    outputs = await read_lines(client, batch.output_file_id)
    answers = [out["response"]["body"]["usage"]["input_tokens_details"] for out in outputs]
    assert [details["cached_tokens"] for details in answers] == [0, 1920, 1920]
    assert batch.usage is not None and batch.usage.input_tokens_details.cached_tokens == 3840
    (refused,) = await read_lines(client, batch.error_file_id)
    assert refused["response"]["status_code"] == 400
    assert refused["response"]["body"]["error"]["param"] == "prompt_cache_retention"


async def test_cache_parameters_are_checked_as_the_real_api_does(emulator: Emulator) -> None:
    sdk_type = typing.get_type_hints(create_params.ResponseCreateParamsBase)
    retention = sdk_type["prompt_cache_retention"]
    assert {v for arg in typing.get_args(retention) for v in typing.get_args(arg)} == set(
        CACHE_RETENTIONS
    )
    body = {"model": MODEL, "input": "hi"}
    status, _, answer = await post(emulator, {**body, "prompt_cache_retention": "1h"})
    assert (status, answer["error"]["code"]) == (400, "invalid_value")
    assert answer["error"]["message"] == (
        "Invalid value: '1h'. Supported values are: 'in_memory' and '24h'."
    )
    status, _, answer = await post(emulator, {**body, "prompt_cache_key": "k" * 64})
    assert status == 200 and answer["prompt_cache_key"] == "k" * 64
    status, _, answer = await post(
        emulator, {**body, "prompt_cache_key": "k" * 65, "background": True}
    )
    assert status == 400
    assert answer["error"] == {
        "message": "Invalid 'prompt_cache_key': string too long. Expected a string with maximum "
        "length 64, but got a string with length 65 instead.",
        "type": "invalid_request_error",
        "param": "prompt_cache_key",
        "code": "string_above_max_length",
    }
