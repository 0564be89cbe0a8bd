"""The seed's Chat Completions shapes become bodies the real Responses API accepts.

Each end-to-end test first shows that the emulator (which answers like api.openai.com)
refuses the untranslated shape with a 400, then that our request with the seed's shape
succeeds, so each test fails if its translation is removed.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest
from openai.lib._parsing._responses import type_to_text_format_param
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from genai_coroutines import ResponsesProcessor, ResponsesRequest, parse_responses
from genai_coroutines.emulator import Emulator
from genai_coroutines.responses import parse_responses_as
from genai_coroutines.responses.cache_keys import PER_KEY_MINUTE, CacheKeys
from genai_coroutines.responses.schema import model_text_format
from genai_coroutines.responses.wire import (
    JSON_NOTE,
    BodyTemplate,
    estimate_tokens,
    text_format,
    translate_tool,
    translate_tool_choice,
)
from tests.responses_support import request_for, run, sent_bodies

PATIENT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "diagnosis": {"type": "string"},
    },
    "required": ["name", "age", "diagnosis"],
    "additionalProperties": False,
}
SEED_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "patient_info", "schema": PATIENT_SCHEMA, "strict": True},
}
SEED_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


async def post_raw(emulator: Emulator, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Send a body as-is, untranslated, and return the status and the error object."""
    headers = {"Authorization": f"Bearer {emulator.config.openai_api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            emulator.openai_base_url + "/responses", json=body, headers=headers
        ) as response:
            data = await response.json()
            return response.status, data.get("error") or {}


def base_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "input": "hello", **fields}


# --- pure translations --------------------------------------------------------------------


def test_seed_json_schema_becomes_flat_text_format() -> None:
    described: dict[str, Any] = copy.deepcopy(SEED_SCHEMA_FORMAT)
    described["json_schema"]["description"] = "A patient."
    assert text_format(described) == {
        "type": "json_schema",
        "name": "patient_info",
        "schema": PATIENT_SCHEMA,
        "strict": True,
        "description": "A patient.",
    }
    native = {"type": "json_schema", "name": "p", "schema": PATIENT_SCHEMA}
    assert text_format(native) == native
    assert text_format({"type": "json_object"}) == {"type": "json_object"}
    assert text_format({"type": "text"}) == {"type": "text"}


def test_chat_function_tool_becomes_flat_and_keeps_chat_non_strict_default() -> None:
    assert translate_tool(SEED_TOOL, "tools[0]") == {
        "type": "function",
        "name": "get_weather",
        "description": "Get current weather for a location",
        "parameters": SEED_TOOL["function"]["parameters"],  # type: ignore[index]
        "strict": False,
    }
    strict = {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}
    assert translate_tool(strict, "tools[0]")["strict"] is True
    native = {"type": "function", "name": "f", "parameters": {}, "strict": True}
    assert translate_tool(native, "tools[0]") is native
    for builtin in ({"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}):
        assert translate_tool(builtin, "tools[0]") is builtin
    custom = {"type": "custom", "custom": {"name": "sql", "description": "Run SQL"}}
    assert translate_tool(custom, "tools[0]") == {
        "type": "custom",
        "name": "sql",
        "description": "Run SQL",
    }


def test_tool_choice_spellings() -> None:
    for mode in ("none", "auto", "required"):
        assert translate_tool_choice(mode) == mode
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert translate_tool_choice(named) == {"type": "function", "name": "get_weather"}
    native = {"type": "function", "name": "get_weather"}
    assert translate_tool_choice(native) == native
    assert translate_tool_choice({"type": "file_search"}) == {"type": "file_search"}
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [named]},
    }
    assert translate_tool_choice(allowed) == {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "get_weather"}],
    }


