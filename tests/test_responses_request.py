"""`ResponsesRequest`: the seed's parameters and defaults, and every bad value refused early.

Refused too: what would fail on the wire or change silently, a header that would break the
request, a JSON value (schema, tool, metadata, prompt) that cannot be sent as JSON; each
error names the parameter (or the prompt's index) and never echoes a key or header value.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest

from genai_coroutines import ResponsesRequest
from genai_coroutines.emulator import Emulator
from tests.responses_support import request, run

KEY = "sk-test-0123456789abcdefghijklmnop"
BASE: dict[str, Any] = {
    "api_key": KEY,
    "system_prompt": "Be brief.",
    "user_prompts": ["one", "two"],
    "model": "gpt-4o-mini",
    "response_format": {"type": "text"},
}

SEED_DEFAULTS = {
    "timeout_secs": 60,
    "max_concurrent_requests": 10,
    "max_retries": 5,
    "retry_delay_min_ms": 1000,
    "retry_delay_max_ms": 60000,
    "temperature": None,
    "top_p": None,
    "max_output_tokens": None,
    "reasoning_effort": None,
    "reasoning_summary": None,
    "tools": None,
    "tool_choice": None,
    "parallel_tool_calls": None,
    "previous_response_id": None,
    "include": None,
    "store": None,
    "truncation": None,
    "metadata": None,
    "service_tier": None,
    "stream": None,
}
"""The seed README's `ResponsesRequest` table: every optional parameter and its default."""


def make(**changes: Any) -> ResponsesRequest:
    return ResponsesRequest(**{**BASE, **changes})


def test_seed_parameters_have_the_seed_defaults_and_are_readable() -> None:
    request = make()
    parameters = inspect.signature(ResponsesRequest).parameters
    for name, default in SEED_DEFAULTS.items():
        assert parameters[name].default == default, name
        assert getattr(request, name) == default, name
    for required in ("system_prompt", "user_prompts", "model", "response_format"):
        assert parameters[required].default is inspect.Parameter.empty
    assert request.model == "gpt-4o-mini" and request.user_prompts == ["one", "two"]


def test_our_additions_and_their_defaults() -> None:
    request = make()
    assert request.base_url == "https://api.openai.com/v1"
    assert request.extra_headers is None
    assert request.requests_per_minute is None and request.tokens_per_minute is None
    assert request.max_retry_wait_secs == 120


@pytest.mark.parametrize("missing", ["system_prompt", "user_prompts", "model", "response_format"])
def test_required_parameters_are_required(missing: str) -> None:
    arguments = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(TypeError, match=missing):
        ResponsesRequest(**arguments)


def test_api_key_comes_from_the_environment_when_omitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    arguments = {k: v for k, v in BASE.items() if k != "api_key"}
    assert ResponsesRequest(**arguments).api_key == "sk-from-env"
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ValueError, match="api_key"):
        ResponsesRequest(**arguments)


def test_repr_shows_model_and_count_never_the_key() -> None:
    request = make()
    assert repr(request) == "ResponsesRequest(model='gpt-4o-mini', prompts=2)"
    assert KEY not in repr(request) and KEY not in str(request)
    lazy = make(user_prompts=(p for p in ["a"]))
    assert repr(lazy) == "ResponsesRequest(model='gpt-4o-mini', prompts=lazy)"


def test_request_is_immutable_and_replace_revalidates() -> None:
    request = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.model = "gpt-4o"  # type: ignore[misc]
    changed = dataclasses.replace(request, user_prompts=["three"])
    assert changed.user_prompts == ["three"] and changed.api_key == KEY
    with pytest.raises(ValueError, match="user_prompts"):
        dataclasses.replace(request, user_prompts=[])


