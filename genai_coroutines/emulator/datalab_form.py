"""Reading a Datalab submission form the way the real (FastAPI) server does.

Type errors come back as FastAPI's 422 list of `{type, loc, msg, input}`; a value the
handler rejects comes back as a 400 with a string `detail`. Each endpoint reads its
own fields (`FIELDS`) and, like any FastAPI handler, ignores the others: a `page_schema`
sent to `/convert` extracts nothing, a bad `paginate` sent to `/extract` is no error.
Sources: https://documentation.datalab.to/platform/errors (both shapes),
https://documentation.datalab.to/api-reference/convert-document and
.../extract-structured-data and .../segment-document (the fields), datalab-python-sdk's
`ConvertOptions`, `ExtractOptions` and `SegmentOptions` (what the SDK sends: `eval_rubric_id`,
`schema_id`, `schema_version`). A `file_url` may also be a `datalab://file-N` reference to a
file uploaded through a presigned URL; the caller resolves it (`datalab_files`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from ..pdfpages import parse_page_range

FORMATS = ("markdown", "html", "json", "chunks")
MODES = ("fast", "balanced", "accurate")
ENDPOINTS = ("marker", "convert", "extract", "segment")
REFERENCE_SCHEME = "datalab"
"""`file_url=datalab://file-N`: a file uploaded through a presigned URL (`datalab_files`)."""
EXTRAS = (
    "track_changes", "chart_understanding", "extract_links", "table_row_bboxes", "infographic",
    "new_block_types",
)  # fmt: skip
"""The documented values of `extras` (comma-separated)."""

_COMMON = frozenset(
    {
        "file", "file_url", "output_format", "mode", "max_pages", "page_range", "skip_cache",
        "save_checkpoint", "webhook_url", "workflowstepdata_id",
    }
)  # fmt: skip
CONVERT_FIELDS = _COMMON | {
    "paginate", "add_block_ids", "include_markdown_in_chunks", "disable_image_extraction",
    "disable_image_captions", "fence_synthetic_captions", "token_efficient_markdown",
    "additional_config", "extras", "force_new", "eval_rubric_id",
}  # fmt: skip
"""`Body_convert_api_v1_convert_post`, plus `eval_rubric_id` (sent by datalab-python-sdk)."""
MARKER_FIELDS = (CONVERT_FIELDS - {"force_new"}) | {
    "langs", "force_ocr", "format_lines", "strip_existing_ocr", "disable_ocr_math", "use_llm",
    "block_correction_prompt", "page_schema", "segmentation_schema", "pipeline_id", "run_eval",
}  # fmt: skip
"""The deprecated `/marker`: what `/convert` takes but `force_new`, and its own old options."""
EXTRACT_FIELDS = _COMMON | {"page_schema", "schema_id", "schema_version", "checkpoint_id"}
"""`Body_extract_api_v1_extract_post`, plus `schema_id`/`schema_version` (datalab-python-sdk)."""
SEGMENT_FIELDS = (_COMMON - {"output_format"}) | {"segmentation_schema", "checkpoint_id"}
"""`Body_segment_api_v1_segment_post` (api-reference/segment-document; SDK `SegmentOptions`)."""
FIELDS = {
    "marker": MARKER_FIELDS,
    "convert": CONVERT_FIELDS,
    "extract": EXTRACT_FIELDS,
    "segment": SEGMENT_FIELDS,
}
"""What each endpoint reads. Like any FastAPI handler, it ignores every other form field."""

BOOL_FIELDS = frozenset(
    {
        "paginate", "add_block_ids", "include_markdown_in_chunks", "disable_image_extraction",
        "disable_image_captions", "fence_synthetic_captions", "token_efficient_markdown",
        "skip_cache", "save_checkpoint", "force_new",
        # /marker only
        "force_ocr", "format_lines", "strip_existing_ocr", "disable_ocr_math", "use_llm",
        "run_eval",
    }
)  # fmt: skip
INT_FIELDS = frozenset({"max_pages", "workflowstepdata_id", "eval_rubric_id", "schema_version"})
JSON_OBJECT_FIELDS = ("page_schema", "additional_config", "segmentation_schema")

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]
"""What `aiohttp.web.Request.post()` returns."""

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
"""What pydantic accepts as a boolean string (case-insensitive); the SDK sends "True"/"False"."""

_LOOPBACK_NAMES = frozenset({"localhost"})

UNAUTHORIZED = "Invalid API key provided. Set the X-API-Key header to your API key."
NOT_HTTP = "file_url must be an http or https URL."
"""The answer to a `file_url` the endpoint cannot fetch (also a refused `datalab://`)."""

INVALID_FILE_TYPE = (
    "Invalid file type. Only PDF files, word documents, spreadsheets, powerpoints, HTML, "
    "and PNG, JPG, GIF, TIFF, and WEBP images are accepted."
)
"""Wording from https://documentation.datalab.to/platform/troubleshooting."""