def test_token_estimate_counts_instructions_input_and_output_allowance() -> None:
    assert estimate_tokens(8, "x" * 12, 0) == 5
    assert estimate_tokens(0, "x", 100) == 101
    items = [{"role": "user", "content": "hi"}]
    assert estimate_tokens(0, items, 0) == -(-len(orjson.dumps(items)) // 4)


class Address(BaseModel):
    street: str
    city: str = Field(description="City name")


class Visit(BaseModel):
    patient: str
    age: int | None = None
    kind: Literal["checkup", "emergency"]
    home: Address = Field(description="Where the patient lives")
    previous: list[Address] = []


def test_pydantic_schema_matches_the_official_sdk() -> None:
    assert model_text_format(Visit) == dict(type_to_text_format_param(Visit))
    schema = model_text_format(Visit)["schema"]
    assert schema == to_strict_json_schema(Visit)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["patient", "age", "kind", "home", "previous"]


# --- against the emulator -----------------------------------------------------------------


async def test_json_schema_translation_is_accepted(emulator: Emulator) -> None:
    status, error = await post_raw(emulator, base_body(response_format=SEED_SCHEMA_FORMAT))
    assert (status, error["param"]) == (400, "response_format")
    status, error = await post_raw(emulator, base_body(text={"format": SEED_SCHEMA_FORMAT}))
    assert (status, error["param"]) == (400, "text.format.name")

    results = await run(
        emulator, ["John Doe, 45, hypertension"], response_format=SEED_SCHEMA_FORMAT
    )
    assert results["total_success"] == 1
    jsonschema.validate(orjson.loads(parse_responses(results)[0]), PATIENT_SCHEMA)
    assert sent_bodies(emulator)[-1]["text"]["format"]["name"] == "patient_info"


async def test_json_object_adds_a_json_message_only_when_needed(emulator: Emulator) -> None:
    status, error = await post_raw(emulator, base_body(text={"format": {"type": "json_object"}}))
    assert (status, error["param"]) == (400, "text.format")

    prompts = ["List three fruits.", "Give me JSON about pears."]
    results = await run(
        emulator,
        prompts,
        response_format={"type": "json_object"},
        system_prompt="Answer in JSON.",  # instructions alone do not satisfy the API
    )
    assert results["total_success"] == 2
    assert all(isinstance(orjson.loads(text), dict) for text in parse_responses(results))
    inputs = sorted((body["input"] for body in sent_bodies(emulator)), key=str)
    assert "Give me JSON about pears." in inputs  # already mentions JSON: sent untouched
    [noted] = [i for i in inputs if isinstance(i, list)]
    assert noted == [JSON_NOTE, {"role": "user", "content": "List three fruits."}]


async def test_pydantic_response_format_round_trips(emulator: Emulator) -> None:
    results = await run(emulator, ["Ann, 30, checkup", "Bob, emergency"], response_format=Visit)
    assert results["total_success"] == 2
    visits = parse_responses_as(results, Visit)
    assert all(isinstance(visit, Visit) for visit in visits)
    fmt = sent_bodies(emulator)[-1]["text"]["format"]
    assert fmt["strict"] is True and fmt["name"] == "Visit"


async def test_chat_tools_and_tool_choice_are_translated(emulator: Emulator) -> None:
    status, error = await post_raw(emulator, base_body(tools=[SEED_TOOL]))
    assert (status, error["param"]) == (400, "tools[0].name")
    named_chat = {"type": "function", "function": {"name": "get_weather"}}
    native_tool = translate_tool(SEED_TOOL, "tools[0]")
    status, error = await post_raw(emulator, base_body(tools=[native_tool], tool_choice=named_chat))
    assert (status, error["param"]) == (400, "tool_choice.name")

    results = await run(
        emulator,
        ["What's the weather in San Francisco?"],
        tools=[SEED_TOOL],
        tool_choice=named_chat,
    )
    [raw] = parse_responses(results)  # only a tool call: the raw JSON comes back
    [call] = orjson.loads(raw)["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    arguments = orjson.loads(call["arguments"])
    jsonschema.validate(arguments, SEED_TOOL["function"]["parameters"])  # type: ignore[index]
    sent = sent_bodies(emulator)[-1]
    assert sent["tools"][0]["strict"] is False and "function" not in sent["tools"][0]


async def test_chat_allowed_tools_choice_is_translated(emulator: Emulator) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        },
    }
    results = await run(emulator, ["Anything."], tools=[SEED_TOOL], tool_choice=choice)
    [call] = orjson.loads(results["results"][0]["raw_response"])["output"]
    assert call["type"] == "function_call"  # untranslated, the emulator allows no tool


