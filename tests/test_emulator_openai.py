"""The emulated `/v1/responses` speaks the real wire format: the official SDK drives it."""

from __future__ import annotations

import math
import re
import time
import typing
from collections.abc import Mapping
from typing import Any

import aiohttp
import jsonschema
import multidict
import openai
import orjson
import pytest
from openai.types.responses import Response
from openai.types.responses import response_create_params as create_params
from pydantic import BaseModel

from genai_coroutines.emulator import FAULT_KINDS, Emulator, EmulatorConfig
from genai_coroutines.emulator.openai_api import mask_key
from genai_coroutines.emulator.openai_output import (
    FAULT_AFTER_DELTAS,
    REASONING_TOKENS,
    STREAM_FAILURE,
    chunks,
    input_tokens,
)
from genai_coroutines.emulator.openai_validate import (
    INCLUDABLE,
    REASONING_EFFORTS,
    REASONING_SUMMARIES,
    REQUEST_FIELDS,
    SERVICE_TIERS,
)
from genai_coroutines.emulator.state import digest

GO_DURATION = re.compile(r"^(?=\d)(\d+h)?(\d+m(?!s))?(\d+(\.\d+)?s)?$|^\d+ms$")
RATE_HEADERS = [
    f"x-ratelimit-{field}-{kind}"
    for field in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}
INVOICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "number": {"type": "string", "minLength": 3, "maxLength": 12},
        "issued": {"type": "string", "format": "date"},
        "total": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "paid": {"type": "boolean"},
        "status": {"enum": ["draft", "sent", "paid"]},
        "currency": {"const": "EUR"},
        "lines": {"type": "array", "minItems": 1, "maxItems": 4, "items": {"$ref": "#/$defs/line"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    },
    "required": [
        "number",
        "issued",
        "total",
        "paid",
        "status",
        "currency",
        "lines",
        "note",
        "tags",
    ],
    "additionalProperties": False,
    "$defs": {
        "line": {
            "type": "object",
            "properties": {
                "sku": {"type": "string"},
                "quantity": {"type": "integer", "minimum": 1, "exclusiveMaximum": 10},
                "children": {"type": "array", "items": {"$ref": "#/$defs/line"}},
            },
            "required": ["sku", "quantity", "children"],
            "additionalProperties": False,
        }
    },
}


def json_schema_format(schema: dict[str, Any], name: str = "invoice") -> dict[str, Any]:
    return {"format": {"type": "json_schema", "name": name, "schema": schema, "strict": True}}


async def create(client: openai.AsyncOpenAI, **params: Any) -> Response:
    """Create through the SDK and check the raw body is a valid `Response` as well."""
    raw = await client.responses.with_raw_response.create(**params)
    Response.model_validate(orjson.loads(raw.content))
    return raw.parse()


async def post(
    emulator: Emulator, body: Any, key: str | None = "default"
) -> tuple[int, Mapping[str, str], Any]:
    """A raw POST, for bodies the SDK's types would refuse to build."""
    token = emulator.config.openai_api_key if key == "default" else key
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{emulator.openai_base_url}/responses", data=data, headers=headers
        ) as answer:
            return (
                answer.status,
                multidict.CIMultiDict(answer.headers),
                orjson.loads(await answer.read()),
            )


# --- wire contract with the installed SDK ------------------------------------------------


def test_request_fields_and_enums_cover_the_installed_sdk() -> None:
    sdk_fields = create_params.ResponseCreateParamsStreaming.__optional_keys__ | (
        create_params.ResponseCreateParamsStreaming.__required_keys__
    )
    assert sdk_fields <= REQUEST_FIELDS

    def literal(alias: Any) -> set[str]:
        return {arg for arg in typing.get_args(alias) if isinstance(arg, str)} | {
            value for inner in typing.get_args(alias) for value in typing.get_args(inner)
        }

    from openai.types.responses.response_includable import ResponseIncludable
    from openai.types.responses.service_tier import ServiceTier
    from openai.types.shared.reasoning_effort import ReasoningEffort

    assert literal(ReasoningEffort) <= set(REASONING_EFFORTS)
    assert literal(ServiceTier) <= set(SERVICE_TIERS)
    assert literal(ResponseIncludable) <= set(INCLUDABLE)
    assert set(REASONING_SUMMARIES) == {"auto", "concise", "detailed"}


def test_mask_key_never_shows_a_key_whole() -> None:
    long_key = "sk-proj-" + "a" * 40 + "wxyz"
    assert mask_key(long_key) == "sk-proj-" + "*" * (len(long_key) - 12) + "wxyz"
    assert mask_key("sk-emXXXX") == "sk-e***"
    assert mask_key("sk-emulator-wrong") == "sk-em***"


