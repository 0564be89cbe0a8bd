"""Reading the timing hints servers put in response headers.

OpenAI and Datalab tell a client how long to wait in three spellings: `retry-after-ms`
(float milliseconds), `retry-after` (seconds, possibly fractional, or an HTTP date) and
`x-ratelimit-reset-*` (Go durations such as "1s", "6m0s", "120ms"). Parsing them lives
here, once, so retry policy and rate limiter agree on what the server said.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a Go-style duration ("1h2m3.5s", "450ms"), or None if it is not one."""
    if not text:
        return None
    text = text.strip()
    parts = _DURATION_PART.findall(text)
    try:
        if not parts or "".join(n + u for n, u in parts) != text:
            return _seconds(float(text))
        return _seconds(sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts))
    except ValueError:
        return None


def _seconds(value: float) -> float:
    """A wait read from a header: never negative, never infinite or NaN."""
    if not math.isfinite(value):
        raise ValueError(f"not a usable wait: {value!r}")
    return max(0.0, value)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, in the SDK's order of preference, or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return _seconds(float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def count(value: str | None) -> int | None:
    """An integer read from a header; tolerates "1000.0", ignores junk, infinities and
    negatives (Azure sends -1): a value read from a server is untrusted input."""
    if value is None:
        return None
    if value.isdigit() and len(value) < 16:  # nearly every value, read at once
        return int(value)
    try:
        number = int(float(value))
    except (ValueError, OverflowError):  # junk, "inf", "nan"
        return None
    return number if 0 <= number < 2**53 else None
