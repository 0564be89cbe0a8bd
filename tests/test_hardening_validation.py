"""Parameters that would fail on the wire, or change silently, fail at construction.

Each case names the parameter in its error, and none echoes a key, a header value or
a URL's password.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from genai_coroutines import DocumentConfig, DocumentProcessor, ResponsesRequest
from genai_coroutines.emulator import Emulator
from tests.responses_support import run

KEY = "sk-test-secret-0123456789"
SCHEMA = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def request(**options: Any) -> ResponsesRequest:
    settings: dict[str, Any] = {
        "api_key": KEY,
        "model": "gpt-4o-mini",
        "system_prompt": "You are terse.",
        "user_prompts": ["hello"],
        "response_format": {"type": "text"},
    }
    settings.update(options)
    return ResponsesRequest(**settings)


def config(**options: Any) -> DocumentConfig:
    return DocumentConfig(**{"api_key": KEY, **options})


def json_schema(schema: Any, name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def tool(parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "lookup", "parameters": parameters}}


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://api.example.com:99999/v1", "port"),
        ("https://api.example.com:0/v1", "port"),
        ("https://api.example.com:http/v1", "port"),
        ("http://", "host"),
        ("http://:8080/v1", "host"),
        ("https://api.example.com/v1\r\nX-Injected: 1", "control character"),
        ("https://api.example .com/v1", "space"),
    ],
)
def test_a_url_with_a_bad_port_or_no_host_is_refused_for_every_url_parameter(
    url: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=f"base_url.*{problem}"):
        request(base_url=url)
    with pytest.raises(ValueError, match=f"api_url.*{problem}"):
        config(api_url=url)
    with pytest.raises(ValueError, match=f"webhook_url.*{problem}"):
        config(webhook_url=url)


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@api.example.com/v1", "https://hunter2@api.example.com/v1"]
)
def test_a_url_with_credentials_is_refused_without_showing_them(url: str) -> None:
    for name, build in (
        ("base_url", lambda: request(base_url=url)),
        ("api_url", lambda: config(api_url=url)),
        ("webhook_url", lambda: config(webhook_url=url)),
    ):
        with pytest.raises(ValueError, match=f"{name} must not contain credentials") as caught:
            build()
        assert "hunter2" not in str(caught.value)


def test_good_urls_still_pass() -> None:
    request(base_url="http://127.0.0.1:8765/v1")
    request(base_url="http://[::1]:8765/v1")
    config(api_url="https://www.datalab.to/api/v1/marker", webhook_url="https://example.com/hook")


@pytest.mark.parametrize(
    "bad", ["sk-abc\ndef", "sk-abc\rdef", "sk-\x00abc", "sk-abc\x7f", "sk-\ud800", "sk-abc def"]
)
def test_a_control_character_inside_the_key_is_refused_without_showing_the_key(bad: str) -> None:
    for build in (lambda: request(api_key=bad), lambda: config(api_key=bad)):
        with pytest.raises(ValueError, match="api_key contains") as caught:
            build()
        assert "sk-abc" not in str(caught.value) and "def" not in str(caught.value)


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


@pytest.mark.parametrize("secret", ["sk-clé-0123456789", "sk-ключ-0123456789", "sk-\xa00123456789"])
async def test_a_key_or_header_value_beyond_ascii_is_refused_before_sending(
    emulator: Emulator, secret: str
) -> None:
    """aiohttp would send either as UTF-8 bytes: a key that can never match, a header the
    server reads otherwise. Refused at construction, naming the parameter, not echoing it."""
    builds = [
        ("api_key", lambda: run(emulator, ["hi"], api_key=secret)),
        (
            r"extra_headers\['X-Token'\]",
            lambda: run(emulator, ["hi"], extra_headers={"X-Token": secret}),
        ),
        (  # Datalab: the key goes in X-Api-Key
            "api_key",
            lambda: DocumentProcessor(
                DocumentConfig(api_key=secret, api_url=emulator.marker_url)
            ).process([b"%PDF-1.4"]),
        ),
    ]
    for name, build in builds:
        with pytest.raises(ValueError, match=name) as caught:
            await build()
        assert "0123456789" not in str(caught.value)
    assert not emulator.stats.received


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


@pytest.mark.parametrize(
    ("text", "kind"), [("[1, 2]", "array"), ('"a"', "string"), ("3", "number"), ("null", "null")]
)
def test_a_page_schema_that_is_json_but_not_an_object_is_refused(text: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"page_schema must be a JSON object, not a JSON {kind}"):
        config(page_schema=text)


def test_a_page_schema_with_nan_is_not_json() -> None:
    with pytest.raises(ValueError, match="page_schema is not valid JSON"):
        config(page_schema='{"type": "object", "maximum": NaN}')
    config(page_schema='{"type": "object"}')


@pytest.mark.parametrize("page_range", ["0-99999999999", "1000000", "0,5,1000000-1000001"])
def test_an_absurd_page_range_is_refused_with_the_bound(page_range: str) -> None:
    with pytest.raises(ValueError, match="page_range names page .* from 0 to 999,999"):
        config(page_range=page_range)


def test_a_page_range_up_to_the_bound_passes() -> None:
    config(page_range="0-999999")
    config(page_range="0,2,4-6")


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
