"""Parameter checks shared by `ResponsesRequest` and `DocumentConfig`.

Both promise that a bad setting fails at construction, naming the parameter, before
anything is paid for; one function per kind of check keeps them agreeing on what "a
positive number" or "an http(s) URL" means and on how the error reads. Convention: a
value of the wrong type raises `TypeError`, a value of the right type out of bounds
raises `ValueError`. `bool` never passes as a number (Python counts True as 1, a user
who wrote it meant something else), and NaN or infinity never passes either, because
NaN slips through every bound comparison and neither is a usable count or delay.
`optional=True` lets None through, for parameters whose None means "not set".
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import urlsplit

import orjson


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
    return key.strip()


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
    """An absolute http or https URL with a host."""
    if optional and value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be an http(s) URL, not {type(value).__name__}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http(s) URL, got {value!r}")


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
