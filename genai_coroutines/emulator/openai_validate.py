"""Request validation for the emulated `POST /v1/responses`, with the real API's 400 bodies.

A client that the emulator accepts should be accepted by api.openai.com and the other
way round, so the common mistakes (Chat Completions shapes, out-of-range sampling
values, `json_object` without the word "json") are refused here with the message,
`param` and `code` the real API sends. Checks run in a fixed order and the first
failure wins, like the real API, which reports one problem at a time.

The field and value sets below are copied from the openai-python types
(`openai/types/responses/response_create_params.py` and friends, v3.57);
`tests/test_emulator_openai.py` checks them against the installed SDK.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

REQUEST_FIELDS = frozenset(
    {
        "access_programs", "background", "background_options", "context_management",
        "conversation", "image", "include", "input", "instructions", "max_output_tokens",
        "max_tool_calls", "metadata", "model", "moderation", "parallel_tool_calls",
        "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
        "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store",
        "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
        "top_logprobs", "top_p", "truncation", "user",
    }
)  # fmt: skip
"""Top-level keys of `ResponseCreateParams`; anything else is an unknown parameter."""

MOVED_FIELDS = {"response_format": "text.format", "reasoning_effort": "reasoning.effort"}
"""Chat Completions names the real API refuses with a pointer to their Responses home."""

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
REASONING_SUMMARIES = ("concise", "detailed", "auto")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
TRUNCATIONS = ("auto", "disabled")
VERBOSITIES = ("low", "medium", "high")
CACHE_RETENTIONS = ("in_memory", "24h")
CACHE_KEY_MAX_LENGTH = 64
"""Longest `prompt_cache_key` (the SDK types say nothing; the real API's 400 says 64)."""
INCLUDABLE = (
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "message.input_image.image_url", "computer_call_output.output.image_url",
    "code_interpreter_call.outputs", "reasoning.encrypted_content",
    "message.output_text.logprobs",
)  # fmt: skip
TOOL_CHOICE_OPTIONS = ("none", "auto", "required")
TEXT_FORMATS = ("text", "json_schema", "json_object")
ROLES = ("assistant", "system", "developer", "user")
CONTENT_TYPES = (
    "input_text", "input_image", "output_text", "refusal", "input_file",
    "computer_screenshot", "summary_text",
)  # fmt: skip
"""Content part types the real API lists when it refuses Chat Completions' `"text"`."""

FORMAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

JSON_BODY_ERROR = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)

BACKGROUND_NEEDS_STORE = (
    "Background mode requires the response to be stored: 'store' must not be false when "
    "'background' is true."
)
"""The guide says background mode "requires store=true" and refuses stateless requests; the
exact wording of that 400 is not documented, so this text is the emulator's own."""


class ApiError(Exception):
    """An error answer in OpenAI's envelope: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after
        """Seconds the client should wait (429 only): sent as `retry-after(-ms)` headers."""

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _bad(message: str, param: str | None, code: str | None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _text(value: Any) -> str:
    """A value as the real API quotes it in messages (JSON numbers, raw strings)."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def missing(param: str) -> ApiError:
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    return _bad(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param,
        "invalid_type",
    )


def invalid_value(param: str, value: Any, allowed: Sequence[str]) -> ApiError:
    quoted = [f"'{choice}'" for choice in allowed]
    if len(quoted) <= 2:
        listed = " and ".join(quoted)
    else:
        listed = ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    return _bad(
        f"Invalid value: '{_text(value)}'. Supported values are: {listed}.", param, "invalid_value"
    )


def _check_type(body: dict[str, Any], field: str, types: tuple[type, ...], expected: str) -> None:
    value = body.get(field)
    wrong_number = isinstance(value, bool) and bool not in types
    if value is not None and (wrong_number or not isinstance(value, types)):
        raise invalid_type(field, expected, value)


