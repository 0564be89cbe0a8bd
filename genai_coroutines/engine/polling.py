"""Polling work the API runs on its side (a Datalab job, a background response).

Every such path has the same shape: wait `interval`, ask, and either the work is
done, still running, or ended in failure. A poll that fails on the way (a 5xx, a
timeout, a reset) says nothing about the work, which runs on: it is asked again after
the poll policy's backoff, without using a poll, and never by sending the work again.
Only `max_retries` such failures in a row end the item.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .outcome import Failure, Success
from .retry import Retried, RetryHook, RetryPolicy, retrying

T = TypeVar("T")

Check = Callable[[], Awaitable[Success[T] | Failure]]
"""One poll: `Success(value)` when the work ended (the value may say it failed),
`Success(None)` while it runs (so `T` includes None), a `Failure` when the poll itself
failed (retried when retriable: a 5xx, a timeout; else it ends the item: a 404, a 401)."""


async def poll_until(
    check: Check[T],
    *,
    interval: float,
    max_polls: int | None,
    policy: RetryPolicy,
    wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: RetryHook | None = None,
    what: str = "the work",
    until: float | None = None,
) -> Success[T] | Failure | None:
    """Poll until the work has ended, or the polls fail; None after `max_polls` polls of
    running work, or once `time.monotonic()` passes `until` (the work polled at least
    once, the last wait cut short to end there). `wait` sleeps the retries of failed polls
    (the interval itself is not a retry)."""
    polls = 0
    while True:
        pause = interval if until is None else max(0.0, min(interval, until - time.monotonic()))
        await asyncio.sleep(pause)
        counts = Retried()
        outcome = await retrying(check, policy, on_retry=on_retry, sleep=wait, counts=counts)
        if isinstance(outcome, Failure):
            if outcome.retriable:
                tries = counts.attempts
                return Failure(
                    f"polling {what} failed {tries} times in a row, last: {outcome.message}",
                    outcome.error_type,
                    retriable=False,
                    status=outcome.status,
                )
            return outcome
        if outcome.value is not None:
            return outcome
        polls += 1
        if max_polls is not None and polls >= max_polls:
            return None
        if until is not None and time.monotonic() >= until:
            return None