_MAGIC = (
    b"%PDF-",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"PK\x03\x04",  # docx, xlsx, pptx, odt, epub: all zip files
    b"\xd0\xcf\x11\xe0",  # doc, xls, ppt: OLE compound files
)
_TEXT_TYPES = frozenset({"text/html", "text/csv"})
_TEXT_SUFFIXES = (".html", ".htm", ".csv")


class FormError(Exception):
    """A submission the server refuses: `status` 400 or 422 with FastAPI's `detail`."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Options:
    """The settings a job needs after submission; small, since jobs live for an hour."""

    endpoint: str
    output_format: str
    formats: tuple[str, ...]
    mode: str
    paginate: bool
    page_range: str | None
    max_pages: int | None
    disable_image_extraction: bool
    add_block_ids: bool
    include_markdown_in_chunks: bool
    token_efficient_markdown: bool
    save_checkpoint: bool
    page_schema: dict[str, Any] | None
    segmentation_schema: dict[str, Any] | None
    schema_id: str | None
    schema_version: int | None
    checkpoint_id: str | None
    webhook_url: str | None


@dataclass(frozen=True, slots=True)
class ReceivedUpload:
    """The document part: its bytes (or the URL to fetch it from, or the `datalab://`
    reference of a stored file) and how it was labelled."""

    data: bytes | None
    file_url: str | None
    filename: str | None
    content_type: str | None


def unauthorized(request: web.Request, key: str) -> web.Response | None:
    """Datalab's 401, unless the request carries `key` (every API path but storage)."""
    if request.headers.get("X-API-Key") == key:
        return None
    return reply(401, {"detail": UNAUTHORIZED})


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer, as FastAPI sends it (errors as `{"detail": ...}`)."""
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def wire_fields(form: Form) -> dict[str, str]:
    """Every non-file field as sent, for `Stats.remember`."""
    return {key: value for key, value in form.items() if isinstance(value, str)}


def ignored_fields(form: Form, endpoint: str) -> list[str]:
    """The fields of `form` that `endpoint` does not read (they change nothing)."""
    return sorted(set(form.keys()) - FIELDS[endpoint])


def parse(form: Form, endpoint: str = "marker") -> tuple[Options, ReceivedUpload | None]:
    """Validate a submission form; raise `FormError` as the real server would answer.

    Only the fields `endpoint` reads are looked at (see `FIELDS`); the upload is None
    only for an `/extract` or `/segment` from a `checkpoint_id`.
    """
    allowed = FIELDS[endpoint]
    fields = {name: value for name, value in wire_fields(form).items() if name in allowed}
    type_errors: list[dict[str, Any]] = []
    flags = {name: _bool(name, fields[name], type_errors) for name in BOOL_FIELDS & fields.keys()}
    numbers = {name: _int(name, fields[name], type_errors) for name in INT_FIELDS & fields.keys()}
    file_part = form.get("file")
    if file_part is not None and not isinstance(file_part, web.FileField):
        type_errors.append(
            _type_error(
                "value_error",
                "file",
                f"Value error, Expected UploadFile, received: {type(file_part)}",
                str(file_part),
            )
        )
    if type_errors:
        raise FormError(422, type_errors)

    file_field = file_part if isinstance(file_part, web.FileField) else None
    checkpoint_id = fields.get("checkpoint_id") or None
    if checkpoint_id is None:
        upload: ReceivedUpload | None = _upload(file_field, fields.get("file_url"))
    elif file_field is not None or fields.get("file_url"):
        raise FormError(400, "Provide either file/file_url or checkpoint_id, not both.")
    else:
        upload = None
    output_format = fields.get("output_format") or "markdown"
    formats = tuple(part.strip() for part in output_format.split(","))
    if not set(formats) <= set(FORMATS) or len(set(formats)) != len(formats):
        raise FormError(
            400,
            f"Invalid output_format {output_format!r}. "
            f"Valid values: {', '.join(FORMATS)}, comma-separated for several.",
        )
    mode = fields.get("mode") or "fast"
    if mode not in MODES:
        raise FormError(400, f"Invalid mode {mode!r}. Valid values: {', '.join(MODES)}.")
    page_range = fields.get("page_range") or None
    if page_range is not None:
        try:
            parse_page_range(page_range)
        except ValueError:
            raise FormError(
                400,
                f"Invalid page_range {page_range!r}. "
                "Use comma-separated pages or ranges, like 0,5-10,20.",
            ) from None
    max_pages = numbers.get("max_pages")
    if max_pages is not None and max_pages < 1:
        raise FormError(400, "max_pages must be at least 1.")
    objects = {
        name: _json_object(name, fields[name]) for name in JSON_OBJECT_FIELDS if fields.get(name)
    }
    extras = fields.get("extras") or ""
    unknown = [item for item in extras.split(",") if item.strip() and item.strip() not in EXTRAS]
    if unknown:
        raise FormError(
            400, f"Invalid extras {unknown[0].strip()!r}. Valid values: {', '.join(EXTRAS)}."
        )
    webhook_url = fields.get("webhook_url") or None
    if webhook_url is not None:
        _check_webhook(webhook_url)
    schema_id = fields.get("schema_id") or None
    schema_version = numbers.get("schema_version")
    if endpoint == "extract":
        _check_extraction(objects.get("page_schema"), schema_id, schema_version)
    if endpoint == "segment" and "segmentation_schema" not in objects:
        missing = {"type": "missing", "loc": ["body", "segmentation_schema"]}
        raise FormError(422, [{**missing, "msg": "Field required", "input": None}])
    if "segmentation_schema" in objects:
        segment_names(objects["segmentation_schema"])

    options = Options(
        endpoint=endpoint,
        output_format=output_format,
        formats=formats,
        mode=mode,
        paginate=flags.get("paginate", False),
        page_range=page_range,
        max_pages=max_pages,
        disable_image_extraction=flags.get("disable_image_extraction", False),
        add_block_ids=flags.get("add_block_ids", False),
        include_markdown_in_chunks=flags.get("include_markdown_in_chunks", False),
        token_efficient_markdown=flags.get("token_efficient_markdown", False),
        save_checkpoint=flags.get("save_checkpoint", False),
        page_schema=objects.get("page_schema"),
        segmentation_schema=objects.get("segmentation_schema"),
        schema_id=schema_id,
        schema_version=schema_version,
        checkpoint_id=checkpoint_id,
        webhook_url=webhook_url,
    )
    return options, upload


def _check_extraction(
    page_schema: dict[str, Any] | None, schema_id: str | None, schema_version: int | None
) -> None:
    """`/extract` needs exactly one of `page_schema` and `schema_id` (the SDK checks the same)."""
    if page_schema is not None and schema_id is not None:
        raise FormError(400, "page_schema and schema_id are mutually exclusive. Provide one.")
    if page_schema is None and schema_id is None:
        raise FormError(400, "Either page_schema or schema_id must be provided.")
    if schema_version is not None and schema_id is None:
        raise FormError(400, "schema_version can only be used with schema_id.")
    if page_schema is not None:
        check_schema_json("page_schema", page_schema)


def check_schema_json(name: str, schema: Any) -> None:
    """An extraction schema must be an object with a `properties` object (the API's rule)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        raise FormError(400, f"{name} must contain a 'properties' key.")


def segment_names(schema: dict[str, Any]) -> list[str]:
    """The segment names of a `segmentation_schema`: `{"segments": [{"name", "description"}]}`
    (API reference, SDK tests), or the same list under `sections` (SDK docs page)."""
    entries = schema.get("segments", schema.get("sections"))
    names = (
        [entry.get("name") for entry in entries if isinstance(entry, dict)]
        if isinstance(entries, list)
        else []
    )
    if not names or not all(isinstance(name, str) and name.strip() for name in names):
        raise FormError(
            400,
            "segmentation_schema must contain a 'segments' list of objects, each with a "
            "'name' and a 'description'.",
        )
    return [str(name) for name in names]


def is_reference(url: str | None) -> bool:
    """Whether a `file_url` names a stored file (`datalab://file-N`)."""
    return url is not None and URL(url).scheme == REFERENCE_SCHEME


def _type_error(kind: str, name: str, message: str, value: str) -> dict[str, Any]:
    return {"type": kind, "loc": ["body", name], "msg": message, "input": value}


def _bool(name: str, value: str, errors: list[dict[str, Any]]) -> bool:
    lowered = value.strip().lower()
    if lowered not in _TRUE | _FALSE:
        errors.append(
            _type_error(
                "bool_parsing",
                name,
                "Input should be a valid boolean, unable to interpret input",
                value,
            )
        )
    return lowered in _TRUE


def _int(name: str, value: str, errors: list[dict[str, Any]]) -> int | None:
    try:
        return int(value.strip())
    except ValueError:
        errors.append(
            _type_error(
                "int_parsing",
                name,
                "Input should be a valid integer, unable to parse string as an integer",
                value,
            )
        )
        return None


def _json_object(name: str, value: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise FormError(400, f"{name} must be a valid JSON string.") from None
    if not isinstance(parsed, dict):
        raise FormError(400, f"{name} must be a JSON object.")
    return parsed


def _upload(file_part: web.FileField | None, file_url: str | None) -> ReceivedUpload:
    if file_part is not None and file_url:
        raise FormError(400, "Provide either file or file_url, not both.")
    if file_url:
        if URL(file_url).scheme not in ("http", "https", REFERENCE_SCHEME):
            raise FormError(400, NOT_HTTP)
        return ReceivedUpload(data=None, file_url=file_url, filename=None, content_type=None)
    if file_part is None:
        raise FormError(400, "You must provide either file or file_url.")
    data = file_part.file.read()
    if not data:
        raise FormError(400, "The uploaded file is empty.")
    if not _accepted(data, file_part.filename, file_part.content_type):
        raise FormError(400, INVALID_FILE_TYPE)
    return ReceivedUpload(
        data=data, file_url=None, filename=file_part.filename, content_type=file_part.content_type
    )


def _accepted(data: bytes, filename: str, content_type: str) -> bool:
    """Binary formats are recognised by their content, like the real server; text ones by label."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    if data.startswith(_MAGIC):
        return True
    return content_type in _TEXT_TYPES or filename.lower().endswith(_TEXT_SUFFIXES)


def _check_webhook(url: str) -> None:
    """The emulator calls webhooks for real, so only on this machine."""
    parsed = URL(url)
    host = parsed.host or ""
    if parsed.scheme not in ("http", "https") or not _is_loopback(host):
        raise FormError(
            400,
            "webhook_url must be an http(s) URL on a loopback host "
            "(127.0.0.1, localhost or ::1) in the emulator.",
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
