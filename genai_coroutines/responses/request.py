"""`ResponsesRequest`: one batch's parameters, checked when it is built.

The names and defaults are the Rust library's (its README's table), so its examples run
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

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import validation as check
from ..params import (
    json_file,
    json_object_or_text,
    json_text,
    max_wait_param,
    max_waiting_param,
    not_cli,
    param,
    spec,
)
from .wire import BodyTemplate, prompt_error, text_format

Prompt = str | list[dict[str, Any]]
"""A prompt is a string or a list of Responses input items (messages, images, files...)."""

PromptSource = Iterable[Prompt] | AsyncIterable[Prompt]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
REASONING_SUMMARIES = ("auto", "concise", "detailed")
TRUNCATIONS = ("auto", "disabled")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
CACHE_RETENTIONS = ("in_memory", "24h")
CACHE_KEY_MAX_LENGTH = 64
"""The real API's bound on `prompt_cache_key` (its 400 says 64)."""
"""Enumerations as the official SDK (openai 3.x) types them; a model may accept fewer."""


class _Default(float):
    """A default that remembers it was not given: `timeout_secs` reads 60 as documented,
    and a flex request that left it alone gets OpenAI's advised 900 s instead."""

    __slots__ = ()


DEFAULT_TIMEOUT_SECS: float = _Default(60)
FLEX_TIMEOUT_SECS = 900.0
"""OpenAI's flex guide: flex answers are slower, so raise the timeout to 15 minutes."""
BACKGROUND_MAX_WAIT_SECS = 3 * 3600.0
"""How long a background response is polled by default: three hours is several times the
longest reasoning runs OpenAI describes (tens of minutes), so a healthy response is never
given up on, yet a response stuck `queued` (reported after an early disconnect) does not
hold its batch open indefinitely; the id stays journaled, so giving up costs nothing."""


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ResponsesRequest:
    """A batch of prompts for `POST /responses`, all sharing one model and configuration.

    `max_retries` counts retries after the first attempt (0 = a single attempt).
    `api_key` may be omitted when the `OPENAI_API_KEY` environment variable is set.
    `user_prompts` is normally a list (checked here); any other iterable, sync or
    async, is consumed lazily while the batch runs, and a bad item in it becomes that
    item's error result.
    """

    system_prompt: str = field(
        metadata=not_cli(
            "system instructions, sent as `instructions` ('' sends none); "
            "the CLI's --system TEXT / --system-file PATH (default '')"
        )
    )
    user_prompts: PromptSource = field(
        metadata=not_cli("the prompts, one request each; the CLI's positional prompts file")
    )
    model: str = field(metadata=spec("model ID, e.g. gpt-4o-mini"))
    response_format: Any = field(
        metadata=not_cli(
            "a dict in the Chat Completions or Responses `text.format` shape, or a pydantic "
            "model; the CLI builds it from --schema/--schema-name/--json-object"
        )
    )
    api_key: str | None = param(
        None, "OpenAI key; default: $OPENAI_API_KEY (the CLI's only source)", cli=False
    )
    timeout_secs: float = param(
        DEFAULT_TIMEOUT_SECS,
        "per attempt, connect to last byte, s (default 60; 900 for service_tier flex)",
        flag="--timeout",
    )
    max_concurrent_requests: int = param(10, "requests in flight at most", flag="--concurrency")
    max_retries: int = param(5, "retries after the first attempt (0: a single attempt)")
    retry_delay_min_ms: int = param(1000, "first backoff delay, ms (doubles each retry)")
    retry_delay_max_ms: int = param(60000, "cap on the backoff delay, ms")
    temperature: float | None = param(None, "sampling temperature, 0 to 2")
    top_p: float | None = param(None, "nucleus sampling threshold, 0 to 1")
    max_output_tokens: int | None = param(None, "most tokens in an answer (at least 16)")
    reasoning_effort: str | None = param(None, "/".join(REASONING_EFFORTS))
    reasoning_summary: str | None = param(None, "/".join(REASONING_SUMMARIES))
    tools: list[dict[str, Any]] | None = param(
        None, "a JSON file: a list of tools (either API's shape)", convert=json_file, metavar="PATH"
    )
    tool_choice: str | dict[str, Any] | None = param(
        None, "auto, required, none, or a JSON object naming a tool", convert=json_object_or_text
    )
    parallel_tool_calls: bool | None = param(None, "let the model call tools in parallel")
    previous_response_id: str | None = param(None, "continue from this response")
    include: list[str] | None = param(None, "extra output to include (repeatable)", metavar="ITEM")
    store: bool | None = param(None, "let OpenAI store the response")
    truncation: str | None = param(None, "/".join(TRUNCATIONS))
    metadata: dict[str, str] | None = param(
        None, 'a JSON object, e.g. \'{"run": "nightly"}\'', convert=json_text, metavar="JSON"
    )
    service_tier: str | None = param(None, "/".join(SERVICE_TIERS))
    prompt_cache_key: str | None = param(
        None,
        "routes requests sharing a prefix to one prompt cache (at most 64 chars); 'auto': "
        "planned, each key about 15 requests a minute (responses.cache_keys)",
        metavar="KEY",
    )
    prompt_cache_retention: str | None = param(None, "/".join(CACHE_RETENTIONS))
    stream: bool | None = param(None, "read answers as SSE streams (same results)")
    background: bool = param(
        False, "background mode: POST, journal the response id, poll it (sends store: true)"
    )
    poll_interval_secs: float = param(
        2.0, "background mode: seconds between polls of a response", flag="--poll-interval"
    )
    max_wait_secs: float | None = max_wait_param(
        BACKGROUND_MAX_WAIT_SECS, "background mode", flag="--max-wait"
    )
    max_waiting: int = max_waiting_param()
    cancel_on_interrupt: bool = param(
        False,
        "on Ctrl-C, cancel the work still running at OpenAI (background responses, "
        "Batch API batches) instead of leaving it to finish for --resume",
    )
    flex_fallback_after: int | None = param(
        None, "service_tier flex: send an item with service_tier auto after N capacity 429s"
    )
    base_url: str = param(DEFAULT_BASE_URL, "requests go to URL/responses", metavar="URL")
    extra_headers: Mapping[str, str] | None = param(
        None, "a JSON object of headers sent with every request", convert=json_text, metavar="JSON"
    )
    requests_per_minute: float | None = param(
        None, "requests per minute (default: learned from headers)", flag="--rpm"
    )
    tokens_per_minute: float | None = param(
        None, "tokens per minute (default: learned from headers)", flag="--tpm"
    )
    max_retry_wait_secs: float = param(
        120, "longest Retry-After or reset wait honoured, s", flag="--max-retry-wait"
    )
    max_rate_limit_wait_secs: float = param(
        600,
        "seconds one item may spend in all waiting out 429s (which spend no retry)",
        flag="--max-rate-limit-wait",
    )
    _template: BodyTemplate = field(init=False)
    """The request body without its `input`, serialised once (see `wire.BodyTemplate`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_key", check.api_key(self.api_key, "OPENAI_API_KEY"))
        check.text("system_prompt", self.system_prompt, empty=True)
        check.text("model", self.model)
        _check_prompts(self.user_prompts)
        check.number("timeout_secs", self.timeout_secs, positive=True)
        check.integer("max_concurrent_requests", self.max_concurrent_requests, minimum=1)
        check.integer("max_retries", self.max_retries, minimum=0)
        check.integer("max_waiting", self.max_waiting, minimum=0)
        check.integer("retry_delay_min_ms", self.retry_delay_min_ms, minimum=0)
        check.integer("retry_delay_max_ms", self.retry_delay_max_ms, minimum=0)
        if self.retry_delay_min_ms > self.retry_delay_max_ms:
            raise ValueError(
                f"retry_delay_min_ms ({self.retry_delay_min_ms}) must not exceed "
                f"retry_delay_max_ms ({self.retry_delay_max_ms})"
            )
        check.number("temperature", self.temperature, maximum=2.0, optional=True)
        check.number("top_p", self.top_p, maximum=1.0, optional=True)
        check.integer("max_output_tokens", self.max_output_tokens, minimum=16, optional=True)
        check.choice("reasoning_effort", self.reasoning_effort, REASONING_EFFORTS, optional=True)
        check.choice(
            "reasoning_summary", self.reasoning_summary, REASONING_SUMMARIES, optional=True
        )
        check.choice("truncation", self.truncation, TRUNCATIONS, optional=True)
        check.choice("service_tier", self.service_tier, SERVICE_TIERS, optional=True)
        _check_cache_key(self.prompt_cache_key)
        check.choice(
            "prompt_cache_retention", self.prompt_cache_retention, CACHE_RETENTIONS, optional=True
        )
        for name in ("parallel_tool_calls", "store", "stream"):
            check.flag(name, getattr(self, name), optional=True)
        _check_background(self)
        check.integer("flex_fallback_after", self.flex_fallback_after, minimum=1, optional=True)
        check.text("previous_response_id", self.previous_response_id, optional=True)
        _check_include(self.include)
        check_metadata(self.metadata)
        check.http_url("base_url", self.base_url)
        check.headers("extra_headers", self.extra_headers)
        for name in ("requests_per_minute", "tokens_per_minute"):
            check.number(name, getattr(self, name), positive=True, optional=True)
        check.number("max_retry_wait_secs", self.max_retry_wait_secs)
        check.number("max_rate_limit_wait_secs", self.max_rate_limit_wait_secs)
        _check_json(self)
        object.__setattr__(self, "_template", BodyTemplate.build(self))

    @property
    def attempt_timeout_secs(self) -> float:
        """Seconds one attempt may take: `timeout_secs`, or 900 for a flex request that did
        not set it (OpenAI's advice for the slower flex tier)."""
        if self.service_tier == "flex" and isinstance(self.timeout_secs, _Default):
            return FLEX_TIMEOUT_SECS
        return float(self.timeout_secs)

    def __repr__(self) -> str:
        count = len(self.user_prompts) if isinstance(self.user_prompts, Sequence) else "lazy"
        return f"ResponsesRequest(model={self.model!r}, prompts={count})"


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
            error = prompt_error(prompt)
            if error is not None:
                raise type(error)(f"user_prompts[{index}] {error}")


def _check_background(request: ResponsesRequest) -> None:
    """Background mode needs the response stored (the API refuses a stateless one) and
    is polled, not streamed; refused here, before any request."""
    for name in ("background", "cancel_on_interrupt"):
        check.flag(name, getattr(request, name))
    check.number("poll_interval_secs", request.poll_interval_secs, positive=True)
    check.number("max_wait_secs", request.max_wait_secs, positive=True, optional=True)
    if not request.background:
        return
    if request.store is False:
        raise ValueError(
            "background=True needs store=True (or unset): OpenAI keeps a background response "
            "to be polled and refuses store=False"
        )
    if request.stream:
        raise ValueError("background=True with stream=True is not supported: results are polled")


def _check_cache_key(key: object) -> None:
    check.text("prompt_cache_key", key, optional=True)
    if isinstance(key, str) and len(key) > CACHE_KEY_MAX_LENGTH:
        raise ValueError(
            f"prompt_cache_key is at most {CACHE_KEY_MAX_LENGTH} characters, not {len(key)}"
        )


def _check_include(include: object) -> None:
    if include is None:
        return
    if not isinstance(include, list) or not all(isinstance(item, str) for item in include):
        raise TypeError("include must be a list of str")


def _str_to_str(pairs: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, str) for k, v in pairs.items())


def _check_json(request: ResponsesRequest) -> None:
    """What orjson would refuse, or silently send as null (NaN), fails naming the parameter."""
    names = (
        "system_prompt", "model", "previous_response_id", "include", "metadata", "tools",
        "prompt_cache_key",
    )  # fmt: skip
    for name in (*names, "tool_choice"):
        check.json_value(name, getattr(request, name))
    response_format = request.response_format
    if not isinstance(response_format, dict):  # a pydantic model: check the schema it makes
        response_format = text_format(response_format)
    check.json_value("response_format", response_format)


def check_metadata(metadata: object) -> None:
    """The API's documented bounds: at most 16 pairs, keys <= 64 chars, values <= 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not _str_to_str(metadata):
        raise TypeError("metadata must be a dict of str to str")
    if len(metadata) > 16:
        raise ValueError(f"metadata holds at most 16 pairs, not {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise ValueError(f"metadata[{key[:20]!r}]: keys are at most 64 chars, values 512")
