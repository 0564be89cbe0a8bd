"""`DocumentConfig`: every setting of a Datalab batch, checked once, before anything is sent.

The Rust library's parameters (its README's table) keep their names, order and defaults,
so its examples run unchanged (but for `api_url`, see below); what this library adds
comes after them and is keyword-only. A bad setting raises, naming the parameter, at
construction, because a typo found after ten thousand uploads has already been paid for:
`TypeError` for a value of the wrong type, `ValueError` for a wrong value (the package's
rule, `validation`).

Endpoints. Datalab's API reference marks `POST /api/v1/marker` deprecated in favour of
`/api/v1/convert` (conversion), `/api/v1/extract` (schema extraction) and `/api/v1/segment`
(sections named by a `segmentation_schema`). `api_url` defaults to None, "choose": a config
with `page_schema` or `schema_id` goes to `EXTRACT_URL`, one with `segmentation_schema` to
`SEGMENT_URL`, any other to `CONVERT_URL`, so the defaults never touch the deprecated
endpoint. An explicit `api_url` is respected (the Rust library's `/marker` too); its last
path segment names the endpoint, and a parameter that endpoint does not accept
(`ENDPOINT_FIELDS`) is a `ValueError` at construction. An `api_url` whose path ends in none
of the four (a gateway, a self-hosted server) is sent every field that is set, unchecked,
as the Rust library did. `url` is the URL actually used, `endpoint` its name.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from .. import validation as check
from ..params import max_waiting_param, param, read_text
from ..pdfpages import parse_page_range

DATALAB_API = "https://www.datalab.to/api/v1"
CONVERT_URL = f"{DATALAB_API}/convert"
EXTRACT_URL = f"{DATALAB_API}/extract"
SEGMENT_URL = f"{DATALAB_API}/segment"
PRESIGNED_UPLOAD_MIN_BYTES = 10 * 1024 * 1024
"""Files from this size on go through a presigned upload by default (`DocumentConfig`)."""
OUTPUT_FORMATS = ("json", "html", "markdown", "chunks")
MODES = ("fast", "balanced", "accurate")
API_KEY_ENV = "DATALAB_API_KEY"

RESERVED_FIELDS = frozenset(
    {
        "file", "file_url", "output_format", "mode", "page_schema", "paginate",
        "page_range", "max_pages", "disable_image_extraction", "webhook_url",
    }
)  # fmt: skip
"""Form fields the Rust library's parameters set (always sent); `extras` may not set them
again."""

_COMMON = frozenset(
    {"output_format", "mode", "max_pages", "page_range", "skip_cache", "save_checkpoint",
     "webhook_url"}
)  # fmt: skip
_CONVERT = _COMMON | {
    "paginate", "disable_image_extraction", "disable_image_captions", "add_block_ids",
    "token_efficient_markdown", "additional_config",
}  # fmt: skip
ENDPOINT_FIELDS: dict[str, frozenset[str]] = {
    "convert": _CONVERT,
    "marker": _CONVERT | {"page_schema", "segmentation_schema"},
    "extract": _COMMON | {"page_schema", "schema_id", "schema_version", "checkpoint_id"},
    "segment": (_COMMON - {"output_format"}) | {"segmentation_schema", "checkpoint_id"},
}
"""Of the form fields `DocumentConfig` has a parameter for, those each endpoint accepts
(Datalab's API reference: `Body_convert_api_v1_convert_post`,
`Body_extract_api_v1_extract_post`, `Body_segment_api_v1_segment_post`, the deprecated
marker page). Each endpoint takes more
(`force_new`, `include_markdown_in_chunks`, `/marker`'s `force_ocr`...): send those with
`extras`, which is not checked against these sets."""

OPTIONAL_FIELDS = (
    "skip_cache", "save_checkpoint", "checkpoint_id", "schema_id", "schema_version",
    "segmentation_schema", "add_block_ids", "token_efficient_markdown", "disable_image_captions",
    "additional_config",
)  # fmt: skip
"""The added form fields: sent only when set (True, or not None), Datalab's documented
defaults being False/None; `extras` may set one that its parameter leaves unset."""


@dataclass(frozen=True)
class DocumentConfig:
    """Settings for `DocumentProcessor`: what to ask Datalab for and how hard to push.

    `extras` is, as the Rust library's README says, "additional API parameters as a JSON
    string": an object whose entries are sent as form fields of their own, e.g.
    '{"force_ocr": true, "extras": "track_changes"}' (the second is Datalab's own,
    comma-separated `extras` field). It may not repeat a field set by a parameter.

    Beyond the Rust library's parameters:

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
      of the same key, or a plan's lower limit, are invisible here: such a refusal
      lowers a ceiling learned for the key (`job.PAGE_CEILING_SECS`) and the document
      is resubmitted once pages drain under it. None turns the bound off (refused
      jobs are then only resubmitted after backoff).
    - `timeout_secs` bounds each HTTP request, upload or poll, from connect to last byte.
    - `max_retry_delay_secs` caps the exponential backoff before jitter (120 s, the
      Datalab SDK's cap), so a larger `max_retries` does not make waits grow without end.
    - `api_url` None (the default) chooses `/convert` or `/extract` (module docstring).
    - Datalab's current fields: `skip_cache`, `save_checkpoint`, `checkpoint_id`,
      `schema_id`/`schema_version`, `add_block_ids`, `token_efficient_markdown`,
      `disable_image_captions`, `additional_config` (a JSON object string), each sent
      only when set. With `checkpoint_id` an `/extract` reads a checkpoint saved by an
      earlier `/convert` (`save_checkpoint=True`, the result's `checkpoint_id`) and
      uploads nothing: each input of the batch is then `None`.
    - `segmentation_schema` (a dict, or its JSON text: `{"segments": [{"name",
      "description"}, ...]}`) sends each document to `/segment`, which names the pages of
      each section; from a `checkpoint_id` too.
    - `presigned_upload_min_bytes`: a file of at least this many bytes is PUT once to
      Datalab's storage (`POST /api/v1/files/upload`, then its presigned URL, without the
      key, then `.../confirm`) and submitted as its `datalab://file-N` reference, so a
      retried or resumed submission never sends the bytes again (`presigned`). Default 10 MB:
      Datalab's documents and SDK name no size; below it the three extra calls cost more
      than resending the bytes would. None: always multipart.

    The float parameters (`poll_interval_secs`, `base_retry_delay_secs`, ...) accept
    fractions of a second. `api_key` may be omitted when DATALAB_API_KEY is set; it
    never appears in `repr`, logs or error messages.
    """

    api_key: str | None = param(
        None, "Datalab key; default: $DATALAB_API_KEY (the CLI's only one)", cli=False, repr=False
    )
    api_url: str | None = param(
        None,
        "the Datalab endpoint (default: /api/v1/convert, or /api/v1/extract with a schema)",
        metavar="URL",
    )
    output_format: str = param("json", "/".join(OUTPUT_FORMATS))
    mode: str = param("accurate", "/".join(MODES))
    max_concurrent_requests: int = param(
        10,
        "documents being read, uploaded or submitted at most (a job being polled holds no "
        "slot: max_waiting and max_pages_in_flight bound what runs at Datalab)",
        flag="--concurrency",
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
    max_waiting: int = max_waiting_param()
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
    skip_cache: bool = param(False, "ask Datalab not to answer from its cache of the same request")
    save_checkpoint: bool = param(
        False, "keep the parse for a later /extract (the result's checkpoint_id)"
    )
    checkpoint_id: str | None = param(
        None, "/extract: read the pages of this saved checkpoint instead of a file (inputs: None)"
    )
    schema_id: str | None = param(None, "/extract: a saved schema's id (not with page_schema)")
    schema_version: int | None = param(None, "/extract: the version of schema_id (default: latest)")
    segmentation_schema: str | dict[str, Any] | None = param(
        None,
        'a JSON file of segments to split each document into ({"segments": [{"name", '
        '"description"}]}): sends it to /api/v1/segment',
        convert=read_text,
        metavar="PATH",
    )
    add_block_ids: bool = param(False, "data-block-id attributes in the HTML (for citations)")
    token_efficient_markdown: bool = param(False, "markdown with fewer tokens, for LLM prompts")
    disable_image_captions: bool = param(False, "no generated captions for images")
    additional_config: str | None = param(
        None,
        "a JSON object of Datalab's additional_config, e.g. "
        "'{\"keep_spreadsheet_formatting\": true}'",
        metavar="JSON",
    )
    presigned_upload_min_bytes: int | None = param(
        PRESIGNED_UPLOAD_MIN_BYTES,
        "files of at least this size are PUT once to Datalab's storage and sent by reference "
        "(none: always multipart)",
        metavar="BYTES",
    )

    @property
    def url(self) -> str:
        """The endpoint's URL: `api_url` if given, else the one the schema fields choose."""
        if self.api_url is not None:
            return self.api_url
        if self.page_schema is not None or self.schema_id is not None:
            return EXTRACT_URL
        return CONVERT_URL if self.segmentation_schema is None else SEGMENT_URL

    @property
    def endpoint(self) -> str | None:
        """ "convert", "extract", "segment" or "marker" (the last segment of `url`'s path);
        None for a URL this library does not recognise (its fields are sent unchecked)."""
        name = urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]
        return name if name in ENDPOINT_FIELDS else None

    @property
    def needs_file(self) -> bool:
        """False for an /extract or /segment from `checkpoint_id`: each input is then None,
        not a document."""
        return self.checkpoint_id is None

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_key", check.api_key(self.api_key, API_KEY_ENV))
        check.http_url("api_url", self.api_url, optional=True)
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
        check.integer("max_waiting", self.max_waiting, minimum=0)
        check.number("timeout_secs", self.timeout_secs, positive=True)
        check.number("max_retry_delay_secs", self.max_retry_delay_secs)
        check.number("max_rate_limit_wait_secs", self.max_rate_limit_wait_secs)
        for name in ("skip_cache", "save_checkpoint", "add_block_ids"):
            check.flag(name, getattr(self, name))
        for name in ("token_efficient_markdown", "disable_image_captions"):
            check.flag(name, getattr(self, name))
        for name in ("checkpoint_id", "schema_id"):
            check.text(name, getattr(self, name), optional=True)
        check.integer("schema_version", self.schema_version, minimum=1, optional=True)
        check.json_object("additional_config", self.additional_config, optional=True)
        if self.segmentation_schema is not None:
            object.__setattr__(
                self, "segmentation_schema", _segmentation_schema(self.segmentation_schema)
            )
        check.integer(
            "presigned_upload_min_bytes", self.presigned_upload_min_bytes, minimum=1, optional=True
        )
        self._check_endpoint()
        if self.extras is not None:
            clashes = sorted(self.set_fields().keys() & self.extra_fields.keys())
            if clashes:
                raise ValueError(
                    f"extras may not set {', '.join(clashes)}: the parameter already sets it"
                )

    def set_fields(self) -> dict[str, Any]:
        """The added form fields this config sets (see `OPTIONAL_FIELDS`)."""
        values = {name: getattr(self, name) for name in OPTIONAL_FIELDS}
        return {name: value for name, value in values.items() if value not in (None, False)}

    def _check_endpoint(self) -> None:
        """What the endpoint does not accept fails now, naming the parameter and endpoint."""
        if self.segmentation_schema is not None and (
            self.page_schema is not None or self.schema_id is not None
        ):
            raise ValueError(
                "segmentation_schema and page_schema/schema_id: one job segments or extracts, "
                "not both"
            )
        endpoint = self.endpoint
        if endpoint is None:
            return
        given = {
            **self.set_fields(),
            **{
                name: value
                for name in ("page_schema", "paginate", "disable_image_extraction")
                if (value := getattr(self, name)) not in (None, False)
            },
        }
        refused = sorted(given.keys() - ENDPOINT_FIELDS[endpoint])
        if refused:
            hint = ""
            if endpoint != "extract" and {"page_schema", "schema_id"} & set(refused):
                hint = " (leave api_url unset and a schema goes to /api/v1/extract)"
            elif endpoint in ("extract", "segment"):
                hint = " (those are /convert fields: leave api_url unset to choose it)"
            raise ValueError(
                f"{', '.join(refused)}: not accepted by Datalab's /{endpoint} "
                f"endpoint ({self.url}){hint}"
            )
        if endpoint == "extract":
            if self.page_schema is not None and self.schema_id is not None:
                raise ValueError("page_schema and schema_id: give one, not both (/extract)")
            if self.page_schema is None and self.schema_id is None:
                raise ValueError(
                    f"page_schema or schema_id: /extract ({self.url}) needs one of them"
                )
        if endpoint == "segment" and self.segmentation_schema is None:
            raise ValueError(f"segmentation_schema: /segment ({self.url}) needs one")
        if self.schema_version is not None and self.schema_id is None:
            raise ValueError("schema_version needs schema_id")

    @property
    def extra_fields(self) -> dict[str, Any]:
        """The `extras` JSON object: additional form fields, sent as given."""
        return {} if self.extras is None else dict(orjson.loads(self.extras))


def _segmentation_schema(value: object) -> str:
    """The schema as the JSON text sent: a JSON object, whose `segments` (or `sections`, as
    the SDK's docs spell it) is a non-empty list of objects each with a `name`."""
    if isinstance(value, dict):
        try:
            value = orjson.dumps(value).decode()
        except TypeError as exc:
            raise TypeError(f"segmentation_schema cannot be sent as JSON: {exc}") from None
    elif not isinstance(value, str):
        raise TypeError(
            f"segmentation_schema must be a dict or a JSON string, not {type(value).__name__}"
        )
    parsed = check.json_object("segmentation_schema", value)
    assert parsed is not None
    entries = parsed.get("segments", parsed.get("sections"))
    if entries is None:
        return value  # e.g. {"segmentation_strategy": "document_boundary"}: Datalab's to judge
    if (
        not isinstance(entries, list)
        or not entries
        or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]
            for entry in entries
        )
    ):
        raise ValueError(
            "segmentation_schema: 'segments' must be a non-empty list of objects, each with a "
            "'name' (and a 'description')"
        )
    return value


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
