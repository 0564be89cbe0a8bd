"""`DocumentConfig`: every setting of a Datalab batch, checked once, before anything is sent.

The seed's parameters keep their names, order and defaults, so its examples run
unchanged; what this library adds comes after them and is keyword-only. A bad value
raises `ValueError` naming the parameter at construction, because a typo found after
ten thousand uploads has already been paid for.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any

import orjson

from .. import validation as check
from ..params import param, read_text
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

    api_key: str | None = param(
        None, "Datalab key; default: $DATALAB_API_KEY (the CLI's only one)", cli=False, repr=False
    )
    api_url: str = param(DEFAULT_API_URL, "the Marker endpoint", metavar="URL")
    output_format: str = param("json", "/".join(OUTPUT_FORMATS))
    mode: str = param("accurate", "/".join(MODES))
    max_concurrent_requests: int = param(
        10, "documents in flight at most, upload to last poll", flag="--concurrency"
    )
    poll_interval_secs: float = param(2, "seconds between status polls", flag="--poll-interval")
    max_poll_attempts: int = param(60, "polls answered 'processing' before poll_timeout")
    max_retries: int = param(5, "retries after the first upload; failed polls in a row tolerated")
    base_retry_delay_secs: float = param(5, "base backoff delay, s", flag="--retry-delay")
    jitter_percent: float = param(200, "random jitter (+-%) on each backoff delay")
    page_schema: str | None = param(
        None, "a JSON Schema file for per-page extraction", convert=read_text, metavar="PATH"
    )
    paginate: bool = param(False, "return output separated by page")
    page_range: str | None = param(None, "pages to process, 0-indexed: '0-5', '0,2,4-6'")
    max_pages: int | None = param(None, "most pages to process per document")
    disable_image_extraction: bool = param(False, "skip image extraction")
    extras: str | None = param(None, "a JSON object of additional form fields", metavar="JSON")
    webhook_url: str | None = param(None, "Datalab calls it when a job ends", metavar="URL")
    _: KW_ONLY
    requests_per_minute: float | None = param(
        None, "uploads per minute, evenly spaced (default: no bound)", flag="--rpm"
    )
    max_pages_in_flight: int | None = param(
        5000, "pages of submitted, unfinished jobs at most (Datalab's per-key limit)"
    )
    timeout_secs: float = param(300, "per HTTP request (upload or poll), s", flag="--timeout")
    max_retry_delay_secs: float = param(
        120, "cap on the backoff delay before jitter, s", flag="--max-retry-delay"
    )
    max_rate_limit_wait_secs: float = param(
        600,
        "seconds one document may spend in all waiting out 429s (which spend no retry)",
        flag="--max-rate-limit-wait",
    )

    def __post_init__(self) -> None:
        try:
            self._check()
        except TypeError as exc:
            # The seed raised ValueError for any bad setting, a wrong type included.
            raise ValueError(str(exc)) from None

    def _check(self) -> None:
        object.__setattr__(self, "api_key", check.api_key(self.api_key, API_KEY_ENV))
        check.http_url("api_url", self.api_url)
        check.choice("output_format", self.output_format, OUTPUT_FORMATS)
        check.choice("mode", self.mode, MODES)
        check.integer("max_concurrent_requests", self.max_concurrent_requests, minimum=1)
        check.number("poll_interval_secs", self.poll_interval_secs, positive=True)
        check.integer("max_poll_attempts", self.max_poll_attempts, minimum=1)
        check.integer("max_retries", self.max_retries, minimum=0)
        check.number("base_retry_delay_secs", self.base_retry_delay_secs)
        check.number("jitter_percent", self.jitter_percent)
        check.json_object("page_schema", self.page_schema, optional=True)
        check.flag("paginate", self.paginate)
        if self.page_range is not None:
            check.text("page_range", self.page_range)
            _check_page_range(self.page_range)
        check.integer("max_pages", self.max_pages, minimum=1, optional=True)
        check.flag("disable_image_extraction", self.disable_image_extraction)
        if self.extras is not None:
            _check_extras(self.extras)
        check.http_url("webhook_url", self.webhook_url, optional=True)
        check.number("requests_per_minute", self.requests_per_minute, positive=True, optional=True)
        check.integer("max_pages_in_flight", self.max_pages_in_flight, minimum=1, optional=True)
        check.number("timeout_secs", self.timeout_secs, positive=True)
        check.number("max_retry_delay_secs", self.max_retry_delay_secs)
        check.number("max_rate_limit_wait_secs", self.max_rate_limit_wait_secs)

    @property
    def extra_fields(self) -> dict[str, Any]:
        """The `extras` JSON object: additional form fields, sent as given."""
        return {} if self.extras is None else dict(orjson.loads(self.extras))


def _check_page_range(value: str) -> None:
    """Parsed here as it will be for each PDF, so a malformed range fails before any upload."""
    try:
        spans = parse_page_range(value)
    except ValueError as exc:
        raise ValueError(f"page_range: {exc} (expected e.g. '0-5' or '0,2,4-6')") from None
    check.page_spans("page_range", spans)


def _check_extras(value: object) -> None:
    """`extras` is "additional API parameters as a JSON string": an object of form fields."""
    parsed = check.json_text("extras", value)
    if not isinstance(parsed, dict):
        raise ValueError(
            "extras must be a JSON object of additional form fields, e.g. '{\"force_ocr\": true}'"
        )
    clashes = sorted(RESERVED_FIELDS & parsed.keys())
    if clashes:
        raise ValueError(
            f"extras may not set {', '.join(clashes)}: use the DocumentConfig parameter instead"
        )
