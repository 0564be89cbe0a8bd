"""The public result dicts of Responses items, whichever path produced them.

A success carries the raw response JSON (`raw_response`, as
`parse_responses` reads it) and its `usage`; a failure carries `error`, `error_type`
(see `engine.ErrorType`), `param`, `code` and `is_retriable`. Both add `index`,
`status`, `latency_ms`, `attempts`, `rate_limited` and `model` (what prices its
tokens in a summary shared by batches of several models); a success adds the
`service_tier` that served it (what prices it: flex and the Batch API cost half).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson

from ..engine import (
    Answered,
    ErrorType,
    Failed,
    Failure,
    Ids,
    ItemEnd,
    Outcome,
    Result,
    log_event,
)
from .prices import bill_of

logger = logging.getLogger("genai_coroutines.responses")
_LEADING_ID = re.compile(r'\s*\{\s*"id"\s*:\s*"([^"\\]*)"')
"""A response's `id` when it is its first key (as the API writes it)."""


@dataclass(slots=True)
class Answer:
    """A finished response: its JSON text as received, and what the summary needs of it."""

    raw: str
    usage: dict[str, Any] | None
    service_tier: str | None
    given_id: str | None = None
    """The response's id when known as it is made; else `response_id` reads it from `raw`
    when asked (a revived answer: a rerun revives every journaled answer it yields, and
    rarely asks)."""

    @property
    def response_id(self) -> str | None:
        return self.given_id if self.given_id is not None else id_of(self.raw)


def id_of(raw: str) -> str | None:
    """A response's `id`, read without parsing it whole when it is its first key (as the
    API writes it)."""
    leading = _LEADING_ID.match(raw)
    if leading is not None:
        return leading[1]
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def answered(
    answer: Answer, model: str, attempts: int, rate_limited: int, ids: Ids | None = None
) -> Answered[Answer]:
    """The outcome of an item `answer`ed by a response of `model`."""
    bill = bill_of(model, answer.usage, answer.service_tier)
    return Answered(answer, attempts, rate_limited, bill, ids)


def rendered(end: ItemEnd[Answer], model: str) -> Result:
    """The result dict of an item that ended (the Responses adapters' `render`)."""
    outcome = end.outcome
    if isinstance(outcome, Answered):  # a success's dict here, not in a function of its own:
        index, attempts = end.index, outcome.attempts  # this is on every answer's path
        latency_ms = round((time.perf_counter() - end.started) * 1000.0, 1)
        if logger.isEnabledFor(logging.DEBUG):
            log_event(
                logger, logging.DEBUG, "task_success", index=index, attempts=attempts, ms=latency_ms
            )
        answer = outcome.value
        return {
            "index": index,
            "success": True,
            "raw_response": answer.raw,
            "usage": answer.usage,
            "status": 200,
            "latency_ms": latency_ms,
            "attempts": attempts,
            "rate_limited": outcome.rate_limited,
            "model": model,
            "service_tier": answer.service_tier,
        }
    return error_result(
        end.index,
        outcome.failure,
        model=model,
        attempts=outcome.attempts,
        rate_limited=outcome.rate_limited,
        started=end.started,
    )


def revived(record: Mapping[str, Any], model: str) -> Outcome[Answer]:
    """The outcome of a result dict `rendered` earlier (the Responses adapters' `revive`)."""
    get = record.get
    attempts, rate_limited = get("attempts"), get("rate_limited")
    attempts = attempts if type(attempts) is int else int(attempts or 0)
    rate_limited = rate_limited if type(rate_limited) is int else int(rate_limited or 0)
    if not get("success"):
        kind = cast(ErrorType, get("error_type") or "api_error")
        failure = Failure(
            str(get("error")),
            kind,
            bool(get("is_retriable")),
            status=get("status"),
            code=get("code"),
            param=get("param"),
        )
        return Failed(failure, attempts, rate_limited)
    raw, usage, tier = get("raw_response"), get("usage"), get("service_tier")
    raw = raw if isinstance(raw, str) else str(raw)
    usage = usage if isinstance(usage, dict) else None
    tier = tier if isinstance(tier, str) else None
    answer = Answer(raw, usage, tier)
    # `answered`, inline: a rerun revives every journaled answer it yields
    return Answered(answer, attempts, rate_limited, bill_of(model, usage, tier))


def error_result(
    index: int,
    failure: Failure,
    *,
    model: str,
    attempts: int,
    rate_limited: int = 0,
    started: float,
) -> Result:
    if attempts:
        log_event(
            logger,
            logging.WARNING,
            "task_failed",
            index=index,
            error_type=failure.error_type,
            status=failure.status,
            code=failure.code,
            attempts=attempts,
        )
    return {
        "index": index,
        "success": False,
        "error": failure.message,
        "error_type": failure.error_type,
        "param": failure.param,
        "code": failure.code,
        "is_retriable": failure.retriable,
        "attempts": attempts,
        "status": failure.status,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 1),
        "rate_limited": rate_limited,
        "model": model,
    }