INVALID: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"user_prompts": []}, ValueError, "user_prompts"),
    ({"user_prompts": "just one string"}, TypeError, "user_prompts"),
    ({"user_prompts": ["ok", 3]}, TypeError, r"user_prompts\[1\]"),
    ({"user_prompts": [[]]}, ValueError, r"user_prompts\[0\]"),
    ({"user_prompts": [["hi"]]}, TypeError, r"user_prompts\[0\]"),
    ({"user_prompts": [[{"role": "user", "content": b"hi"}]]}, TypeError, r"user_prompts\[0\]"),
    ({"model": ""}, ValueError, "model"),
    ({"system_prompt": None}, TypeError, "system_prompt"),
    ({"max_concurrent_requests": 0}, ValueError, "max_concurrent_requests"),
    ({"max_concurrent_requests": -3}, ValueError, "max_concurrent_requests"),
    ({"max_concurrent_requests": 2.5}, TypeError, "max_concurrent_requests"),
    ({"max_retries": -1}, ValueError, "max_retries"),
    ({"max_retries": True}, TypeError, "max_retries"),
    ({"timeout_secs": 0}, ValueError, "timeout_secs"),
    ({"retry_delay_min_ms": -1}, ValueError, "retry_delay_min_ms"),
    ({"retry_delay_min_ms": 5000, "retry_delay_max_ms": 100}, ValueError, "retry_delay_min_ms"),
    ({"temperature": 2.5}, ValueError, "temperature"),
    ({"top_p": -0.1}, ValueError, "top_p"),
    ({"max_output_tokens": 8}, ValueError, "max_output_tokens"),
    ({"reasoning_effort": "extreme"}, ValueError, "reasoning_effort"),
    ({"reasoning_summary": "verbose"}, ValueError, "reasoning_summary"),
    ({"truncation": "middle"}, ValueError, "truncation"),
    ({"service_tier": "gold"}, ValueError, "service_tier"),
    ({"stream": "yes"}, TypeError, "stream"),
    ({"store": 1}, TypeError, "store"),
    ({"include": "file_search_call.results"}, TypeError, "include"),
    ({"metadata": {"k": 1}}, TypeError, "metadata"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, ValueError, "metadata"),
    ({"previous_response_id": ""}, ValueError, "previous_response_id"),
    ({"base_url": "api.openai.com/v1"}, ValueError, "base_url"),
    ({"extra_headers": {"X-Id": 7}}, TypeError, "extra_headers"),
    ({"requests_per_minute": 0}, ValueError, "requests_per_minute"),
    ({"tokens_per_minute": -5}, ValueError, "tokens_per_minute"),
    ({"max_retry_wait_secs": -1}, ValueError, "max_retry_wait_secs"),
    ({"response_format": "json"}, TypeError, "response_format"),
    ({"response_format": {"type": "yaml"}}, ValueError, "response_format"),
    ({"response_format": {"type": "json_schema"}}, ValueError, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, ValueError,
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!",
                                                                  "schema": {}}}}, ValueError,
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}}},
     TypeError, "response_format json_schema 'schema'"),
    ({"response_format": {"type": "json_schema", "json_schema": "x"}}, TypeError,
     r"response_format\['json_schema'\]"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": 7, "schema": {}}}},
     TypeError, "response_format json_schema name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {},
                                                                  "strict": "yes"}}},
     TypeError, "response_format json_schema 'strict'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}},
                          "schema": {}}}, ValueError, "response_format"),
    ({"tools": {"type": "web_search"}}, TypeError, "tools"),
    ({"tools": ["get_weather"]}, TypeError, r"tools\[0\]"),
    ({"tools": [{"name": "get_weather", "parameters": {}}]}, ValueError, r"tools\[0\]"),
    ({"tools": [{"type": "function", "parameters": {}}]}, ValueError, r"tools\[0\]"),
    ({"tools": [{"type": "web_search"}, {"type": "function", "function": {"parameters": {}}}]},
     ValueError, r"tools\[1\]"),
    ({"tool_choice": "sometimes"}, ValueError, "tool_choice"),
    ({"tool_choice": {"type": "function"}}, ValueError, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {}}}, ValueError, "tool_choice"),
    ({"tool_choice": 3}, TypeError, "tool_choice"),
    ({"tool_choice": {"type": 3}}, TypeError, r"tool_choice\['type'\]"),
    ({"tool_choice": {}}, ValueError, r"tool_choice\['type'\]"),
    ({"tool_choice": {"type": "function", "function": "f"}}, TypeError,
     r"tool_choice\['function'\]"),
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {"tools": "f"}}}, TypeError,
     r"tool_choice\['allowed_tools'\]\['tools'\]"),
    ({"tools": [{"type": 3}]}, TypeError, r"tools\[0\]\['type'\]"),
    ({"tools": [{"type": "function", "function": "f"}]}, TypeError, r"tools\[0\]\['function'\]"),
    ({"timeout_secs": "60"}, TypeError, "timeout_secs"),
    ({"base_url": 1}, TypeError, "base_url"),
    ({"model": None}, TypeError, "model"),
    ({"background": "yes"}, TypeError, "background"),
    ({"poll_interval_secs": 0}, ValueError, "poll_interval_secs"),
    ({"flex_fallback_after": 0}, ValueError, "flex_fallback_after"),
    ({"flex_fallback_after": 1.0}, TypeError, "flex_fallback_after"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "error", "names"), INVALID)
