"""An extraction's answer as fields, and several pages' fields merged into one object.

`per_page=True` sends one extraction request per page (a schema that describes one page
of a long document) and merges their objects: a key takes the first page's non-empty
value, lists are concatenated, objects merged the same way; each page's own object stays
in `extraction.page_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson


def fields_of(text: str) -> dict[str, Any] | None:
    """The fields an extraction answered (its text, a JSON object); None if it is not one."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def merge_fields(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per-page objects as one: a key takes the first non-empty value, lists concatenate,
    objects merge the same way. None for no parts."""
    if not parts:
        return None
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            have = merged.get(key)
            if key not in merged or _empty(have):
                merged[key] = value
            elif isinstance(have, list) and isinstance(value, list):
                merged[key] = have + value
            elif isinstance(have, dict) and isinstance(value, dict):
                merged[key] = merge_fields([have, value])
    return merged
