"""What an OpenAI answer that is not a usable response means, as a `Failure`.

Classification is the API adapter's job because only it can read the bodies: a 429
is retried when it says `rate_limit_exceeded`, but not when it says
`insufficient_quota` (no retry will pay the bill; it dooms the whole batch, like a 401)
or "Request too large" (`request_too_large`: a request above the per-minute limit can
never pass); a flex request's "Resource Unavailable" 429 is `capacity_unavailable`,
retried with backoff but never a pause of the key's quota. Every other status follows
the engine's rule (408, 409, 429 and any 5xx are retried, whatever the body), unless the
server sends `x-should-retry`, which wins, as in the official SDK.

`error_type` is the class of failure in the SDK's vocabulary (`authentication_error`
for 401, `rate_limit_error` for 429, ...), as the Rust library's README shows; the body's own
`type` is less useful there (a real 401 says `invalid_request_error`), and its
precise `code` and `param` are passed through. Messages are scrubbed of the API key
(OpenAI echoes a masked key in 401 messages).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson

from ..engine import (
    ErrorType,
    Failure,
    error_type_for,
    parse_duration,
    retry_after,
    status_is_retriable,
)

_TRY_AGAIN = re.compile(r"try again in ((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)")
_TOO_LARGE = re.compile(r"Limit (\d+), Requested (\d+)")
_TOKENS_CHARGED = re.compile(r"on tokens per min \(TPM\): Limit \d+, Used \d+, Requested (\d+)")
_UNAVAILABLE = re.compile(r"resources? (are |is )?(currently )?unavailable", re.IGNORECASE)
_KEY_ECHO = re.compile(r"(API key provided: )[^\s.,]+")
_TAGS = re.compile(r"<[^>]*>|\s+")
RETRIABLE_STREAM_CODES = frozenset({None, "server_error", "rate_limit_exceeded"})


def scrub(text: str, api_key: str) -> str:
    """The text without the key, nor the masked key OpenAI echoes back."""
    if api_key and api_key in text:
        text = text.replace(api_key, "[redacted]")
    return _KEY_ECHO.sub(r"\1[redacted]", text)


def classify(status: int, headers: Mapping[str, str], body: bytes, api_key: str) -> Failure:
    """Turn a non-200 reply into a `Failure`."""
    error = _error_object(body)
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if message is None:
        message = _TAGS.sub(" ", body[:300].decode("utf-8", "replace")).strip()
    code = error.get("code") if isinstance(error.get("code"), str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    body_type = error.get("type")
    error_type: ErrorType = error_type_for(status)
    retriable = status_is_retriable(status)
    dooms = status == 401
    wait = retry_after(headers)
    if status == 429:
        if code == "insufficient_quota" or body_type == "insufficient_quota":
            error_type, retriable, dooms = "insufficient_quota", False, True
        elif _capacity(code, body_type, message):
            error_type = "capacity_unavailable"  # flex: no capacity, not the key's quota
        elif _too_large(message):
            error_type, retriable = "request_too_large", False
        elif wait is None:
            wait = _rate_limit_wait(message, headers)
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        retriable = should_retry == "true"
    phrase = _phrase(status)
    text = f"{status} {phrase}: {message}" if message else f"{status} {phrase}"
    return Failure(
        scrub(text, api_key),
        error_type,
        retriable=retriable,
        status=status,
        code=code,
        param=param,
        retry_after=wait,
        dooms_batch=dooms and not retriable,
    )


def too_large(tokens: int, limit: float) -> Failure:
    """A request estimated above the tokens-per-minute limit, refused before it is sent:
    the server would refuse it the same way ("Request too large"), however long it waited."""
    return Failure(
        f"Request too large: estimated at {tokens:,} tokens (input and output allowance), "
        f"above the limit of {limit:,.0f} tokens per minute; it can never pass, so it was "
        "not sent. Shorten the prompt or lower max_output_tokens",
        "request_too_large",
        retriable=False,
    )


def tokens_charged(failure: Failure) -> int | None:
    """What a TPM 429 says the server charges for the request ("... Requested 1234.")."""
    if failure.status != 429:
        return None
    match = _TOKENS_CHARGED.search(failure.message)
    return int(match.group(1)) if match else None


def response_failure(response: Mapping[str, Any], status: int) -> Failure:
    """A response object whose own `status` is "failed" (seen when streaming)."""
    error = response.get("error")
    return stream_error(error if isinstance(error, dict) else {}, status)


def stream_error(error: Mapping[str, Any], status: int) -> Failure:
    """An `error` event or a failed response's `error`: retried when the server is at fault."""
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") or "the response failed"
    return Failure(
        f"Response failed: {message}",
        "server_error" if code in RETRIABLE_STREAM_CODES else "response_failed",
        retriable=code in RETRIABLE_STREAM_CODES,
        status=status,
        code=code,
        param=error.get("param") if isinstance(error.get("param"), str) else None,
    )


def bad_body(status: int, length: int) -> Failure:
    """A 200 whose body is unusable: retried, or the paid-for answer would be lost anyway."""
    return Failure(
        f"{status} OK but the body is not a complete response ({length} bytes)",
        "invalid_response",
        retriable=True,
        status=status,
    )


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _capacity(code: str | None, body_type: object, message: str) -> bool:
    """A flex 429 "Resource Unavailable": the tier has no capacity now ("You will not be
    charged"). Retried with backoff, and never taken for the key's quota: it pauses no one."""
    if "resource_unavailable" in (code, body_type):
        return True
    return _UNAVAILABLE.search(message) is not None


def _too_large(message: str) -> bool:
    if message.startswith("Request too large"):
        return True
    match = _TOO_LARGE.search(message)
    return match is not None and int(match.group(2)) > int(match.group(1))


def _rate_limit_wait(message: str, headers: Mapping[str, str]) -> float | None:
    """For a 429 without Retry-After: the wait its message names, else the reset of the
    exhausted limit (`x-ratelimit-remaining-*` at 0)."""
    match = _TRY_AGAIN.search(message)
    if match:
        return parse_duration(match.group(1))
    waits = [
        parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        for kind in ("requests", "tokens")
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0"
    ]
    known = [wait for wait in waits if wait is not None]
    return max(known) if known else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
