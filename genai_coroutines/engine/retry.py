"""Retry policy: which failures deserve another attempt, and how long to wait first.

A `Failure` is what one attempt produced when it did not succeed, already classified
by the API adapter that understood the body. `RetryPolicy` turns a failure and the
retry number into a delay (or a refusal), and `retrying` is the loop both adapters
share. The policy never sleeps or sends anything itself, so it can be read and tested
alone.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

RETRIABLE_STATUSES = frozenset({408, 409, 429})
"""Beyond these, every 5xx is retried whatever its body (a proxy's HTML page included)."""


def status_is_retriable(status: int) -> bool:
    return status in RETRIABLE_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt did not succeed, in the terms the seed's result dicts use."""

    message: str
    error_type: str
    retriable: bool
    status: int | None = None
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    """Seconds the server asked for (Retry-After or a rate-limit reset), if it said."""
    dooms_batch: bool = False
    """True when every other item would fail the same way (bad key, no quota)."""


@dataclass(frozen=True, slots=True)
class Success(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with proportional jitter, floored by what the server asks.

    The n-th retry (n = 1, 2, ...) waits
    `min(max_delay, initial_delay * 2 ** (n - 1)) * uniform(1 - jitter, 1 + jitter)`,
    kept between zero and `max_delay`, and never less than the server's Retry-After.
    With `jitter_down=False` jitter only lengthens a wait (`uniform(1, 1 + jitter)`),
    so no wait is ever shorter than `initial_delay`. A 429 that names its wait gets
    exactly that wait: the rate limiter, paused until then, spreads the retries, and
    any longer backoff would leave paid-for quota idle. A server that asks for more
    than `max_server_wait` seconds ends the item: a half-hour wait would freeze the
    whole batch, and the caller is better told.

    `max_retries` counts retries after the first attempt: 0 means one attempt only.
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.25
    jitter_down: bool = True
    max_server_wait: float = 120.0

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        base = min(self.max_delay, self.initial_delay * 2.0 ** (retry_number - 1))
        low = 1.0 - self.jitter if self.jitter_down else 1.0
        spread = (rng or random).uniform(low, 1.0 + self.jitter)
        return min(self.max_delay, max(0.0, base * spread))

    def delay_for(self, retry_number: int, failure: Failure) -> float | None:
        """Seconds to wait before retry `retry_number`, or None if the item should end now."""
        if not failure.retriable or retry_number > self.max_retries:
            return None
        if failure.retry_after is not None and failure.retry_after > self.max_server_wait:
            return None
        if failure.status == 429 and failure.retry_after is not None:
            return failure.retry_after
        return max(self.backoff(retry_number), failure.retry_after or 0.0)


class BatchStop:
    """The first failure that dooms every item (a bad key, no quota), once seen.

    Workers check it before each attempt, so the rest of the batch ends at once with
    that error instead of each item paying for its own doomed request.
    """

    __slots__ = ("failure",)

    def __init__(self) -> None:
        self.failure: Failure | None = None

    def record(self, failure: Failure) -> None:
        if failure.dooms_batch and self.failure is None:
            self.failure = failure


RetryHook = Callable[[int, Failure, float], None]
"""Called before each wait with (retry number, the failure, seconds about to wait)."""


async def retrying(
    attempt: Callable[[], Awaitable[Success[T] | Failure]],
    policy: RetryPolicy,
    *,
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Success[T] | Failure, int]:
    """Run `attempt` until it succeeds or the policy gives up; return (outcome, attempts).

    `sleep` takes each backoff wait (a progress bar counts the items sleeping in it).
    """
    attempts = 0
    while True:
        outcome = await attempt()
        attempts += 1
        if isinstance(outcome, Success):
            return outcome, attempts
        delay = policy.delay_for(attempts, outcome)
        if delay is None:
            return outcome, attempts
        if on_retry is not None:
            on_retry(attempts, outcome, delay)
        await sleep(delay)