def test_invalid_values_fail_at_construction_naming_the_parameter(
    changes: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        make(**changes)


def test_valid_edges_are_accepted() -> None:
    make(
        temperature=0,
        top_p=1,
        max_output_tokens=16,
        max_retries=0,
        retry_delay_min_ms=0,
        retry_delay_max_ms=0,
        timeout_secs=0.5,
        reasoning_effort="minimal",
        reasoning_summary="auto",
        truncation="auto",
        service_tier="flex",
        metadata={"k" * 64: "v" * 512},
        user_prompts=[[{"role": "user", "content": "hi"}], "plain"],
        system_prompt="",
    )


SCHEMA = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def json_schema(schema: Any, name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", "parameters": parameters}}


def test_a_key_from_the_environment_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc\ndef")
    with pytest.raises(ValueError, match=r"api_key \(from OPENAI_API_KEY\) contains"):
        request(api_key=None)


def test_a_trailing_newline_on_the_key_is_still_stripped_not_refused() -> None:
    assert request(api_key=KEY + "\n").api_key == KEY


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"": "x"}, "empty header name"),
        ({"X-Trace\r\nEvil": "x"}, "not a valid header name"),
        ({"X Trace": "x"}, "not a valid header name"),
        ({"X-Trace:": "x"}, "not a valid header name"),
        ({"X-Token": "secret-value\r\nX-Injected: 1"}, r"extra_headers\['X-Token'\].*control"),
        ({"X-Token": "secret-value\x00"}, r"extra_headers\['X-Token'\].*control"),
        ({"X-Token": "secret-value\ud800"}, r"extra_headers\['X-Token'\]"),
    ],
)
def test_a_header_that_would_break_the_request_is_refused(
    headers: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=f"extra_headers.*{message}|{message}") as caught:
        request(extra_headers=headers)
    assert "secret-value" not in str(caught.value)


def test_headers_of_the_wrong_type_are_a_type_error_and_tabs_are_allowed() -> None:
    with pytest.raises(TypeError, match="extra_headers must be a mapping of str to str"):
        request(extra_headers={"X-Count": 3})
    request(extra_headers={"X-Trace": "a\tb", "OpenAI-Organization": "org-1"})


@pytest.mark.parametrize("name", ["answer\n", "answer ", "ans.wer", "", "a" * 65, "answer\r\n"])
def test_a_json_schema_name_must_match_the_whole_pattern(name: str) -> None:
    with pytest.raises(ValueError, match="json_schema name must be 1-64"):
        request(response_format=json_schema(SCHEMA, name=name))


