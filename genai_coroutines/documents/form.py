"""The multipart form of a Datalab submission.

The settings part is computed once per batch (`settings_fields`); the form itself is
built fresh for every attempt (`build_form`), because an `aiohttp.FormData` is consumed
when sent: the Datalab SDK reuses one across its retries, so a retried upload goes out
broken. Booleans are sent as "true"/"false" and every setting named in the Rust
library's README that the endpoint accepts is sent even at its default, so what the
server does never depends on *its* defaults (which differ from `DocumentConfig`'s:
Datalab defaults to markdown and "fast"). Each endpoint gets its own fields
(`config.ENDPOINT_FIELDS`): `/extract` is not sent `paginate` or
`disable_image_extraction`, which it does not read. The added fields
(`config.OPTIONAL_FIELDS`) are sent only when set. An `/extract` from a `checkpoint_id`
sends no file.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from .config import ENDPOINT_FIELDS, DocumentConfig
from .sources import Upload

Fields = tuple[tuple[str, str], ...]


def settings_fields(config: DocumentConfig) -> Fields:
    """Every non-file form field the config asks for, in a stable order."""
    accepted = ENDPOINT_FIELDS.get(config.endpoint or "")
    fields: list[tuple[str, Any]] = [
        ("output_format", config.output_format),
        ("mode", config.mode),
        ("paginate", config.paginate),
        ("disable_image_extraction", config.disable_image_extraction),
    ]
    if accepted is not None:  # False is the only value left that the endpoint may not take
        fields = [(name, value) for name, value in fields if name in accepted]
    optional = {
        "page_schema": config.page_schema,
        "page_range": config.page_range,
        "max_pages": config.max_pages,
        "webhook_url": config.webhook_url,
    }
    fields += [(name, value) for name, value in optional.items() if value is not None]
    fields += list(config.set_fields().items())
    fields += [(name, value) for name, value in config.extra_fields.items() if value is not None]
    return tuple((name, _text(value)) for name, value in fields)


def build_form(upload: Upload, settings: Fields) -> aiohttp.FormData:
    """A new form for one attempt: the document (or its URL) first, then the settings.

    Always multipart, as Datalab documents it, even with no file part."""
    form = _multipart()
    if upload.url is not None:
        form.add_field("file_url", upload.url)
    elif upload.data is not None:  # None: an /extract from a checkpoint, no file
        form.add_field(
            "file", upload.data, filename=upload.filename, content_type=upload.content_type
        )
    for name, value in settings:
        form.add_field(name, value)
    return form


def _multipart() -> aiohttp.FormData:
    try:
        return aiohttp.FormData(default_to_multipart=True)
    except TypeError:  # aiohttp < 3.10: no keyword; a file part makes it multipart anyway
        return aiohttp.FormData()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
