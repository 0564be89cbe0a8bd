"""`ResponsesRequest`: the seed's parameters and defaults, and every bad value refused early."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from genai_coroutines import ResponsesRequest

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
