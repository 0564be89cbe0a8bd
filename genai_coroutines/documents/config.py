"""`DocumentConfig`: every setting of a Datalab batch, checked once, before anything is sent.

The seed's parameters keep their names, order and defaults, so its examples run
unchanged; what this library adds comes after them and is keyword-only. A bad value
raises `ValueError` naming the parameter at construction, because a typo found after
ten thousand uploads has already been paid for.
"""

from __future__ import annotations

import math
import os
from dataclasses import KW_ONLY, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..pdfpages import parse_page_range

DEFAULT_API_URL = "https://www.datalab.to/api/v1/marker"
OUTPUT_FORMATS = ("json", "html", "markdown", "chunks")
MODES = ("fast", "balanced", "accurate")
API_KEY_ENV = "DATALAB_API_KEY"

RESERVED_FIELDS = frozenset(
    {
        "file", "file_url", "output_format", "mode", "page_schema", "paginate",
        "page_range", "max_pages", "disable_image_extraction", "webhook_url",
    }
)  # fmt: skip
"""Form fields `DocumentConfig` sets itself; `extras` may not set them a second time."""


@dataclass(frozen=True)
class DocumentConfig:
    """Settings for `DocumentProcessor`: what to ask Datalab for and how hard to push.

    `extras` is, as the seed says, "additional API parameters as a JSON string": an
    object whose entries are sent as form fields of their own, e.g.
    '{"force_ocr": true, "extras": "track_changes"}' (the second is Datalab's own,
    comma-separated `extras` field). It may not repeat a field set by a parameter.

    Beyond the seed:

    - `requests_per_minute` bounds *submissions* (polls are free upstream), spaced
      evenly with no burst, since how Datalab counts its window is not documented and
      an even pace stays under the limit by any count. Default None: no client-side
      bound. Datalab's documented per-key limit has read both 200 and 400 per minute
      across revisions of its limits page and differs by plan, so any fixed default
      would either throttle keys allowed more or protect nobody. Without it a 429
      still pauses every worker of the batch until the server's `Retry-After` has
      passed, so the batch backs off once, together. Set it to your key's limit to
      avoid the 429s altogether.
    - `max_pages_in_flight` bounds the pages of jobs submitted and not yet finished,
      counted from the PDF itself, `page_range` and `max_pages`. Default 5,000,
      Datalab's documented per-key limit: going past it gives no 429 but a job that
      fails at once with "Page rate limit exceeded", an upload wasted. Other clients
      of the same key are invisible here; their share is caught by resubmitting such
      jobs. None turns the bound off.
    - `timeout_secs` bounds each HTTP request, upload or poll, from connect to last byte.
    - `max_retry_delay_secs` caps the exponential backoff before jitter (120 s, the
      Datalab SDK's cap), so a larger `max_retries` does not make waits grow without end.

    The float parameters (`poll_interval_secs`, `base_retry_delay_secs`, ...) accept
    fractions of a second. `api_key` may be omitted when DATALAB_API_KEY is set; it
    never appears in `repr`, logs or error messages.
    """

    api_key: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    output_format: str = "json"
    mode: str = "accurate"
    max_concurrent_requests: int = 10
    poll_interval_secs: float = 2
    max_poll_attempts: int = 60
    max_retries: int = 5
    base_retry_delay_secs: float = 5
    jitter_percent: float = 200
    page_schema: str | None = None
    paginate: bool = False
    page_range: str | None = None
    max_pages: int | None = None
    disable_image_extraction: bool = False
    extras: str | None = None
    webhook_url: str | None = None
    _: KW_ONLY
    requests_per_minute: float | None = None
    max_pages_in_flight: int | None = 5000
    timeout_secs: float = 300
    max_retry_delay_secs: float = 120

    def __post_init__(self) -> None:
        key = self.api_key if self.api_key is not None else os.environ.get(API_KEY_ENV)
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"api_key is required: pass it or set {API_KEY_ENV}")
        object.__setattr__(self, "api_key", key.strip())
        _http_url("api_url", self.api_url)
        _one_of("output_format", self.output_format, OUTPUT_FORMATS)
        _one_of("mode", self.mode, MODES)
        _integer("max_concurrent_requests", self.max_concurrent_requests, minimum=1)
        _number("poll_interval_secs", self.poll_interval_secs, positive=True)
        _integer("max_poll_attempts", self.max_poll_attempts, minimum=1)
        _integer("max_retries", self.max_retries, minimum=0)
        _number("base_retry_delay_secs", self.base_retry_delay_secs, positive=False)
        _number("jitter_percent", self.jitter_percent, positive=False)
        if self.page_schema is not None:
            _json_text("page_schema", self.page_schema)
        _flag("paginate", self.paginate)
        if self.page_range is not None:
            if not isinstance(self.page_range, str):
                raise ValueError(
                    f"page_range must be a string such as '0-5', got {self.page_range!r}"
                )
            try:
                parse_page_range(self.page_range)
            except ValueError as exc:
                raise ValueError(f"page_range: {exc} (expected e.g. '0-5' or '0,2,4-6')") from None
        if self.max_pages is not None:
            _integer("max_pages", self.max_pages, minimum=1)
        _flag("disable_image_extraction", self.disable_image_extraction)
        if self.extras is not None:
            _check_extras(self.extras)
        if self.webhook_url is not None:
            _http_url("webhook_url", self.webhook_url)
        if self.requests_per_minute is not None:
            _number("requests_per_minute", self.requests_per_minute, positive=True)
        if self.max_pages_in_flight is not None:
            _integer("max_pages_in_flight", self.max_pages_in_flight, minimum=1)
        _number("timeout_secs", self.timeout_secs, positive=True)
        _number("max_retry_delay_secs", self.max_retry_delay_secs, positive=False)

    @property
    def extra_fields(self) -> dict[str, Any]:
        """The `extras` JSON object: additional form fields, sent as given."""
        return {} if self.extras is None else dict(orjson.loads(self.extras))


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _integer(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _number(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        raise ValueError(
            f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}"
        )


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _http_url(name: str, value: object) -> None:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http(s) URL, got {value!r}")


def _json_text(name: str, value: object) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a JSON string, got {type(value).__name__}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None


def _check_extras(value: object) -> None:
    """`extras` is "additional API parameters as a JSON string": an object of form fields."""
    parsed = _json_text("extras", value)
    if not isinstance(parsed, dict):
        raise ValueError(
            "extras must be a JSON object of additional form fields, e.g. '{\"force_ocr\": true}'"
        )
    clashes = sorted(RESERVED_FIELDS & parsed.keys())
    if clashes:
        raise ValueError(
            f"extras may not set {', '.join(clashes)}: use the DocumentConfig parameter instead"
        )
