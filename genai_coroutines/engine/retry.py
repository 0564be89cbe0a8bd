"""Retry policy: which failures deserve another attempt, and how long to wait first.

A `Failure` is what one attempt produced when it did not succeed, already classified
by the API adapter that understood the body. `RetryPolicy` turns a failure and the
retry number into a delay (or a refusal), and `retrying` is the one loop every
execution path runs its attempts through: a Responses request, a Datalab upload, a
poll of a Datalab job or a background response. The policy never sleeps or sends
anything itself, so it can be read and tested alone.

Two budgets, because two different things went wrong. A failure of the item or the
server (a 5xx, a timeout) spends one of `max_retries`. A 429 about the key's quota
(`Failure.rate_limited`) spends none: the quota is the scheduler's business, every
worker is paused with it, and an item that merely waited its turn has not failed.
Those waits are bounded by time instead (`max_rate_limit_wait`), so a key that stays
exhausted still ends the item rather than hanging the batch.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .outcome import Failure, Success

if TYPE_CHECKING:
    from .limiter import RateLimiter

T = TypeVar("T")

RETRIABLE_STATUSES = frozenset({408, 409, 429})
"""Beyond these, every 5xx is retried whatever its body (a proxy's HTML page included)."""

_MAX_EXPONENT = 64
"""Backoff doubles at most this often: `2.0 ** 1024` overflows, and the cap is reached long
before."""


def status_is_retriable(status: int) -> bool:
    return status in RETRIABLE_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class RetryDetails:
    """What a retry hook is told before each wait (one object, so it can grow)."""

    retry_number: int
    """Retries spent from `max_retries` so far, this one included (0 for a rate-limit wait)."""
    failure: Failure
    wait: float
    """Seconds about to be slept."""


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
    than `max_server_wait` seconds ends the item, and pauses nobody: a half-hour wait
    would freeze the whole batch, and the caller is better told.

    `max_retries` counts retries after the first attempt: 0 means one attempt only.
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.25
    jitter_down: bool = True
    max_server_wait: float = 120.0
    max_rate_limit_wait: float = 600.0
    """Seconds one item may spend, in all, waiting out 429s before it ends with one."""

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        exponent = min(max(retry_number - 1, 0), _MAX_EXPONENT)
        base = min(self.max_delay, self.initial_delay * 2.0**exponent)
        low = 1.0 - self.jitter if self.jitter_down else 1.0
        spread = (rng or random).uniform(low, 1.0 + self.jitter)
        return min(self.max_delay, max(0.0, base * spread))

    def server_wait(self, failure: Failure) -> float | None:
        """The wait a 429 names, or None when it names none or one beyond the ceiling."""
        wait = failure.retry_after
        return wait if wait is not None and wait <= self.max_server_wait else None

    def pause_for(self, failure: Failure) -> float | None:
        """How long a 429 about the quota pauses every worker on the key, if at all."""
        if not failure.rate_limited:
            return None
        if failure.retry_after is None:
            return self.initial_delay
        return self.server_wait(failure)

    def delay_for(self, retry_number: int, failure: Failure) -> float | None:
        """Seconds to wait before counted retry `retry_number`, or None to end the item."""
        if not failure.retriable or retry_number > self.max_retries:
            return None
        if failure.retry_after is not None and failure.retry_after > self.max_server_wait:
            return None
        if failure.status == 429 and failure.retry_after is not None:
            return failure.retry_after
        return max(self.backoff(retry_number), failure.retry_after or 0.0)

    def rate_limit_delay(self, waits: int, waited: float, failure: Failure) -> float | None:
        """Seconds to wait out the `waits`-th 429 of an item that has already waited
        `waited` seconds on them, or None when that would pass `max_rate_limit_wait` (or
        the server asks for more than `max_server_wait`)."""
        if failure.retry_after is not None:
            delay = self.server_wait(failure)
        else:
            delay = self.backoff(waits)
        if delay is None or waited + delay > self.max_rate_limit_wait:
            return None
        return delay


RetryHook = Callable[[RetryDetails], None]


@dataclass(slots=True)
class Retried:
    """Counts of one `retrying` run, for the item's result."""

    attempts: int = 0
    retries: int = 0
    """Counted retries (of `max_retries`)."""
    rate_limited: int = 0
    """429s about the quota received."""


async def retrying(
    attempt: Callable[[], Awaitable[Success[T] | Failure]],
    policy: RetryPolicy,
    *,
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    counts: Retried | None = None,
    limiter: RateLimiter | None = None,
    first: Failure | None = None,
) -> Success[T] | Failure:
    """Run `attempt` until it succeeds or the policy gives up; return the last outcome.

    `first`: the failure of an attempt the caller already made (counted here as the
    first), so an item that succeeds at once costs its caller no retry loop.

    `counts` (given, it keeps adding up across calls) records attempts, counted retries
    and 429s. `sleep` takes each wait (a progress bar counts the items sleeping in it).
    A 429 about the quota pauses `limiter` (every worker on the key) for the server's
    wait, when that wait is within the policy's ceiling (`RetryPolicy.pause_for`).
    """
    counts = counts if counts is not None else Retried()
    waited = 0.0
    outcome: Success[T] | Failure = first if first is not None else await attempt()
    while True:
        counts.attempts += 1
        if isinstance(outcome, Success):
            return outcome
        if outcome.rate_limited:
            counts.rate_limited += 1
            pause = policy.pause_for(outcome)
            if limiter is not None and pause is not None:
                await limiter.pause(pause)
            delay = policy.rate_limit_delay(counts.rate_limited, waited, outcome)
            waited += delay or 0.0
            number = counts.retries
        else:
            number = counts.retries + 1
            delay = policy.delay_for(number, outcome)
            counts.retries += delay is not None
        if delay is None:
            return outcome
        if on_retry is not None:
            on_retry(RetryDetails(number, outcome, delay))
        await sleep(delay)
        outcome = await attempt()
