"""Parameter checks shared by every public constructor (`ResponsesRequest`,
`DocumentConfig`, `BatchAPI`, the processors, the pipeline, the Ray stages).

Each promises that a bad setting fails at construction, naming the parameter, before
anything is paid for; one function per kind of check keeps them agreeing on what "a
positive number" or "an http(s) URL" means and on how the error reads. The one rule
for the whole package: a parameter, or an element inside it (`user_prompts[3]`,
`tools[0]['function']`), of the wrong Python type raises `TypeError`; one of the right
type whose value is out of bounds, malformed or missing a required key raises
`ValueError`. Both name the parameter. `bool` never passes as a number (Python counts
True as 1, a user who wrote it meant something else), and NaN or infinity never passes
either, because NaN slips through every bound comparison and neither is a usable count
or delay.
`optional=True` lets None through, for parameters whose None means "not set".

What would otherwise fail later, on the wire, fails here too: a URL with a port out
of range or with credentials in it, a control character in a key or a header (which
would split or corrupt the HTTP request) or a character outside ASCII (HTTP field
values are ASCII; aiohttp would send such a one as UTF-8 bytes, which the server
reads as Latin-1 or refuses: an API key that cannot match), and values orjson cannot
serialise or, for NaN and infinity, silently sends as `null` (`json_value`). Messages
name the parameter and never echo a key, a header value or a URL's credentials.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL: never valid in a key or a URL."""
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name: an RFC 9110 token."""
_KEY_BAD = re.compile(r"[^\x21-\x7e]")
"""What may not appear in an API key: anything but visible ASCII (control characters,
spaces, non-ASCII letters, lone surrogates)."""
_HEADER_VALUE_BAD = re.compile(r"[^\t\x20-\x7e]")
"""What may not appear in an HTTP field value: anything but visible ASCII, space and tab."""
_INT_RANGE = (-(2**63), 2**64 - 1)
"""The integers orjson serialises."""
_MAX_DEPTH = 254
"""orjson refuses to serialise more than 255 levels of nesting."""


def api_key(value: object, env: str) -> str:
    """The key given, else the one in the environment variable `env`, stripped.

    Stripped because a key pasted or read from a file often ends in a newline, which
    would otherwise be sent in the auth header and fail every request.
    """
    key = value if value is not None else os.environ.get(env)
    if key is not None and not isinstance(key, str):
        raise TypeError(f"api_key must be a str, not {type(key).__name__}")
    if not key or not key.strip():
        raise ValueError(f"api_key is required: pass it or set {env}")
    key = key.strip()
    source = "api_key" if value is not None else f"api_key (from {env})"
    if _KEY_BAD.search(key):  # the key itself is never shown
        raise ValueError(
            f"{source} contains a character that cannot be sent in an HTTP header: only "
            "visible ASCII may (not a control character such as a line break, a space, or "
            "a non-ASCII letter); its value is not shown"
        )
    return key


def text(name: str, value: object, *, empty: bool = False, optional: bool = False) -> None:
    """A str, non-empty unless `empty`."""
    if optional and value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value and not empty:
        raise ValueError(f"{name} must not be empty")


def flag(name: str, value: object, *, optional: bool = False) -> None:
    """True or False (not 1, not "yes": both would silently mean something else)."""
    if optional and value is None:
        return
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise TypeError(f"{name} must be {allowed}, not {type(value).__name__}")


def integer(name: str, value: object, *, minimum: int, optional: bool = False) -> None:
    """An int of at least `minimum`."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def number(
    name: str,
    value: object,
    *,
    positive: bool = False,
    maximum: float | None = None,
    optional: bool = False,
) -> None:
    """A finite int or float, at least 0 (above 0 if `positive`), at most `maximum`.

    Every number either API takes (delays, timeouts, rates, sampling values) starts
    at zero, so the lower bound is only ever "0 allowed or not".
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (value <= 0 if positive else value < 0) or (maximum is not None and value > maximum):
        if maximum is not None:
            wanted = f"between 0 and {maximum:g}"
        else:
            wanted = "a positive number" if positive else "a non-negative number"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def choice(name: str, value: object, allowed: tuple[str, ...], *, optional: bool = False) -> None:
    """One of the strings in `allowed`."""
    if optional and value is None:
        return
    options = ", ".join(map(repr, allowed))
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {options}, not {type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def http_url(name: str, value: object, *, optional: bool = False) -> None:
    """An absolute http or https URL with a host, a valid port if any, no credentials."""
    if optional and value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be an http(s) URL, not {type(value).__name__}")
    try:
        parts = urlsplit(value)
        userinfo = parts.username is not None or parts.password is not None
    except ValueError:  # an unclosed IPv6 bracket
        raise ValueError(f"{name} must be an http(s) URL, got {value!r}") from None
    if userinfo:  # not echoed: the URL holds a password
        raise ValueError(f"{name} must not contain credentials (user:password@); it is not shown")
    if _CONTROL.search(value) or " " in value or not _utf8(value):
        raise ValueError(f"{name} contains a space, a control character or invalid text")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL with a host, got {value!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{name} has an invalid port (1-65535 expected), got {value!r}")


def headers(name: str, value: object) -> None:
    """None or a mapping of str to str that can be sent as HTTP header fields.

    A CR or LF in a name or value would end the header early or inject another; a
    non-ASCII character would go out as UTF-8 bytes the server reads otherwise. Values
    are never shown in the message (one may hold a token).
    """
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise TypeError(f"{name} must be a mapping of str to str")
    for key, item in value.items():
        if not key:
            raise ValueError(f"{name} has an empty header name")
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(
                f"{name}: {key[:40]!r} is not a valid header name "
                "(letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        if _HEADER_VALUE_BAD.search(item):
            raise ValueError(
                f"{name}[{key!r}] contains a control character (CR, LF or similar) or a "
                "non-ASCII character: only visible ASCII, spaces and tabs can be sent in an "
                "HTTP header; its value is not shown"
            )


def json_value(name: str, value: object) -> None:
    """Raise, naming `name` and the place inside it, for what JSON cannot carry as given.

    orjson refuses lone surrogates, dict keys other than str and integers beyond 64
    bits, which would otherwise fail when the first request is serialised, and it
    writes NaN and infinity as `null`, which would change a schema or a tool without
    a word. Types orjson serialises natively (dataclasses, datetimes...) are left to it.
    Wrong types raise TypeError, right types out of bounds ValueError.
    """
    pending: list[tuple[object, str, int]] = [(value, name, 0)]
    while pending:
        item, where, depth = pending.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"{name} is nested more than {_MAX_DEPTH} levels deep (a cycle?)")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            if not _utf8(item):
                raise ValueError(f"{where} contains a lone surrogate, which is not valid text")
        elif isinstance(item, int):
            if not _INT_RANGE[0] <= item <= _INT_RANGE[1]:
                raise ValueError(
                    f"{where} is an integer beyond 64 bits, which JSON here cannot carry"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where} is {item!r}: JSON has no NaN or infinity")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"{where} has a key of type {type(key).__name__}: JSON keys must be str"
                    )
                if not _utf8(key):
                    raise ValueError(f"{where} has a key with a lone surrogate")
                pending.append((sub, f"{where}[{key[:40]!r}]", depth + 1))
        elif isinstance(item, list | tuple):
            pending.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item))
        else:
            try:
                orjson.dumps(item)
            except orjson.JSONEncodeError as exc:
                kind = type(item).__name__
                raise TypeError(f"{where} ({kind}) cannot be sent as JSON: {exc}") from None


def _utf8(text: str) -> bool:
    """Whether `text` can be encoded (a lone surrogate, e.g. "\\ud800", cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_text(name: str, value: object, *, optional: bool = False) -> Any:
    """A str holding valid JSON; returns what it parses to (None for an omitted None)."""
    if optional and value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a JSON string, not {type(value).__name__}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None


def json_object(name: str, value: object, *, optional: bool = False) -> dict[str, Any] | None:
    """A str holding a JSON object; returns it (None for an omitted None)."""
    parsed = json_text(name, value, optional=optional)
    if parsed is None and value is None:
        return None
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a JSON object, not a JSON {_json_kind(parsed)}")
    return parsed


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


MAX_PAGE_INDEX = 999_999
"""The highest page number a `page_range` may name (0-indexed: a million pages).
Datalab documents no such bound (only 7,000 pages per request and 200 MB per file),
so this one is ours: far above any real document and above "0-999999", a common way
to say "every page", while "0-99999999999" is a typo."""


def page_spans(name: str, spans: list[tuple[int, int]]) -> None:
    """Parsed page-range spans whose pages all lie within `MAX_PAGE_INDEX`."""
    highest = max((end for _, end in spans), default=0)
    if highest > MAX_PAGE_INDEX:
        raise ValueError(
            f"{name} names page {highest}; page numbers go from 0 to {MAX_PAGE_INDEX:,} "
            "(and Datalab takes at most 7,000 pages per request)"
        )
