"""`ResponsesRequest`: one batch's parameters, checked when it is built.

The names and defaults are the seed's (its README table), so its examples run
unchanged; `base_url`, `extra_headers`, `requests_per_minute`, `tokens_per_minute`
and `max_retry_wait_secs` are ours. Every mistake a user can make in a parameter
fails here, naming the parameter, rather than as 1,000 identical 400s later: the
wire translation (`wire.BodyTemplate`) is built once at construction, so a malformed
`response_format` or tool is caught too.

The request is immutable (a frozen dataclass): the body template is derived from its
fields once, and a field changed afterwards would silently disagree with it. Use
`dataclasses.replace(request, user_prompts=...)` for a variant.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .wire import BodyTemplate, check_prompt

Prompt = str | list[dict[str, Any]]
"""A prompt is a string or a list of Responses input items (messages, images, files...)."""

PromptSource = Iterable[Prompt] | AsyncIterable[Prompt]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
REASONING_SUMMARIES = ("auto", "concise", "detailed")
TRUNCATIONS = ("auto", "disabled")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
"""Enumerations as the official SDK (openai 3.x) types them; a model may accept fewer."""


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ResponsesRequest:
    """A batch of prompts for `POST /responses`, all sharing one model and configuration.

    `max_retries` counts retries after the first attempt (0 = a single attempt).
    `api_key` may be omitted when the `OPENAI_API_KEY` environment variable is set.
    `user_prompts` is normally a list (checked here); any other iterable, sync or
    async, is consumed lazily while the batch runs, and a bad item in it becomes that
    item's error result.
    """

    system_prompt: str
    user_prompts: PromptSource
    model: str
    response_format: Any
    """A dict in the Chat Completions or Responses `text.format` shape, or a pydantic model."""
    api_key: str | None = None
    timeout_secs: float = 60
    max_concurrent_requests: int = 10
    max_retries: int = 5
    retry_delay_min_ms: int = 1000
    retry_delay_max_ms: int = 60000
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    store: bool | None = None
    truncation: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    stream: bool | None = None
    base_url: str = DEFAULT_BASE_URL
    extra_headers: Mapping[str, str] | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_retry_wait_secs: float = 120
    _template: BodyTemplate = field(init=False)
    """The request body without its `input`, serialised once (see `wire.BodyTemplate`)."""

    def __post_init__(self) -> None:
        key = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not key or not isinstance(key, str):
            raise ValueError("api_key is required: pass api_key=... or set OPENAI_API_KEY")
        object.__setattr__(self, "api_key", key)
        _check_text("system_prompt", self.system_prompt, allow_empty=True)
        _check_text("model", self.model)
        _check_prompts(self.user_prompts)
        _check_number("timeout_secs", self.timeout_secs, minimum=0, exclusive=True)
        _check_int("max_concurrent_requests", self.max_concurrent_requests, minimum=1)
        _check_int("max_retries", self.max_retries, minimum=0)
        _check_int("retry_delay_min_ms", self.retry_delay_min_ms, minimum=0)
        _check_int("retry_delay_max_ms", self.retry_delay_max_ms, minimum=0)
        if self.retry_delay_min_ms > self.retry_delay_max_ms:
            raise ValueError(
                f"retry_delay_min_ms ({self.retry_delay_min_ms}) must not exceed "
                f"retry_delay_max_ms ({self.retry_delay_max_ms})"
            )
        _check_optional_number("temperature", self.temperature, 0.0, 2.0)
        _check_optional_number("top_p", self.top_p, 0.0, 1.0)
        if self.max_output_tokens is not None:
            _check_int("max_output_tokens", self.max_output_tokens, minimum=16)
        _check_choice("reasoning_effort", self.reasoning_effort, REASONING_EFFORTS)
        _check_choice("reasoning_summary", self.reasoning_summary, REASONING_SUMMARIES)
        _check_choice("truncation", self.truncation, TRUNCATIONS)
        _check_choice("service_tier", self.service_tier, SERVICE_TIERS)
        for name in ("parallel_tool_calls", "store", "stream"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool or None, not {type(value).__name__}")
        if self.previous_response_id is not None:
            _check_text("previous_response_id", self.previous_response_id)
        _check_include(self.include)
        _check_metadata(self.metadata)
        if not isinstance(self.base_url, str) or not self.base_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"base_url must be an http(s) URL, not {self.base_url!r}")
        headers = self.extra_headers
        if headers is not None and not (
            isinstance(headers, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise TypeError("extra_headers must be a mapping of str to str")
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), minimum=0, exclusive=True)
        _check_number("max_retry_wait_secs", self.max_retry_wait_secs, minimum=0)
        object.__setattr__(self, "_template", BodyTemplate.build(self))

    def __repr__(self) -> str:
        count = len(self.user_prompts) if isinstance(self.user_prompts, Sequence) else "lazy"
        return f"ResponsesRequest(model={self.model!r}, prompts={count})"


def _check_text(name: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")


def _check_prompts(prompts: object) -> None:
    if isinstance(prompts, (str, bytes, Mapping)) or not isinstance(
        prompts, (Iterable, AsyncIterable)
    ):
        raise TypeError(
            f"user_prompts must be a list of prompts (or an iterable of them), "
            f"not {type(prompts).__name__}"
        )
    if isinstance(prompts, Sequence):
        if len(prompts) == 0:
            raise ValueError("user_prompts must not be empty")
        for index, prompt in enumerate(prompts):
            problem = check_prompt(prompt)
            if problem is not None:
                raise TypeError(f"user_prompts[{index}] {problem}")


def _check_number(name: str, value: object, *, minimum: float, exclusive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if value < minimum or (exclusive and value == minimum):
        bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise ValueError(f"{name} must be {bound}, not {value}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _check_optional_number(name: str, value: object, low: float, high: float) -> None:
    if value is None:
        return
    _check_number(name, value, minimum=low)
    assert isinstance(value, (int, float))
    if value > high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, not {value}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_include(include: object) -> None:
    if include is None:
        return
    if not isinstance(include, list) or not all(isinstance(item, str) for item in include):
        raise TypeError("include must be a list of str")


def _check_metadata(metadata: object) -> None:
    """The API's documented bounds: at most 16 pairs, keys <= 64 chars, values <= 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("metadata must be a dict of str to str")
    if len(metadata) > 16:
        raise ValueError(f"metadata holds at most 16 pairs, not {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise ValueError(f"metadata[{key[:20]!r}]: keys are at most 64 chars, values 512")