def _check_range(param: str, value: Any, word: str, low: float, high: float | None) -> None:
    """Bounds, worded by the field's type ("decimal"/"integer"), not by the value sent."""
    if value is None:
        return
    if value < low:
        raise _bad(
            f"Invalid '{param}': {word} below minimum value. Expected a value >= {_text(low)}, "
            f"but got {_text(value)} instead.",
            param,
            f"{word}_below_min_value",
        )
    if high is not None and value > high:
        raise _bad(
            f"Invalid '{param}': {word} above maximum value. Expected a value <= {_text(high)}, "
            f"but got {_text(value)} instead.",
            param,
            f"{word}_above_max_value",
        )


def _check_length(param: str, value: str | None, most: int) -> None:
    if value is not None and len(value) > most:
        raise _bad(
            f"Invalid '{param}': string too long. Expected a string with maximum length {most}, "
            f"but got a string with length {len(value)} instead.",
            param,
            "string_above_max_length",
        )


def _check_choice(param: str, value: Any, allowed: Sequence[str]) -> None:
    if value is not None and value not in allowed:
        raise invalid_value(param, value, allowed)


def message_texts(raw_input: Any) -> list[str]:
    """The text of every input message (any role), which is where the real API looks for "json"."""
    if isinstance(raw_input, str):
        return [raw_input]
    texts: list[str] = []
    for item in raw_input if isinstance(raw_input, list) else []:
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return texts


def validate(body: Any) -> None:
    """Raise the `ApiError` the real API would answer to this body, or return if it is valid."""
    if not isinstance(body, dict):
        raise _bad(JSON_BODY_ERROR, None, None)
    for field in body:
        if field in MOVED_FIELDS:
            raise _bad(
                f"Unsupported parameter: '{field}'. In the Responses API, this parameter has moved "
                f"to '{MOVED_FIELDS[field]}'. Try again with the new parameter. See the API "
                "documentation for more information: "
                "https://platform.openai.com/docs/api-reference/responses/create.",
                field,
                "unsupported_parameter",
            )
        if field not in REQUEST_FIELDS:
            raise _bad(f"Unknown parameter: '{field}'.", field, "unknown_parameter")
    if body.get("model") is None:
        raise missing("model")
    _check_scalars(body)
    if body.get("background") is True and body.get("store") is False:
        raise _bad(BACKGROUND_NEEDS_STORE, "background", None)
    _check_input(body.get("input"))
    _check_reasoning(body.get("reasoning"))
    _check_tools(body.get("tools"))
    _check_tool_choice(body.get("tool_choice"), body.get("tools") or [])
    _check_text(body.get("text"), body.get("input"))


def _check_scalars(body: dict[str, Any]) -> None:
    for field in ("model", "instructions", "previous_response_id", "prompt_cache_key",
                  "safety_identifier", "user"):  # fmt: skip
        _check_type(body, field, (str,), "a string")
    for field in ("temperature", "top_p"):
        _check_type(body, field, (int, float), "a decimal")
    for field in ("max_output_tokens", "max_tool_calls", "top_logprobs"):
        _check_type(body, field, (int,), "an integer")
    for field in ("stream", "store", "background", "parallel_tool_calls"):
        _check_type(body, field, (bool,), "a boolean")
    for field in ("metadata", "reasoning", "text", "stream_options"):
        _check_type(body, field, (dict,), "an object")
    for field in ("tools", "include"):
        _check_type(body, field, (list,), "an array")
    _check_type(body, "input", (str, list), "one of a string or array of input items")
    _check_range("temperature", body.get("temperature"), "decimal", 0, 2)
    _check_range("top_p", body.get("top_p"), "decimal", 0, 1)
    _check_range("max_output_tokens", body.get("max_output_tokens"), "integer", 16, None)
    _check_range("top_logprobs", body.get("top_logprobs"), "integer", 0, 20)
    _check_choice("service_tier", body.get("service_tier"), SERVICE_TIERS)
    _check_choice("truncation", body.get("truncation"), TRUNCATIONS)
    _check_choice("prompt_cache_retention", body.get("prompt_cache_retention"), CACHE_RETENTIONS)
    _check_length("prompt_cache_key", body.get("prompt_cache_key"), CACHE_KEY_MAX_LENGTH)
    for index, value in enumerate(body.get("include") or []):
        _check_choice(f"include[{index}]", value, INCLUDABLE)


