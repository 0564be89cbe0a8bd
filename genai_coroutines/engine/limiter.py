"""Client-side rate limiting: spend the provider's quota to the last unit, never past it.

`RateLimiter` keeps one token bucket per limited dimension (requests, tokens). A bucket
refills continuously at `per_minute / 60` per second up to a small `capacity` (by default
one second of quota), so after any burst the batch settles on the steady rate the
provider enforces instead of bursting into 429s and backing off. This is the generic
cell-rate idea: admission is a function of (level, stamp, now), nothing else, so the two
numbers per bucket could later live in a shared store when several processes share one
key.

Algorithm, per `acquire(tokens)`:
  1. Callers queue on one FIFO lock, so whoever asked first is served first and only the
     head of the queue sleeps (no polling).
  2. The head computes how long until every bucket holds what it needs (and until any
     pause ends), sleeps that long, re-checks, and takes. Buckets may go negative: a
     request larger than a bucket's capacity waits for a full bucket and then borrows,
     rather than deadlocking.
  3. `settle(reserved, used)` corrects a token reservation once the real usage is known.
  4. `pause(seconds)` (after a 429) empties every bucket so that it holds nothing until
     `seconds` have passed (several 429s at once do not stack): the whole batch resumes
     at the permitted rate when the server's reset has passed, instead of each worker
     sleeping and retrying on its own.
  5. With `learn=True` and no limits given, the first request goes out alone; the
     `x-ratelimit-limit-*`, `-remaining-*` and `-reset-*` headers of its reply set the
     buckets, and every later reply keeps them honest (a bucket is lowered to the
     `remaining` the server reports, never raised above its own accounting).

Why not `aiolimiter` or `pyrate-limiter`: neither can take back or add to a reservation
after the fact (token usage is only known when the response arrives), lower its level
from server feedback, or pause all waiters until a server-named reset; wrapping them
would leave most of this logic outside the library anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from .headers import header_int, parse_duration


class Bucket:
    """Continuously refilled quota: `rate` units per second, at most `capacity` banked."""

    __slots__ = ("per_minute", "rate", "capacity", "level", "stamp")

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, capacity)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` can be taken (amounts above capacity need a full bucket)."""
        self.refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class Capacity:
    """A FIFO semaphore with weighted permits, e.g. pages in flight.

    A request for more than the total is admitted alone (it waits until nothing else
    holds a permit) instead of never.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._lock = asyncio.Lock()
        self._freed = asyncio.Event()

    def _clamp(self, amount: int) -> int:
        return min(max(amount, 0), self.total)

    async def acquire(self, amount: int) -> None:
        amount = self._clamp(amount)
        async with self._lock:
            while self.used + amount > self.total:
                self._freed.clear()
                await self._freed.wait()
            self.used += amount

    def release(self, amount: int) -> None:
        self.used -= self._clamp(amount)
        self._freed.set()


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets shared by every worker of a batch."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        burst_seconds: float = 1.0,
        learn: bool = False,
    ) -> None:
        self.burst_seconds = burst_seconds
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None
        self._given = (requests_per_minute, tokens_per_minute)
        self._learning = learn and requests_per_minute is None and tokens_per_minute is None
        self._probe: asyncio.Event | None = None
        self._paused_until = 0.0
        self._lock: asyncio.Lock | None = None
        self.pauses = 0

    @property
    def learning(self) -> bool:
        """True until a reply has told the limits (or shown there are none to learn)."""
        return self._learning

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _setup(self) -> None:
        """Create loop-bound state on first use, so a limiter can be built outside a loop."""
        self._lock = asyncio.Lock()
        now = self._now()
        rpm, tpm = self._given
        if rpm:
            self.requests = Bucket(rpm, rpm * self.burst_seconds / 60.0, now)
        if tpm:
            self.tokens = Bucket(tpm, tpm * self.burst_seconds / 60.0, now)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request of `tokens` estimated tokens may be sent, then reserve it."""
        if self._lock is None:
            self._setup()
        assert self._lock is not None
        async with self._lock:
            while True:
                if self._learning:
                    if self._probe is None:
                        self._probe = asyncio.Event()
                        return
                    await self._probe.wait()
                    continue
                now = self._now()
                wait = self._paused_until - now
                if self.requests is not None:
                    wait = max(wait, self.requests.wait_for(1, now))
                if self.tokens is not None:
                    wait = max(wait, self.tokens.wait_for(tokens, now))
                if wait <= 0:
                    if self.requests is not None:
                        self.requests.level -= 1
                    if self.tokens is not None:
                        self.tokens.level -= tokens
                    return
                await asyncio.sleep(wait)

    def settle(self, reserved: int, used: int) -> None:
        """Correct a token reservation with the usage the server reported."""
        if self.tokens is not None:
            self.tokens.level += reserved - used

    def pause(self, seconds: float) -> None:
        """Hold every worker for `seconds`, then resume at the steady rate."""
        if self._lock is None:
            self._setup()
        now = self._now()
        self.pauses += 1
        self._paused_until = max(self._paused_until, now + seconds)
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, -bucket.rate * seconds)

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Follow the server's `x-ratelimit-*` headers; None means the attempt got no reply."""
        if self._lock is None:
            self._setup()
        if headers is None:
            self._end_probe(learned=False)
            return
        now = self._now()
        for name, given in zip(("requests", "tokens"), self._given, strict=True):
            reported = header_int(headers, f"x-ratelimit-limit-{name}")
            remaining = header_int(headers, f"x-ratelimit-remaining-{name}")
            if not reported or remaining is None:
                continue
            # A limit the caller gave is a ceiling (the key may be shared with other
            # processes): the server's figure may lower it, never raise it.
            limit = min(float(reported), given) if given else float(reported)
            bucket: Bucket | None = getattr(self, name)
            if bucket is None or bucket.per_minute != limit:
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{name}")) or 0.0
                capacity = max(limit * self.burst_seconds / 60.0, remaining + reset * limit / 60.0)
                fresh = Bucket(limit, min(capacity, float(limit)), now)
                if bucket is not None:
                    # Carry the level over; a deficit (a pause, a borrow) is carried as the
                    # time it takes to repay, or a pause at a high given rate would become
                    # minutes at a lower reported one.
                    bucket.refill(now)
                    level = bucket.level
                    fresh.level = (
                        min(level, fresh.capacity)
                        if level >= 0
                        else (level / bucket.rate * fresh.rate)
                    )
                else:
                    fresh.level = min(float(remaining), fresh.capacity)
                setattr(self, name, fresh)
                continue
            bucket.refill(now)
            bucket.level = min(bucket.level, float(remaining))
        self._end_probe(learned=True)

    def _end_probe(self, *, learned: bool) -> None:
        if not self._learning or self._probe is None:
            return
        probe, self._probe = self._probe, None
        if learned:
            self._learning = False
        probe.set()