async def test_reasoning_parameters_are_nested(emulator: Emulator) -> None:
    status, error = await post_raw(emulator, base_body(model="o3-mini", reasoning_effort="high"))
    assert (status, error["param"]) == (400, "reasoning_effort")

    results = await run(
        emulator,
        ["What is 1234 * 5678?"],
        model="o3-mini",
        reasoning_effort="high",
        reasoning_summary="detailed",
    )
    response = orjson.loads(results["results"][0]["raw_response"])
    assert response["reasoning"] == {"effort": "high", "summary": "detailed"}
    assert results["results"][0]["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
    assert parse_responses(results)[0].startswith("Emulated answer")  # summary is not text


async def test_every_other_parameter_reaches_the_wire_by_its_api_name(emulator: Emulator) -> None:
    options: dict[str, Any] = {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 500,
        "parallel_tool_calls": False,
        "include": ["file_search_call.results"],
        "store": False,
        "truncation": "auto",
        "metadata": {"batch": "b-7"},
        "service_tier": "flex",
        "tools": [{"type": "web_search", "search_context_size": "low"}],  # built-in: as is
        "tool_choice": "required",
    }
    results = await run(emulator, ["hi"], system_prompt="Be kind.", **options)
    assert results["total_success"] == 1
    sent = sent_bodies(emulator)[-1]
    assert {key: sent[key] for key in options} == options
    assert sent["instructions"] == "Be kind." and sent["model"] == "gpt-4o-mini"
    assert sent["input"] == "hi"


async def test_input_items_and_multi_turn(emulator: Emulator) -> None:
    first = await run(emulator, ["Name a colour."])
    response_id = orjson.loads(first["results"][0]["raw_response"])["id"]
    items = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Describe this picture."},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
            ],
        }
    ]
    results = await run(emulator, [items, "And elaborate?"], previous_response_id=response_id)
    assert results["total_success"] == 2
    texts = parse_responses(results)
    assert "Describe this picture." in texts[0] and "And elaborate?" in texts[1]
    assert results["results"][1]["usage"]["input_tokens_details"]["cached_tokens"] > 0


async def test_untranslatable_prompt_in_a_lazy_source_fails_only_that_item(
    emulator: Emulator,
) -> None:
    request = request_for(emulator, iter(["fine", 42, "also fine"]))
    results = await ResponsesProcessor().process_batch(request)
    assert [r["success"] for r in results["results"]] == [True, False, True]
    bad = results["results"][1]
    assert bad["param"] == "user_prompts" and bad["attempts"] == 0
    assert "user_prompts[1]" in bad["error"]
    assert emulator.stats.total("responses") == 2


# Prompt caching: prompt_cache_key and prompt_cache_retention

CACHED_SYSTEM = "Follow the house rules. " * 200
"""About 1,200 tokens at the emulator's 4 characters a token: above the 1,024 cached."""


def cache_keys_sent(emulator: Emulator) -> Counter[str | None]:
    return Counter(body.get("prompt_cache_key") for body in sent_bodies(emulator))


async def test_prompt_cache_fields_pass_through_and_are_checked(emulator: Emulator) -> None:
    emulator.config.prompt_caching = True
    out = await run(
        emulator,
        ["a", "b"],
        system_prompt=CACHED_SYSTEM,
        prompt_cache_key="tenant-7",
        prompt_cache_retention="24h",
    )
    assert out["total_success"] == 2
    for body in sent_bodies(emulator):
        assert body["prompt_cache_key"] == "tenant-7"
        assert body["prompt_cache_retention"] == "24h"
    assert emulator.stats.prompt_cache_lookups == {"miss": 1, "hit": 1}
    for bad, error in (
        ({"prompt_cache_key": "k" * 65}, ValueError),
        ({"prompt_cache_key": ""}, ValueError),
        ({"prompt_cache_key": 7}, TypeError),
        ({"prompt_cache_retention": "1h"}, ValueError),
    ):
        name = next(iter(bad))
        with pytest.raises(error, match=name):
            request_for(emulator, ["a"], **bad)


