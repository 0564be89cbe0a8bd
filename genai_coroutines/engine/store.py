"""Where a key's limit state lives: behind `LimitStore`, in memory or shared.

Providers enforce their limits per key (OpenAI: per organisation and model), so the
state that paces requests belongs to the key, not to a batch: every batch, processor
and (with a shared store) process spending one key reads and writes the same state.
That state is small on purpose: per bucket a shape (`per_minute`, `capacity`) and a
(level, stamp) pair, per key a pause deadline, the surcharges its 429s taught (see
`learn_surcharge`) and the takes of the last `IN_TRANSIT_SECS` (see `adjust`), per
capacity the units leased and the ceiling a refusal taught (see `learn_ceiling`), and per
sliding window the times of its events (the Batch API's batches created in the hour), and
per named budget its spent total and each holder's reservations (see `budget_reserve`).
Each operation below reads and writes it in one atomic step on the store's own clock,
so an implementation over a shared server (a Redis script using `TIME`) is a
line-by-line translation of `MemoryStore`, and nothing above this interface changes.

Keys are opaque strings made by `limits.limit_key` (endpoint, a digest of the API key,
the model); the API key itself never reaches a store.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

IN_TRANSIT_SECS = 0.05
"""How long after it is taken a request may still be missing from a reply's `remaining`:
it has not reached the server yet, or it has while that reply was on its way back."""
KEPT_SECS = 1.0
"""How long takes are remembered: the longest window `adjust` may be given (a reply read
late by a busy client; see `in_transit_window`)."""


def in_transit_window(round_trip: float, server_secs: float | None) -> float:
    """The window of takes a reply's `remaining` missed: `IN_TRANSIT_SECS` plus the time
    since the request was taken (`round_trip`) that the server did not spend on it
    (`openai-processing-ms`; None: not told, `IN_TRANSIT_SECS` alone). That time is the
    network both ways and the waits in the client, before sending and before reading the
    reply: a client reading a burst of 80 replies at once on 2 cores reads its last ones
    tens of ms after the server counted them, and with a fixed 50 ms the takes of that wait
    were forgotten (0% to 6.5% of requests answered 429 at the start of
    benchmarks/scale_out.py's `--transit` run; 0% to 1% with this window). The server's own
    time is left out: takes it counted before it wrote the headers of a slow answer must
    not be taken off again (with replies of 300 ms, a 0.2 s window cost 3% of the rate)."""
    if server_secs is None:
        return IN_TRANSIT_SECS
    return min(KEPT_SECS, IN_TRANSIT_SECS + max(0.0, round_trip - server_secs))


class Ticket(NamedTuple):
    """One successful `take`: its number among the key's takes, and per dimension the
    amount the key's takes came to, this one included."""

    number: int
    through: Mapping[str, float]


ANY = Ticket(-1, {})
"""A ticket before every take: `adjust` then counts every take in the window in transit."""


class Taken(NamedTuple):
    """What `take` did: `wait` 0 and its `ticket`, or the seconds to wait and no ticket."""

    wait: float
    ticket: Ticket | None


BUDGET_KEEP_SECS = 7 * 24 * 3600.0
"""How long a named budget's spent total is kept after its last write: a rerun within a
week continues the same total; after that the name starts again from zero."""


class BudgetView(NamedTuple):
    """What `budget_reserve` did: whether the amount is now held, and the budget's totals
    before it (spent, and every live holder's reservations)."""

    granted: bool
    spent: float
    in_flight: float


class LimitStoreUnavailable(ConnectionError):
    """A shared limits store cannot be reached when a batch starts (nothing was sent)."""


class LimitStore(Protocol):
    """Atomic operations on one key's buckets, pause, capacity leases and windows."""

    async def take(self, key: str, amounts: Sequence[tuple[str, float]]) -> Taken:
        """Take every amount from its bucket (wait 0, and the take's `Ticket`), or take
        nothing and return the seconds until all of them (and the end of any pause) can
        be had. A dimension with no bucket is unlimited. An amount above a bucket's
        capacity needs a full bucket and then borrows (the level goes negative) rather
        than waiting forever. A take is remembered for `IN_TRANSIT_SECS` (see `adjust`)."""
        ...

    async def adjust(
        self,
        key: str,
        give: Sequence[tuple[str, float]],
        lower: Sequence[tuple[str, float]] = (),
        since: Ticket = ANY,
        window: float = IN_TRANSIT_SECS,
    ) -> None:
        """What a reply taught, in one step: add each `give` amount back to its bucket
        (never above capacity; negative: take more), e.g. to settle a token reservation,
        then lower each `lower` bucket to a level if it holds more: what the server says
        remains, less what the key's takes after `since` (the request answered) and in the
        last `window` seconds (at most `KEPT_SECS`) came to, by any client of the store.
        Those were not counted in that `remaining` yet, and the server is still to charge
        them. (The takes before
        the answered one reached the server before it did, and are counted.) One call per
        reply, not one per figure: over a shared store that is one round trip."""
        ...

    async def shape(self, key: str, dimension: str, per_minute: float, capacity: float) -> None:
        """Give a bucket this rate and capacity. A new bucket starts full; an existing one
        keeps its level, a deficit carried as the time it takes to repay."""
        ...

    async def limits(self, key: str) -> dict[str, float]:
        """The per-minute rate of each bucket the key has."""
        ...

    async def pause(self, key: str, seconds: float) -> None:
        """Hold every taker for `seconds` (pauses do not stack), then resume at the steady
        rate: each bucket is emptied to what refills during the pause."""
        ...

    async def lease(self, key: str, units: int, total: int, ttl: float) -> str | None:
        """Lease `units` of a capacity of `total` for at most `ttl` seconds, or None when it
        is full. A request for more than `total` is granted alone (when nothing else is
        leased) instead of never. A lease not released within `ttl` is reclaimed, so a
        holder that died does not keep its units. A ceiling `learn_ceiling` set, until it
        expires, bounds `total`."""
        ...

    async def learn_ceiling(self, key: str, lease: str, ttl: float) -> int | None:
        """The holder of `lease` was refused by the provider for exceeding a capacity it
        enforces and the client was not told (Datalab's pages in flight): set the
        capacity's ceiling to the units the other leases hold (they were accepted), and
        below any ceiling learned before, so refusals always lower it; never below 1. It
        holds for `ttl` seconds from now, then the configured total applies again.
        Returns the ceiling, or None when no other lease holds units: the refused one
        alone overran the capacity (or other clients of the key did), which teaches
        nothing about how much this key's own holders may take."""
        ...

    async def hold(self, key: str, lease: str, units: int, ttl: float) -> None:
        """Hold `units` under the caller's `lease` id for `ttl` seconds from now, however
        much else is leased: a holder renewing its lease, or taking over the one a
        process that died left for the same thing (a Batch API batch, resumed)."""
        ...

    async def release(self, key: str, lease: str) -> None:
        """Give a lease's units back (a lease already reclaimed is ignored)."""
        ...

    async def surcharges(self, key: str) -> dict[str, int]:
        """The tokens the server charges the key's requests of each kind beyond their
        estimate, as `learn_surcharge` left them."""
        ...

    async def learn_surcharge(self, key: str, kind: str, excess: int) -> int:
        """A request of `kind` was charged `excess` tokens beyond its estimate: follow a
        larger excess at once, a smaller one slowly (estimates vary from request to
        request). Returns the surcharge now; it expires with the key's buckets."""
        ...

    async def take_slot(self, key: str, limit: int, window: float) -> float:
        """Count one event against at most `limit` in any `window` seconds (a sliding
        window, exact: the Batch API's 2,000 batches created per hour) and return 0, or
        count nothing and return the seconds until the oldest event leaves the window."""
        ...

    async def budget_reserve(
        self, key: str, holder: str, amount: float, limit: float, ttl: float, force: bool
    ) -> BudgetView:
        """Hold `amount` more under `holder` (one batch's reservations) if the budget's spent
        total plus every live holder's reservations plus it stays within `limit`, or
        whatever they come to when `force` (work paid for earlier); the holder's
        reservations then live `ttl` seconds more. A holder not renewed within its `ttl`
        (its process died) is dropped: what it held is freed. The spent total is kept
        `BUDGET_KEEP_SECS` after the budget's last write."""
        ...

    async def budget_settle(
        self, key: str, holder: str, release: float, spend: float, ttl: float
    ) -> None:
        """Take `release` out of `holder`'s reservations and add `spend` to the spent total,
        in one step; the holder's reservations live `ttl` seconds more (`ttl` 0: the holder
        is done, whatever it still holds is freed). With both amounts 0: a renewal."""
        ...


class Bucket:
    """Continuously refilled quota: `rate` units per second, at most `capacity` banked."""

    __slots__ = ("per_minute", "rate", "capacity", "level", "stamp")

    def __init__(self, per_minute: float, capacity: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, capacity)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> float:
        """The level now (stored)."""
        level = self.level + (now - self.stamp) * self.rate
        if level > self.capacity:
            level = self.capacity
        self.level, self.stamp = level, now
        return level


def _when(entry: tuple[float, int, Mapping[str, float]]) -> float:
    return entry[0]


class _Sent:
    """A key's takes of the last `KEPT_SECS` (see `LimitStore.adjust`)."""

    __slots__ = ("log", "number", "through")

    def __init__(self) -> None:
        self.log: deque[tuple[float, int, Mapping[str, float]]] = deque()
        """(when, number, what the takes before it came to) per take, oldest first: the
        takes in transit are one subtraction, not a sum."""
        self.number = 0
        self.through: Mapping[str, float] = {}
        """Per dimension, what every take so far came to."""

    def taken(
        self, now: float, amounts: Sequence[tuple[str, float]], buckets: Mapping[str, Bucket]
    ) -> Ticket:
        before = self.through
        through = dict(before)
        for dimension, amount in amounts:
            if dimension in buckets:
                through[dimension] = before.get(dimension, 0.0) + amount
        self.number += 1
        self.through = through
        self.log.append((now, self.number, before))
        self.forget(now)
        return Ticket(self.number, through)

    def forget(self, now: float) -> None:
        log, cutoff = self.log, now - KEPT_SECS
        while log and log[0][0] <= cutoff:
            log.popleft()

    def in_transit(self, now: float, since: Ticket, window: float) -> dict[str, float]:
        """Per dimension, what the takes after `since` and in the last `window` came to."""
        self.forget(now)
        log = self.log
        if not log:
            return {}
        cutoff = now - min(window, KEPT_SECS)
        if log[0][0] > cutoff:
            first = 0
        else:  # the oldest take in the window, found by halving (the log is in time order)
            first = bisect.bisect_right(log, cutoff, key=_when)
            if first == len(log):
                return {}
        _, number, before = log[first]
        base = before if number > since.number + 1 else since.through
        return {
            dimension: max(0.0, total - base.get(dimension, 0.0))
            for dimension, total in self.through.items()
        }


class _Purse:
    """A named budget in memory: its spent total, each holder's (reserved, expiry), and
    when it was last written."""

    __slots__ = ("spent", "holders", "written")

    def __init__(self, now: float) -> None:
        self.spent = 0.0
        self.holders: dict[str, tuple[float, float]] = {}
        self.written = now


class MemoryStore:
    """`LimitStore` in this process's memory: shared by every batch and event loop here."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, dict[str, Bucket]] = {}
        """Each key's buckets, by dimension."""
        self._paused: dict[str, float] = {}
        self._leases: dict[str, dict[str, tuple[int, float]]] = {}
        self._ceilings: dict[str, tuple[int, float]] = {}
        """Each capacity's learned ceiling: (units, expiry)."""
        self._ids = itertools.count()
        self._slots: dict[str, deque[float]] = {}
        """Each window's event times, oldest first."""
        self._sent: dict[str, _Sent] = {}
        self._surcharges: dict[str, dict[str, int]] = {}
        self._purses: dict[str, _Purse] = {}
        """Each named budget's state."""

    async def take(self, key: str, amounts: Sequence[tuple[str, float]]) -> Taken:
        now = self._clock()
        wait = self._paused.get(key, now) - now
        buckets = self._buckets.get(key)
        if not buckets:
            return Taken(wait, None) if wait > 0 else Taken(0.0, ANY)
        for dimension, amount in amounts:  # taken as it goes; given back if short
            bucket = buckets.get(dimension)
            if bucket is not None:
                capacity, rate = bucket.capacity, bucket.rate
                level = bucket.level + (now - bucket.stamp) * rate  # `refill`, inlined
                if level > capacity:
                    level = capacity
                bucket.level, bucket.stamp = level - amount, now
                short = (amount if amount < capacity else capacity) - level
                if short > 0 and short > wait * rate:
                    wait = short / rate
        if wait > 0:
            for dimension, amount in amounts:
                bucket = buckets.get(dimension)
                if bucket is not None:
                    bucket.level += amount
            return Taken(wait, None)
        sent = self._sent.get(key)
        if sent is None:
            sent = self._sent[key] = _Sent()
        return Taken(0.0, sent.taken(now, amounts, buckets))

    async def adjust(
        self,
        key: str,
        give: Sequence[tuple[str, float]],
        lower: Sequence[tuple[str, float]] = (),
        since: Ticket = ANY,
        window: float = IN_TRANSIT_SECS,
    ) -> None:
        buckets = self._buckets.get(key)
        if not buckets:
            return
        now = self._clock()
        for dimension, amount in give:
            bucket = buckets.get(dimension)
            if bucket is not None:
                bucket.level = min(bucket.capacity, bucket.refill(now) + amount)
        if not lower:
            return
        sent = self._sent.get(key)
        in_transit = {} if sent is None else sent.in_transit(now, since, window)
        for dimension, remaining in lower:
            bucket = buckets.get(dimension)
            level = remaining - in_transit.get(dimension, 0.0)
            if bucket is not None and bucket.refill(now) > level:
                bucket.level = level

    async def shape(self, key: str, dimension: str, per_minute: float, capacity: float) -> None:
        now = self._clock()
        fresh = Bucket(per_minute, capacity, now)
        buckets = self._buckets.setdefault(key, {})
        old = buckets.get(dimension)
        if old is not None:
            old.refill(now)
            fresh.level = (
                min(old.level, fresh.capacity)
                if old.level >= 0
                else old.level / old.rate * fresh.rate
            )
        buckets[dimension] = fresh

    async def limits(self, key: str) -> dict[str, float]:
        return {dim: b.per_minute for dim, b in self._buckets.get(key, {}).items()}

    async def pause(self, key: str, seconds: float) -> None:
        now = self._clock()
        self._paused[key] = max(self._paused.get(key, 0.0), now + seconds)
        for bucket in self._buckets.get(key, {}).values():
            bucket.level = min(bucket.refill(now), -bucket.rate * seconds)

    async def lease(self, key: str, units: int, total: int, ttl: float) -> str | None:
        now = self._clock()
        leases = self._live_leases(key, now)
        ceiling, expires = self._ceilings.get(key, (total, now))
        if expires > now:
            total = min(total, ceiling)
        used = sum(held for held, _ in leases.values())
        if used + min(units, total) > total:
            return None
        lease_id = str(next(self._ids))
        leases[lease_id] = (units, now + ttl)
        return lease_id

    async def learn_ceiling(self, key: str, lease: str, ttl: float) -> int | None:
        now = self._clock()
        others = sum(held for i, (held, _) in self._live_leases(key, now).items() if i != lease)
        if others <= 0:
            return None
        ceiling, expires = self._ceilings.get(key, (others + 1, now))
        if expires <= now:
            ceiling = others + 1
        learned = max(1, min(others, ceiling - 1))
        self._ceilings[key] = (learned, now + ttl)
        return learned

    def _live_leases(self, key: str, now: float) -> dict[str, tuple[int, float]]:
        """The key's leases, those past their ttl reclaimed."""
        leases = self._leases.setdefault(key, {})
        for lease_id in [i for i, (_, expires) in leases.items() if expires <= now]:
            del leases[lease_id]
        return leases

    async def hold(self, key: str, lease: str, units: int, ttl: float) -> None:
        now = self._clock()
        self._live_leases(key, now)[lease] = (units, now + ttl)

    async def release(self, key: str, lease: str) -> None:
        self._leases.get(key, {}).pop(lease, None)

    async def surcharges(self, key: str) -> dict[str, int]:
        return dict(self._surcharges.get(key, {}))

    async def learn_surcharge(self, key: str, kind: str, excess: int) -> int:
        known = self._surcharges.setdefault(key, {})
        old = known.get(kind, 0)
        known[kind] = learned = excess if excess > old else (9 * old + excess) // 10
        return learned

    async def take_slot(self, key: str, limit: int, window: float) -> float:
        now = self._clock()
        events = self._slots.setdefault(key, deque())
        while events and events[0] <= now - window:
            events.popleft()
        if len(events) < limit:
            events.append(now)
            return 0.0
        return events[len(events) - limit] + window - now

    def _purse(self, key: str, now: float) -> _Purse:
        """The budget's state, started afresh when kept past `BUDGET_KEEP_SECS`, its
        expired holders dropped."""
        purse = self._purses.get(key)
        if purse is None or purse.written + BUDGET_KEEP_SECS <= now:
            purse = self._purses[key] = _Purse(now)
        holders = purse.holders
        for holder in [h for h, (_, expires) in holders.items() if expires <= now]:
            del holders[holder]
        return purse

    async def budget_reserve(
        self, key: str, holder: str, amount: float, limit: float, ttl: float, force: bool
    ) -> BudgetView:
        now = self._clock()
        purse = self._purse(key, now)
        held = sum(reserved for reserved, _ in purse.holders.values())
        if not force and purse.spent + held + amount > limit:
            return BudgetView(False, purse.spent, held)
        mine = purse.holders.get(holder, (0.0, now))[0]
        purse.holders[holder] = (mine + amount, now + ttl)
        purse.written = now
        return BudgetView(True, purse.spent, held)

    async def budget_settle(
        self, key: str, holder: str, release: float, spend: float, ttl: float
    ) -> None:
        now = self._clock()
        purse = self._purse(key, now)
        purse.spent += spend
        purse.written = now
        mine = purse.holders.pop(holder, None)
        if mine is not None and ttl > 0:
            purse.holders[holder] = (max(0.0, mine[0] - release), now + ttl)

    def snapshot(self, key: str) -> Mapping[str, float]:
        """Levels of the key's buckets now (for inspection and tests)."""
        now = self._clock()
        return {dim: bucket.refill(now) for dim, bucket in self._buckets.get(key, {}).items()}