def _check_input(raw_input: Any) -> None:
    """Refuse Chat Completions message shapes: `role: "tool"` and `{"type": "text"}` parts."""
    if not isinstance(raw_input, list):
        return
    for index, item in enumerate(raw_input):
        if not isinstance(item, dict):
            raise invalid_type(f"input[{index}]", "an object", item)
        if item.get("type", "message") != "message":
            continue  # function_call_output, reasoning, item_reference...: not emulated in depth
        if item.get("role") not in ROLES:
            raise invalid_value(f"input[{index}]", item.get("role") or "", ROLES)
        content = item.get("content")
        if not isinstance(content, (str, list)):
            raise invalid_type(
                f"input[{index}].content", "one of an array of objects or string", content
            )
        for number, part in enumerate(content if isinstance(content, list) else []):
            param = f"input[{index}].content[{number}]"
            if not isinstance(part, dict):
                raise invalid_type(param, "an object", part)
            if part.get("type") not in CONTENT_TYPES:
                raise invalid_value(f"{param}.type", part.get("type") or "", CONTENT_TYPES)


def _check_reasoning(reasoning: dict[str, Any] | None) -> None:
    if reasoning is None:
        return
    _check_choice("reasoning.effort", reasoning.get("effort"), REASONING_EFFORTS)
    for field in ("summary", "generate_summary"):
        _check_choice(f"reasoning.{field}", reasoning.get(field), REASONING_SUMMARIES)


def _check_tools(tools: list[Any] | None) -> None:
    """Function tools are flat in the Responses API; the nested Chat shape lacks `name`."""
    for index, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise invalid_type(f"tools[{index}]", "an object", tool)
        if "type" not in tool:
            raise missing(f"tools[{index}].type")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                raise missing(f"tools[{index}].name")
            parameters = tool.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise invalid_type(f"tools[{index}].parameters", "an object", parameters)


def _check_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> None:
    if choice is None:
        return
    if isinstance(choice, str):
        _check_choice("tool_choice", choice, TOOL_CHOICE_OPTIONS)
        return
    if not isinstance(choice, dict):
        raise invalid_type("tool_choice", "one of a string or object", choice)
    if "type" not in choice:
        raise missing("tool_choice.type")
    if choice["type"] != "function":
        return
    name = choice.get("name")
    if not isinstance(name, str):
        raise missing("tool_choice.name")
    if not any(tool.get("type") == "function" and tool.get("name") == name for tool in tools):
        raise _bad(f"Tool choice '{name}' not found in 'tools' parameter.", "tool_choice", None)


def _check_text(text: dict[str, Any] | None, raw_input: Any) -> None:
    if text is None:
        return
    _check_choice("text.verbosity", text.get("verbosity"), VERBOSITIES)
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise invalid_type("text.format", "a text format", fmt)
    if "type" not in fmt:
        raise missing("text.format.type")
    _check_choice("text.format.type", fmt["type"], TEXT_FORMATS)
    if fmt["type"] == "json_schema":
        if "name" not in fmt:
            raise missing("text.format.name")
        if "schema" not in fmt:
            raise missing("text.format.schema")
        if not isinstance(fmt["name"], str) or not FORMAT_NAME.match(fmt["name"]):
            raise _bad(
                "Invalid 'text.format.name': string does not match pattern. Expected a string "
                "that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                "text.format.name",
                "invalid_value",
            )
        if not isinstance(fmt["schema"], dict):
            raise invalid_type("text.format.schema", "an object", fmt["schema"])
    if fmt["type"] == "json_object" and not any(
        "json" in message.lower() for message in message_texts(raw_input)
    ):
        raise _bad(
            "Response input messages must contain the word 'json' in some form to use "
            "'text.format' of type 'json_object'.",
            "text.format",
            None,
        )