async def test_auto_keys_stay_within_each_machines_minute_on_2000_requests(
    emulator: Emulator,
) -> None:
    """2,000 requests sharing a prefix within a minute: the fewest keys of at most 15
    requests each, so the emulator's cache machines (15 a minute per prefix and key) spill
    none and serve all but each key's first request from cache."""
    emulator.config.prompt_caching = True
    prompts = [f"row {n}" for n in range(2000)]
    processor = ResponsesProcessor()
    request = request_for(
        emulator,
        prompts,
        system_prompt=CACHED_SYSTEM,
        prompt_cache_key="auto",
        max_concurrent_requests=64,
    )
    out = await processor.process_batch(request)
    assert out["total_success"] == 2000
    lookups = emulator.stats.prompt_cache_lookups
    assert lookups["spill"] == 0, "no machine asked past its share of the minute"
    keys = math.ceil(2000 / PER_KEY_MINUTE)
    assert lookups == {"miss": keys, "hit": 2000 - keys}, "one miss per key: each filled"
    seen = cache_keys_sent(emulator)  # the last 1,000 requests the emulator kept
    assert max(seen.values()) <= PER_KEY_MINUTE and None not in seen and "auto" not in seen
    summary = processor.last_summary
    assert summary is not None and summary.cached_tokens > 0.85 * summary.input_tokens
    assert summary.as_dict()["cache_saving_usd"] > 0


async def test_one_key_for_a_hot_prefix_spills_what_auto_keeps(emulator: Emulator) -> None:
    emulator.config.prompt_caching = True
    prompts = [f"row {n}" for n in range(60)]
    await run(emulator, prompts, system_prompt=CACHED_SYSTEM, prompt_cache_key="one")
    assert emulator.stats.prompt_cache_lookups == {"miss": 1, "hit": 14, "spill": 45}


async def test_auto_keys_are_the_same_on_a_rerun_and_the_journal_still_matches(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The planned key is added when a request is sent, not to the body the journal's
    digest is taken of: a rerun is answered from the journal, and a fresh run of the same
    prefix plans the same key names (so a later run finds the caches the first warmed)."""
    emulator.config.prompt_caching = True
    prompts = [f"row {n}" for n in range(20)]
    journal = tmp_path / "run.journal"
    first = await ResponsesProcessor().process_batch(
        request_for(emulator, prompts, system_prompt=CACHED_SYSTEM, prompt_cache_key="auto"),
        journal=journal,
    )
    keys = cache_keys_sent(emulator)
    assert sorted(keys.values()) == [5, 15] and len(keys) == 2
    again = await ResponsesProcessor().process_batch(
        request_for(emulator, prompts, system_prompt=CACHED_SYSTEM, prompt_cache_key="auto"),
        journal=journal,
    )
    assert all(result["from_journal"] for result in again["results"])
    assert len(sent_bodies(emulator)) == 20, "nothing sent again"
    assert again["results"] == [{**r, "from_journal": True} for r in first["results"]]
    emulator.stats.received.clear()
    await ResponsesProcessor().process_batch(
        request_for(emulator, prompts, system_prompt=CACHED_SYSTEM, prompt_cache_key="auto")
    )
    assert set(cache_keys_sent(emulator)) == set(keys)


def test_a_key_reopens_when_its_minute_has_passed() -> None:
    """The plan fills key 0 first, opens key 1 only when key 0 has 15 requests in the last
    minute, and returns to key 0 once its oldest request is a minute old."""
    now = [0.0]
    keys = CacheKeys(clock=lambda: now[0])
    planned = []
    for _ in range(20):
        planned.append(keys.key("abcd0123"))
        now[0] += 1.0
    assert planned == ["gc-abcd0123-0"] * 15 + ["gc-abcd0123-1"] * 5
    now[0] = 60.5  # key 0's first request is a minute old
    assert keys.key("abcd0123") == "gc-abcd0123-0"
    assert keys.key("other000") == "gc-other000-0"


def test_a_body_template_pickles_with_its_input_digest() -> None:
    """Ray ships a processor to its actors by pickle: the template's hash state (which
    cannot be pickled) is rebuilt from its prefix, and names the same bodies."""
    request = ResponsesRequest(
        system_prompt="Be brief.",
        user_prompts=["x"],
        model="gpt-4o-mini",
        response_format={"type": "text"},
        api_key="sk-test",
    )
    template = BodyTemplate.build(request)
    copied = pickle.loads(pickle.dumps(template))
    assert copied == template
    assert copied.input_digest("a prompt") == template.input_digest("a prompt")
    assert copied.input_digest("a prompt") != copied.input_digest("another prompt")