def test_chunks_rejoin_to_the_text() -> None:
    for text in ["", "one", "  lead and trail  ", '{"a":"averyveryverylongword"}', "a\n\nb"]:
        assert "".join(chunks(text)) == text
    assert len(chunks('{"k":"' + "x" * 40 + '"}')) > 3


# --- answers ------------------------------------------------------------------------------


async def test_plain_text_answer_echoes_request_settings(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    response = await create(
        client,
        model="gpt-4o-mini",
        input="What is the capital of the Netherlands?",
        instructions="Be brief.",
        temperature=0.2,
        metadata={"row": "17"},
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.error is None
    assert response.output_text == 'Emulated answer to "What is the capital of the Netherlands?".'
    assert (response.instructions, response.temperature, response.metadata) == (
        "Be brief.",
        0.2,
        {"row": "17"},
    )
    assert response.tool_choice == "auto" and response.tools == [] and response.store is True
    assert response.reasoning is not None and response.reasoning.effort is None
    usage = response.usage
    assert usage is not None
    expected_input = math.ceil(
        (len("Be brief.") + len("What is the capital of the Netherlands?")) / 4
    )
    assert usage.input_tokens == expected_input
    assert usage.output_tokens == math.ceil(len(response.output_text) / 4)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0


async def test_same_request_same_answer(client: openai.AsyncOpenAI) -> None:
    params: dict[str, Any] = {
        "model": "gpt-4o",
        "input": "Invoice 42 from Acme",
        "text": json_schema_format(INVOICE_SCHEMA),
    }
    first, second = await create(client, **params), await create(client, **params)
    assert first.output_text == second.output_text and first.id != second.id


@pytest.mark.parametrize(
    "text", ["Invoice 42 from Acme GmbH", "Receipt for coffee beans", "x", "日本語のテキスト"]
)
async def test_json_schema_output_validates(client: openai.AsyncOpenAI, text: str) -> None:
    response = await create(
        client, model="gpt-4o", input=text, text=json_schema_format(INVOICE_SCHEMA)
    )
    jsonschema.validate(orjson.loads(response.output_text), INVOICE_SCHEMA)


async def test_sdk_parse_with_a_pydantic_model(client: openai.AsyncOpenAI) -> None:
    class Line(BaseModel):
        sku: str
        quantity: int

    class Invoice(BaseModel):
        number: str
        lines: list[Line]
        note: str | None

    parsed = await client.responses.parse(model="gpt-4o", input="Invoice 7", text_format=Invoice)
    assert isinstance(parsed.output_parsed, Invoice)


async def test_json_object_answer_is_an_object(client: openai.AsyncOpenAI) -> None:
    response = await create(
        client,
        model="gpt-4o",
        input="Reply in JSON please",
        text={"format": {"type": "json_object"}},
    )
    assert isinstance(orjson.loads(response.output_text), dict)


async def test_required_tool_choice_calls_with_schema_valid_arguments(
    client: openai.AsyncOpenAI,
) -> None:
    response = await create(
        client, model="gpt-4o", input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
    )
    [call] = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.status == "completed"
    jsonschema.validate(orjson.loads(call.arguments), WEATHER["parameters"])
    assert response.tools[0].type == "function" and response.tool_choice == "required"


async def test_named_function_and_auto_rules(client: openai.AsyncOpenAI) -> None:
    other = {**WEATHER, "name": "get_time", "parameters": None, "strict": False}
    named = await create(
        client,
        model="gpt-4o",
        input="hi",
        tools=[WEATHER, other],
        tool_choice={"type": "function", "name": "get_time"},
    )
    assert named.output[0].type == "function_call" and named.output[0].name == "get_time"
    assert orjson.loads(named.output[0].arguments) == {}
    mentioned = await create(
        client, model="gpt-4o", input="Use get_weather for Oslo", tools=[WEATHER]
    )
    assert mentioned.output[0].type == "function_call"
    plain = await create(client, model="gpt-4o", input="Just chat", tools=[WEATHER])
    assert plain.output[0].type == "message"
    call = mentioned.output[0]
    assert call.type == "function_call"
    answered = await create(
        client,
        model="gpt-4o",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Use get_weather for Oslo"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 3}'},
        ],
    )
    assert answered.output[0].type == "message"


async def test_reasoning_models_add_a_reasoning_item(client: openai.AsyncOpenAI) -> None:
    summarized = await create(
        client,
        model="gpt-5-mini",
        input="Think",
        reasoning={"effort": "high", "summary": "auto"},
        include=["reasoning.encrypted_content"],
    )
    reasoning, message = summarized.output
    assert reasoning.type == "reasoning" and reasoning.summary and reasoning.encrypted_content
    assert message.type == "message"
    assert summarized.usage is not None
    assert summarized.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS["high"]
    assert summarized.reasoning is not None and summarized.reasoning.effort == "high"
    silent = await create(client, model="o4-mini", input="Think")
    assert silent.output[0].type == "reasoning" and silent.output[0].summary == []
    assert silent.reasoning is not None and silent.reasoning.effort == "medium"
    none = await create(client, model="gpt-5.1", input="Think", reasoning={"effort": "none"})
    assert [item.type for item in none.output] == ["message"]


async def test_refusal_marker(client: openai.AsyncOpenAI) -> None:
    response = await create(
        client,
        model="gpt-4o",
        input="Please [[refuse]] this",
        tools=[WEATHER],
        tool_choice="required",
    )
    [message] = response.output
    assert message.type == "message" and message.content[0].type == "refusal"
    assert response.output_text == ""


async def test_small_max_output_tokens_is_incomplete(client: openai.AsyncOpenAI) -> None:
    long_input = "word " * 200
    cut = await create(client, model="gpt-4o", input=long_input, max_output_tokens=16)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage is not None and cut.usage.output_tokens == 16
    assert len(cut.output_text) == 16 * 4
    thinking = await create(client, model="gpt-5", input="hi", max_output_tokens=20)
    assert [item.type for item in thinking.output] == ["reasoning"]
    assert (
        thinking.usage is not None and thinking.usage.output_tokens_details.reasoning_tokens == 20
    )


async def test_previous_response_id_is_cached_context(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    first = await create(client, model="gpt-4o", input="Remember the number 7")
    second = await create(
        client, model="gpt-4o", input="Which number?", previous_response_id=first.id
    )
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens == first.usage.total_tokens
    assert second.usage.input_tokens == first.usage.total_tokens + math.ceil(
        len("Which number?") / 4
    )
    assert second.previous_response_id == first.id
    unstored = await create(client, model="gpt-4o", input="Forget me", store=False)
    for unknown in (unstored.id, "resp_nope"):
        status, _, body = await post(
            emulator, {"model": "gpt-4o", "input": "x", "previous_response_id": unknown}
        )
        assert status == 400
        assert body["error"] == {
            "message": f"Previous response with id '{unknown}' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }


# --- streaming ----------------------------------------------------------------------------


async def test_stream_event_sequence(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="gpt-4o", input="Stream a sentence for me", stream=True
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert len(deltas) > 3
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.completed"
    assert (
        "".join(deltas)
        == final.response.output_text
        == 'Emulated answer to "Stream a sentence for me".'
    )
    Response.model_validate(final.response.model_dump())
    assert events[0].type == "response.created" and events[0].response.status == "in_progress"


async def test_stream_wire_format_and_chunk_delay(emulator: Emulator) -> None:
    emulator.config.stream_chunk_delay = 0.01
    headers = {"Authorization": f"Bearer {emulator.config.openai_api_key}"}
    body = {"model": "gpt-4o", "input": "one two three four five six", "stream": True}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{emulator.openai_base_url}/responses", json=body, headers=headers
        ) as answer:
            assert answer.status == 200 and answer.content_type == "text/event-stream"
            assert all(name in answer.headers for name in RATE_HEADERS)
            text = (await answer.read()).decode()
    elapsed = time.monotonic() - started
    frames = text.split("\n\n")
    assert frames[-1] == ""
    deltas = 0
    for frame in frames[:-1]:
        event_line, data_line = frame.split("\n")
        kind = event_line.removeprefix("event: ")
        assert orjson.loads(data_line.removeprefix("data: "))["type"] == kind
        deltas += kind.endswith(".delta")
    assert elapsed >= deltas * 0.01


async def test_sdk_stream_helper_with_tools_and_reasoning(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(
        model="gpt-5",
        input="Weather in Rome",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        reasoning={"summary": "detailed"},
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.reasoning_summary_text.delta" in kinds
    reasoning, call = final.output
    assert reasoning.type == "reasoning" and call.type == "function_call"
    jsonschema.validate(orjson.loads(call.arguments), WEATHER["parameters"])


async def test_stream_refusal(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model="gpt-4o", input="[[refuse]]", stream=True)
    events = [event async for event in stream]
    refusal = "".join(event.delta for event in events if event.type == "response.refusal.delta")
    done = [event for event in events if event.type == "response.refusal.done"]
    assert refusal and done and done[0].refusal == refusal


async def test_stream_incomplete_ends_with_response_incomplete(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="gpt-4o", input="long " * 100, max_output_tokens=16, stream=True
    )
    events = [event async for event in stream]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None


# --- auth, validation ---------------------------------------------------------------------


async def test_wrong_key_is_401_with_a_masked_key(emulator: Emulator) -> None:
    wrong = "sk-emulator-wrong-key-0123456789"
    async with openai.AsyncOpenAI(
        base_url=emulator.openai_base_url, api_key=wrong, max_retries=0
    ) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.responses.create(model="gpt-4o", input="hi")
    error = caught.value
    assert (
        error.status_code == 401
        and error.code == "invalid_api_key"
        and error.type == "invalid_request_error"
    )
    assert wrong not in error.message and mask_key(wrong) in error.message
    assert error.message.endswith(
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    assert "x-ratelimit-limit-requests" not in error.response.headers
    assert emulator.stats.requests["responses 401"] == 1
    assert sum(emulator.stats.responses_by_digest.values()) == 0


async def test_missing_key_is_401(emulator: Emulator) -> None:
    status, headers, body = await post(emulator, {"model": "gpt-4o", "input": "hi"}, key=None)
    assert status == 401 and body["error"]["code"] is None
    assert body["error"]["message"].startswith("You didn't provide an API key.")
    assert headers["x-request-id"].startswith("req_")


def _without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


BASE: dict[str, Any] = {"model": "gpt-4o", "input": "hello"}
CHAT_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}
INVALID_BODIES: list[tuple[str, dict[str, Any], str | None, str | None, str]] = [
    (
        "unknown field",
        {**BASE, "max_tokens": 5},
        "max_tokens",
        "unknown_parameter",
        "Unknown parameter: 'max_tokens'.",
    ),
    (
        "response_format",
        {**BASE, "response_format": {"type": "json_object"}},
        "response_format",
        "unsupported_parameter",
        "Unsupported parameter: 'response_format'. In the Responses API, this parameter has "
        "moved to 'text.format'.",
    ),
    (
        "missing model",
        _without(BASE, "model"),
        "model",
        "missing_required_parameter",
        "Missing required parameter: 'model'.",
    ),
    (
        "chat tool",
        {**BASE, "tools": [CHAT_TOOL]},
        "tools[0].name",
        "missing_required_parameter",
        "Missing required parameter: 'tools[0].name'.",
    ),
    (
        "chat tool_choice",
        {
            **BASE,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        "tool_choice.name",
        "missing_required_parameter",
        "Missing required parameter: 'tool_choice.name'.",
    ),
    (
        "tool_choice unknown function",
        {**BASE, "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
        "tool_choice",
        None,
        "Tool choice 'nope' not found in 'tools' parameter.",
    ),
    (
        "tool_choice bad option",
        {**BASE, "tool_choice": "any"},
        "tool_choice",
        "invalid_value",
        "Invalid value: 'any'. Supported values are: 'none', 'auto', and 'required'.",
    ),
    (
        "schema without name",
        {**BASE, "text": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        "text.format.name",
        "missing_required_parameter",
        "Missing required parameter: 'text.format.name'.",
    ),
    (
        "nested chat json_schema",
        {
            **BASE,
            "text": {"format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
        },
        "text.format.name",
        "missing_required_parameter",
        "Missing required parameter: 'text.format.name'.",
    ),
    (
        "schema without schema",
        {**BASE, "text": {"format": {"type": "json_schema", "name": "x"}}},
        "text.format.schema",
        "missing_required_parameter",
        "Missing required parameter: 'text.format.schema'.",
    ),
    (
        "schema bad name",
        {**BASE, "text": json_schema_format({"type": "object"}, name="my schema")},
        "text.format.name",
        "invalid_value",
        "Invalid 'text.format.name': string does not match pattern.",
    ),
    (
        "json_object without json",
        {**BASE, "instructions": "Answer in JSON", "text": {"format": {"type": "json_object"}}},
        "text.format",
        None,
        "Response input messages must contain the word 'json' in some form to use 'text.format' "
        "of type 'json_object'.",
    ),
    (
        "format type",
        {**BASE, "text": {"format": {"type": "xml"}}},
        "text.format.type",
        "invalid_value",
        "Invalid value: 'xml'. Supported values are: 'text', 'json_schema', and 'json_object'.",
    ),
    (
        "temperature high",
        {**BASE, "temperature": 2.5},
        "temperature",
        "decimal_above_max_value",
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 "
        "instead.",
    ),
    (
        "temperature low",
        {**BASE, "temperature": -1},
        "temperature",
        "decimal_below_min_value",
        "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, but got -1 "
        "instead.",
    ),
    (
        "temperature type",
        {**BASE, "temperature": "hot"},
        "temperature",
        "invalid_type",
        "Invalid type for 'temperature': expected a decimal, but got a string instead.",
    ),
    (
        "top_p",
        {**BASE, "top_p": 1.5},
        "top_p",
        "decimal_above_max_value",
        "Invalid 'top_p': decimal above maximum value. Expected a value <= 1, but got 1.5 instead.",
    ),
    (
        "max_output_tokens",
        {**BASE, "max_output_tokens": 8},
        "max_output_tokens",
        "integer_below_min_value",
        "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but "
        "got 8 instead.",
    ),
    (
        "effort",
        {**BASE, "reasoning": {"effort": "extreme"}},
        "reasoning.effort",
        "invalid_value",
        "Invalid value: 'extreme'. Supported values are: 'none', 'minimal', 'low', 'medium', "
        "'high', 'xhigh', and 'max'.",
    ),
    (
        "summary",
        {**BASE, "reasoning": {"summary": "verbose"}},
        "reasoning.summary",
        "invalid_value",
        "Invalid value: 'verbose'. Supported values are: 'concise', 'detailed', and 'auto'.",
    ),
    (
        "service tier",
        {**BASE, "service_tier": "turbo"},
        "service_tier",
        "invalid_value",
        "Invalid value: 'turbo'.",
    ),
    (
        "chat role",
        {**BASE, "input": [{"role": "tool", "content": "x"}]},
        "input[0]",
        "invalid_value",
        "Invalid value: 'tool'. Supported values are: 'assistant', 'system', 'developer', and "
        "'user'.",
    ),
    (
        "chat content part",
        {**BASE, "input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
        "input[0].content[0].type",
        "invalid_value",
        "Invalid value: 'text'. Supported values are: 'input_text'",
    ),
    (
        "include",
        {**BASE, "include": ["everything"]},
        "include[0]",
        "invalid_value",
        "Invalid value: 'everything'.",
    ),
    (
        "stream type",
        {**BASE, "stream": "yes"},
        "stream",
        "invalid_type",
        "Invalid type for 'stream': expected a boolean, but got a string instead.",
    ),
]


@pytest.mark.parametrize(
    ("body", "param", "code", "message"),
    [case[1:] for case in INVALID_BODIES],
    ids=[case[0] for case in INVALID_BODIES],
)
async def test_invalid_bodies_get_the_real_400(
    emulator: Emulator, body: dict[str, Any], param: str | None, code: str | None, message: str
) -> None:
    status, headers, answer = await post(emulator, body)
    assert status == 400
    error = answer["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"].startswith(message)
    assert all(name in headers for name in RATE_HEADERS)
    assert emulator.stats.requests["responses 400"] == 1


async def test_json_word_in_any_input_message_is_enough(client: openai.AsyncOpenAI) -> None:
    response = await create(
        client,
        model="gpt-4o",
        input=[
            {"role": "developer", "content": "Reply as Json."},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        ],
        text={"format": {"type": "json_object"}},
    )
    assert isinstance(orjson.loads(response.output_text), dict)


async def test_invalid_json_body(emulator: Emulator) -> None:
    status, _, body = await post(emulator, b'{"model": ')
    assert status == 400 and body["error"]["message"].startswith("We could not parse the JSON body")
    assert emulator.stats.received[-1]["body"] == '{"model": '


async def test_bad_request_through_the_sdk(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="gpt-4o", input="hi", temperature=3)
    assert caught.value.param == "temperature" and caught.value.code == "decimal_above_max_value"


# --- rate limits, quota, headers ----------------------------------------------------------


async def test_rpm_limit(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.openai_rpm = 60
    emulator.config.burst_seconds = 2.0  # a bucket of 2 requests, refilled at 1/s
    remaining = []
    for _ in range(2):
        raw = await client.responses.with_raw_response.create(model="gpt-4o", input="hi")
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert raw.headers["x-ratelimit-limit-requests"] == "60"
    assert remaining == [1, 0]
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-4o", input="hi")
    error = caught.value
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.body["message"].startswith(
        "Rate limit reached for gpt-4o in organization org-emulator on requests per min (RPM): "
        "Limit 60, Used 60, Requested 1. Please try again in "
    )
    headers = error.response.headers
    retry_ms = float(headers["retry-after-ms"])
    assert 0 < retry_ms <= 1000 and int(headers["retry-after"]) == math.ceil(retry_ms / 1000)
    assert all(
        GO_DURATION.match(headers[f"x-ratelimit-reset-{kind}"]) for kind in ("requests", "tokens")
    )
    assert emulator.stats.rate_limited == 1 and emulator.stats.requests["responses 429"] == 1
    emulator.openai.reset_limits()
    await create(client, model="gpt-4o", input="hi")


async def test_tpm_limit_gives_the_request_back(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.openai_rpm = 600
    emulator.config.openai_tpm = 6000
    emulator.config.burst_seconds = 1.0  # 10 requests, 100 tokens
    raw = await client.responses.with_raw_response.create(
        model="gpt-4o", input="hi", max_output_tokens=60
    )
    used = raw.parse().usage
    assert used is not None and used.total_tokens < 60
    # charged input + max_output_tokens, then corrected to the real total
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 100 - used.total_tokens
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=99)
    assert (
        caught.value.type == "tokens" and "tokens per min (TPM): Limit 6000" in caught.value.message
    )
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "9"


async def test_request_too_large_never_passes(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.openai_tpm = 600
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=1000)
    assert caught.value.type == "tokens" and caught.value.code == "rate_limit_exceeded"
    assert caught.value.body["message"].startswith(
        "Request too large for gpt-4o in organization org-emulator on tokens per min (TPM): "
        "Limit 600, Requested 1001. "
        "The input or output tokens must be reduced in order to run successfully."
    )
    assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "600"


async def test_insufficient_quota(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.insufficient_quota = True
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-4o", input="hi")
    assert caught.value.body == {
        "message": "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }


async def test_a_split_reply_reaches_the_sdk_whole_and_late(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.openai_split_body_seconds = 0.2
    started = time.monotonic()
    raw = await client.responses.with_raw_response.create(model="gpt-4o", input="hi")
    assert raw.headers.get("content-length") is not None
    assert raw.parse().output_text and time.monotonic() - started >= 0.2
    emulator.config.insufficient_quota = True
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-4o", input="hi")
    assert caught.value.code == "insufficient_quota"


async def test_headers_on_every_answer(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    raw = await client.responses.with_raw_response.create(model="gpt-4o", input="hi")
    assert raw.headers["x-ratelimit-limit-requests"] == "1000000"
    assert raw.headers["x-ratelimit-limit-tokens"] == "1000000000"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-processing-ms"].isdigit()
    emulator.config.openai_tpm = 100_000
    tokens = []
    for _ in range(3):  # ~500 tokens each, far above what refills between two requests
        raw = await client.responses.with_raw_response.create(model="gpt-4o", input="hi " * 600)
        tokens.append(int(raw.headers["x-ratelimit-remaining-tokens"]))
        assert GO_DURATION.match(raw.headers["x-ratelimit-reset-tokens"])
    assert tokens[0] > tokens[1] > tokens[2]
    assert int(raw.headers["x-ratelimit-limit-tokens"]) == 100_000


def test_token_cost(emulator: Emulator) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "input": "abcdefgh", "instructions": "abcd"}
    assert input_tokens(body) == 3
    assert emulator.openai.token_cost(body) == 3 + EmulatorConfig().default_output_tokens
    assert emulator.openai.token_cost({**body, "max_output_tokens": 100}) == 103
    emulator.config.default_output_tokens = 1000
    assert emulator.openai.token_cost(body) == 1003
    assert input_tokens(
        {"model": "gpt-4o", "input": [{"role": "user", "content": "hi"}]}
    ) == math.ceil(len(b'[{"role":"user","content":"hi"}]') / 4)


async def test_latency_is_applied(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.latency = 0.05
    started = time.monotonic()
    await create(client, model="gpt-4o", input="hi")
    assert time.monotonic() - started >= 0.015  # lognormal, sigma 0.25: far above 0.05 * e^-4


# --- stats and faults ---------------------------------------------------------------------


async def test_stats_record_what_crossed_the_wire(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    await create(client, model="gpt-4o", input="count me")
    status, _, _ = await post(emulator, {"model": "gpt-4o", "input": "count me", "temperature": 9})
    assert status == 400
    key = digest(orjson.dumps("count me"))
    assert emulator.stats.responses_by_digest[key] == 2
    assert emulator.stats.completed_by_digest[key] == 1
    seen = emulator.stats.received[-2]
    assert seen["endpoint"] == "responses" and seen["body"] == {
        "model": "gpt-4o",
        "input": "count me",
    }
    assert "authorization" not in {name.lower() for name in seen["headers"]}
    assert seen["headers"]["x-stainless-retry-count"] == "0"


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("500", openai.InternalServerError, 500),
        ("503", openai.InternalServerError, 503),
        ("504", openai.InternalServerError, 504),
        ("408", openai.APIStatusError, 408),
        ("409", openai.APIStatusError, 409),
    ],
)
async def test_status_faults(
    emulator: Emulator,
    client: openai.AsyncOpenAI,
    kind: str,
    error: type[openai.APIStatusError],
    status: int,
) -> None:
    emulator.faults.schedule("responses", kind)
    with pytest.raises(error) as caught:
        await client.responses.create(model="gpt-4o", input="hi")
    assert caught.value.status_code == status
    assert emulator.stats.faults[f"responses {kind}"] == 1
    assert emulator.stats.requests[f"responses {status}"] == 1
    assert sum(emulator.stats.responses_by_digest.values()) == 0


async def test_502_is_a_proxy_html_page(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.faults.schedule("responses", "502")
    with pytest.raises(openai.InternalServerError) as caught:
        await client.responses.create(model="gpt-4o", input="hi")
    assert caught.value.status_code == 502 and "502 Bad Gateway" in caught.value.response.text
    assert emulator.stats.requests["responses 502"] == 1


async def test_reset_is_a_connection_error(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.faults.schedule("responses", "reset")
    with pytest.raises(openai.APIConnectionError):
        await client.responses.create(model="gpt-4o", input="hi")
    assert emulator.stats.faults["responses reset"] == 1 and emulator.stats.total("responses") == 0


@pytest.mark.parametrize("kind", ["hang", "stall"])
async def test_hang_and_stall_time_out(
    emulator: Emulator, client: openai.AsyncOpenAI, kind: str
) -> None:
    emulator.config.hang_seconds = 30
    emulator.faults.schedule("responses", kind)
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=1.0).responses.create(model="gpt-4o", input="hi")
    assert emulator.stats.faults[f"responses {kind}"] == 1
    assert emulator.stats.completed_by_digest == {}


async def test_malformed_is_a_200_that_is_not_json(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("responses", "malformed")
    with pytest.raises(ValueError):
        await client.responses.create(model="gpt-4o", input="hi")
    assert (
        emulator.stats.requests["responses 200"] == 1 and emulator.stats.completed_by_digest == {}
    )


async def test_slow_answers_late_but_right(emulator: Emulator, client: openai.AsyncOpenAI) -> None:
    emulator.config.slow_seconds = 0.1
    emulator.faults.schedule("responses", "slow")
    started = time.monotonic()
    response = await create(client, model="gpt-4o", input="hi")
    assert time.monotonic() - started >= 0.1 and response.status == "completed"
    assert (
        emulator.stats.faults["responses slow"] == 1
        and emulator.stats.requests["responses 200"] == 1
    )


async def test_sdk_retries_a_fault_and_the_wire_shows_it(emulator: Emulator) -> None:
    emulator.faults.schedule("responses", "503")
    async with openai.AsyncOpenAI(
        base_url=emulator.openai_base_url, api_key=emulator.config.openai_api_key, max_retries=1
    ) as sdk:
        response = await sdk.responses.create(model="gpt-4o", input="retry me")
    assert response.status == "completed"
    assert [seen["headers"]["x-stainless-retry-count"] for seen in emulator.stats.received] == [
        "0",
        "1",
    ]
    assert (
        emulator.stats.requests["responses 503"] == 1
        and emulator.stats.requests["responses 200"] == 1
    )
    assert emulator.stats.completed_by_digest[digest(orjson.dumps("retry me"))] == 1


@pytest.mark.parametrize(("kind", "status"), [("503-retry-after", 503), ("429-retry-after", 429)])
async def test_retry_after_faults_ask_for_the_configured_wait(
    emulator: Emulator, client: openai.AsyncOpenAI, kind: str, status: int
) -> None:
    emulator.config.fault_retry_after = 0.25
    emulator.faults.schedule("responses", kind)
    with pytest.raises(openai.APIStatusError) as caught:
        await client.responses.create(model="gpt-4o", input="hi")
    assert caught.value.status_code == status
    headers = caught.value.response.headers
    assert headers["retry-after-ms"] == "250" and headers["retry-after"] == "1"
    assert emulator.stats.faults[f"responses {kind}"] == 1


async def test_500_no_retry_stops_the_sdk_retrying(emulator: Emulator) -> None:
    emulator.faults.schedule("responses", "500-no-retry", times=4)
    async with openai.AsyncOpenAI(
        base_url=emulator.openai_base_url, api_key=emulator.config.openai_api_key, max_retries=3
    ) as sdk:
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk.responses.create(model="gpt-4o", input="hi")
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert emulator.stats.requests == {"responses 500": 1}


async def test_400_should_retry_makes_the_sdk_retry_a_client_error(emulator: Emulator) -> None:
    emulator.faults.schedule("responses", "400-should-retry")
    async with openai.AsyncOpenAI(
        base_url=emulator.openai_base_url, api_key=emulator.config.openai_api_key, max_retries=1
    ) as sdk:
        response = await sdk.responses.create(model="gpt-4o", input="retry me")
    assert response.status == "completed"
    assert emulator.stats.requests == {"responses 400": 1, "responses 200": 1}
    retry_counts = [seen["headers"]["x-stainless-retry-count"] for seen in emulator.stats.received]
    assert retry_counts == ["0", "1"]


async def stream_events_of(client: openai.AsyncOpenAI, text: str) -> list[Any]:
    stream = await client.responses.create(model="gpt-4o", input=text, stream=True)
    return [event async for event in stream]


async def test_stream_error_is_an_error_event_after_a_few_deltas(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("responses", "stream-error")
    events = await stream_events_of(client, "Stream a sentence for me")
    assert [event.type for event in events[-4:]] == ["response.output_text.delta"] * 3 + ["error"]
    assert sum(event.type.endswith(".delta") for event in events) == FAULT_AFTER_DELTAS
    error = events[-1]
    assert error.code == "server_error" and error.message == STREAM_FAILURE
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert emulator.stats.faults["responses stream-error"] == 1
    assert emulator.stats.completed_by_digest == {}  # a broken stream is not a paid answer


async def test_stream_failed_ends_with_response_failed_and_the_configured_code(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.config.fault_error_code = "invalid_image"
    emulator.faults.schedule("responses", "stream-failed")
    events = await stream_events_of(client, "Stream a sentence for me")
    assert events[-2].type == "response.output_text.delta"
    failed = events[-1]
    assert failed.type == "response.failed" and failed.sequence_number == len(events) - 1
    assert failed.response.status == "failed" and failed.response.error is not None
    assert failed.response.error.code == "invalid_image"
    assert failed.response.error.message == STREAM_FAILURE
    assert emulator.stats.completed_by_digest == {}


async def test_stream_cut_ends_without_a_terminal_event(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("responses", "stream-cut")
    async with client.responses.stream(model="gpt-4o", input="Stream a sentence for me") as stream:
        kinds = [event.type async for event in stream]
        with pytest.raises(RuntimeError, match="response.completed"):
            await stream.get_final_response()
    assert kinds[-1] == "response.output_text.delta"
    assert kinds.count("response.output_text.delta") == FAULT_AFTER_DELTAS
    assert emulator.stats.requests == {"responses 200": 1}
    assert emulator.stats.completed_by_digest == {}


async def test_stream_reframed_is_the_same_stream_framed_as_a_proxy_might(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("responses", "stream-reframed")
    body = {"model": "gpt-4o", "input": "Stream a sentence for me", "stream": True}
    headers = {"Authorization": f"Bearer {emulator.config.openai_api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{emulator.openai_base_url}/responses", json=body, headers=headers
        ) as answer:
            raw = await answer.read()
    assert raw.startswith(b": keep-alive\r\n\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    frames = raw.split(b"\r\n\r\n")[1:-1]
    assert frames and all(frame.count(b"\r\ndata: ") > 2 for frame in frames)

    plain = await stream_events_of(client, "Stream a sentence for me")
    emulator.faults.schedule("responses", "stream-reframed")
    reframed = await stream_events_of(client, "Stream a sentence for me")
    assert [event.type for event in reframed] == [event.type for event in plain]
    assert reframed[-1].response.output_text == plain[-1].response.output_text
    assert emulator.stats.faults["responses stream-reframed"] == 2


async def test_stream_faults_wait_for_a_streaming_request(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("responses", "stream-cut")
    emulator.faults.schedule("responses", "503")
    with pytest.raises(openai.InternalServerError):  # the 503 passes the waiting stream fault
        await client.responses.create(model="gpt-4o", input="plain")
    assert (await create(client, model="gpt-4o", input="plain")).status == "completed"
    events = await stream_events_of(client, "Stream a sentence for me")
    assert events[-1].type == "response.output_text.delta"
    assert (await stream_events_of(client, "again"))[-1].type == "response.completed"


async def test_a_fault_aimed_at_an_input_marker(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    emulator.faults.schedule("responses", "503", when_input_contains="[[second]]")
    await create(client, model="gpt-4o", input="the first")
    marked = [{"role": "user", "content": [{"type": "input_text", "text": "the [[second]]"}]}]
    with pytest.raises(openai.InternalServerError):
        await create(client, model="gpt-4o", input=marked)
    await create(client, model="gpt-4o", input="the [[second]] again")  # it was used up
    assert emulator.stats.requests == {"responses 200": 2, "responses 503": 1}


def test_schedule_refuses_faults_that_could_never_fire(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.faults.schedule("responses", "503-later")
    with pytest.raises(ValueError, match="'responses' only"):
        emulator.faults.schedule("marker_poll", "stream-cut")
    with pytest.raises(ValueError, match="'responses' only"):
        emulator.faults.schedule("marker_poll", "500", when_input_contains="x")


def test_every_fault_kind_is_covered_here() -> None:
    covered = {"500", "502", "503", "504", "reset", "hang", "stall", "malformed", "slow"}
    covered |= {"503-retry-after", "500-no-retry", "400-should-retry"}
    covered |= {"stream-error", "stream-failed", "stream-cut", "stream-reframed"}
    assert covered == set(FAULT_KINDS)


async def test_a_request_within_the_tpm_limit_but_above_the_burst_borrows(
    emulator: Emulator, client: openai.AsyncOpenAI
) -> None:
    """With a bucket banking one second (100 of 6,000 TPM), a request of 1,000 tokens is
    not "too large" (OpenAI compares with the limit per minute): it takes the full bucket
    and borrows the rest, which the next request waits to repay (the charge is kept)."""
    emulator.config.openai_tpm = 6000
    emulator.config.burst_seconds = 1.0
    emulator.config.token_accounting = "provider"
    await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=999)
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    assert caught.value.body["message"].startswith("Rate limit reached for gpt-4o")
    assert float(caught.value.response.headers["retry-after"]) >= 9