def test_a_json_schema_name_of_64_allowed_characters_passes() -> None:
    request(response_format=json_schema(SCHEMA, name="A_b-9" * 12 + "abcd"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_infinity_anywhere_is_refused_naming_the_parameter(value: float) -> None:
    schema = {**SCHEMA, "properties": {"x": {"type": "number", "maximum": value}}}
    with pytest.raises(ValueError, match=r"response_format\['json_schema'\].*'maximum'.*NaN"):
        request(response_format=json_schema(schema))
    with pytest.raises(ValueError, match=r"tools\[0\].*'parameters'.*NaN"):
        request(tools=[tool(schema)])
    native = {"type": "json_schema", "name": "answer", "schema": schema}
    with pytest.raises(ValueError, match="response_format.*NaN"):
        request(response_format=native)
    with pytest.raises(ValueError, match="tool_choice.*NaN"):
        request(tool_choice={"type": "function", "name": "lookup", "weight": value})


def test_metadata_is_checked_for_json_too() -> None:
    with pytest.raises(ValueError, match=r"metadata\['note'\].*surrogate"):
        request(metadata={"note": "bad \ud800"})


def test_a_lone_surrogate_in_the_instructions_or_model_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="system_prompt contains a lone surrogate"):
        request(system_prompt="Be terse \ud800")
    with pytest.raises(ValueError, match="model contains a lone surrogate"):
        request(model="gpt-4o-mini\udfff")
    with pytest.raises(ValueError, match=r"tools\[0\].*surrogate"):
        request(tools=[tool({"type": "object", "description": "\ud800"})])


def test_non_str_keys_in_tools_are_a_type_error_naming_where() -> None:
    with pytest.raises(TypeError, match=r"tools\[0\]\['function'\]\['parameters'\] has a key"):
        request(tools=[tool({"type": "object", 1: "one"})])
    with pytest.raises(TypeError, match=r"response_format.*has a key of type tuple"):
        request(response_format=json_schema({**SCHEMA, ("a", "b"): 1}))


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**400])
def test_integers_beyond_64_bits_are_refused(number: int) -> None:
    schema = {**SCHEMA, "properties": {"x": {"type": "integer", "maximum": number}}}
    with pytest.raises(ValueError, match=r"tools\[0\].*'maximum'.*beyond 64 bits"):
        request(tools=[tool(schema)])


def test_integers_at_the_64_bit_edges_pass() -> None:
    schema = {"type": "object", "properties": {}, "minimum": -(2**63), "maximum": 2**64 - 1}
    request(tools=[tool(schema)], response_format=json_schema(schema))


def test_an_unserialisable_value_is_a_type_error_naming_where() -> None:
    with pytest.raises(TypeError, match=r"tools\[0\]\['function'\]\['parameters'\].*object"):
        request(tools=[tool(object())])


def test_a_cycle_is_refused_rather_than_recursing() -> None:
    schema: dict[str, Any] = {"type": "object"}
    schema["self"] = schema
    with pytest.raises(ValueError, match="tools is nested more than"):
        request(tools=[tool(schema)])


def test_a_prompt_that_cannot_be_sent_is_refused_in_a_list() -> None:
    with pytest.raises(ValueError, match=r"user_prompts\[1\] cannot be sent: .*lone surrogate"):
        request(user_prompts=["fine", "bad \ud800"])
    with pytest.raises(ValueError, match=r"user_prompts\[0\] cannot be sent: .*NaN"):
        request(user_prompts=[[{"role": "user", "content": "hi", "weight": float("nan")}]])


async def test_a_prompt_that_cannot_be_sent_fails_alone_in_a_lazy_batch(
    emulator: Emulator,
) -> None:
    async def prompts() -> AsyncIterator[str]:
        for prompt in ("one", "bad \ud800", "three"):
            yield prompt

    results = (await run(emulator, prompts()))["results"]

    assert [r["success"] for r in results] == [True, False, True]
    assert "lone surrogate" in results[1]["error"]
    assert emulator.stats.total("responses") == 2
