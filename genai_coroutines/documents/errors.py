"""What Datalab's error answers mean: a `Failure` the retry policy can act on.

Datalab is a FastAPI service: errors carry `detail`, a string or, for a form field of
the wrong type (422), a list of `{loc, msg}`; proxies in front of it answer with HTML.
Either way the message says what went wrong in a line. `error_type` follows the
engine's one vocabulary (`engine.ErrorType`): the same status has the same name as on
the OpenAI side. A body that echoes the key has it redacted.

A 403 that speaks of the account's subscription, credits or payment ("You need an active,
paid subscription to use this API.", "Your subscription has expired...", "Your payment has
failed...": platform/errors, platform/billing) is the account unable to pay, which OpenAI
calls `insufficient_quota`: it has that name here too, is never retried and ends the batch
(as any 403 does); another 403 stays `permission_error`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..engine import Failure, Reply, error_type_for, retry_after, status_is_retriable

UNPAID = re.compile(r"subscription|credit|payment|invoice|billing|balance", re.IGNORECASE)
"""What a 403 about the account's money says (Datalab words it several ways)."""


def http_failure(reply: Reply, api_key: str) -> Failure:
    """A non-2xx answer, classified: 408/409/429/5xx retriable, 401/403 doom the batch."""
    status = reply.status
    detail = _detail(reply.body)
    if api_key and api_key in detail:
        detail = detail.replace(api_key, "[redacted]")
    unpaid = status == 403 and UNPAID.search(detail) is not None
    return Failure(
        f"Datalab API error [{status}]: {detail}",
        "insufficient_quota" if unpaid else error_type_for(status),
        retriable=status_is_retriable(status),
        status=status,
        retry_after=retry_after(reply.headers),
        dooms_batch=status in (401, 403),
    )


def _detail(body: bytes) -> str:
    """FastAPI's `detail` (a string or a list of field errors), an `error`, or the body."""
    parsed = json_object(body)
    if parsed is not None:
        detail = parsed.get("detail") or parsed.get("error")
        if isinstance(detail, list):
            return "; ".join(_field_error(item) for item in detail)
        if isinstance(detail, dict):
            return str(detail.get("message") or detail)
        if detail:
            return str(detail)
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:200] or "(empty body)"


def _field_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", item))


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def json_reply(reply: Reply | Failure, what: str, api_key: str) -> dict[str, Any] | Failure:
    """A 2xx reply's JSON object, or the failure to retry or report instead."""
    if isinstance(reply, Failure):
        return reply
    if not 200 <= reply.status < 300:
        return http_failure(reply, api_key)
    body = json_object(reply.body)
    if body is None:
        return Failure(
            f"Datalab's {what} is not a JSON object", "invalid_response", True, reply.status
        )
    return body
