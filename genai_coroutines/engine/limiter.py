"""Client-side rate limiting: spend the provider's quota to the last unit, never past it.

`RateLimiter` paces one key's requests with one token bucket per limited dimension
(requests, tokens), whose state lives in a `LimitStore` (see `store`). A bucket
refills continuously at `per_minute / 60` per second up to a small capacity (by
default one second of quota), so after any burst the key settles on the steady rate
the provider enforces instead of bursting into 429s and backing off.

Algorithm, per `acquire(tokens)`:
  1. Callers in this process queue on one FIFO lock, so whoever asked first is served
     first and only the head of the queue sleeps (no polling). A caller who finds
     nobody waiting for quota asks the store at once, and queues only if the buckets
     are short.
  2. The head asks the store to take one request and `tokens` tokens; the store either
     takes both or says how long until it could, and the head sleeps that long. A
     request larger than a bucket's capacity waits for a full bucket and then borrows,
     rather than deadlocking. A request above the tokens-per-minute limit itself is
     refused (`acquire` returns None): it can never pass (OpenAI answers it 429
     "Request too large"), and its borrow would hold every request behind it for more
     than a minute.
  3. `observe(headers, refund=...)` follows the reply: it gives back what the request
     was reserved beyond what it used and lowers each bucket to the server's
     `remaining` (see 6.), in one store call. Giving back more than a full bucket (a
     borrow the server refused, "Request too large") wakes the head at once: it slept
     for the time that borrow would take to repay.
  4. `pause(seconds)` (after a 429) empties every bucket of the key so that it holds
     nothing until `seconds` have passed (several 429s at once do not stack): every
     worker resumes at the permitted rate when the server's reset has passed, instead
     of each sleeping and retrying on its own.
  5. `charged(tokens, estimate, kind)` (a token 429 says what the server charged for the
     request, "Requested N") learns the `surcharge(kind)`: what the server counts beyond
     our estimate for requests of that kind, such as the output allowance it reserves for
     a request without `max_output_tokens`. Reservations include it from then on, so the
     storm of 429s a low estimate causes happens once, not on every refill. It is kept in
     the store with the key's limits, so a process starting on the key starts with it.
  6. With `learn=True` and no limits known for the key (given, or learned earlier by any
     batch on it), the first request goes out alone; the `x-ratelimit-limit-*`,
     `-remaining-*` and `-reset-*` headers of its reply shape the buckets, and every
     later reply keeps them honest (a bucket is lowered to the `remaining` the server
     reports, never raised above its own accounting). That `remaining` was counted
     before the requests the key's clients (every process on a shared store) took in
     the last `store.IN_TRANSIT_SECS` (more for a reply read late:
     `store.in_transit_window`) reached the server, so the store takes them off it
     (`LimitStore.adjust`): lowering to the bare figure would forget them, and the
     server, still to charge them, would answer the next request 429. (Most of all where
     the server keeps what the client gives back: OpenAI charges `max_output_tokens` at
     admission and refunds nothing, so every reply lowers.) Only those taken after the
     request answered (its `Ticket`) are taken off: the ones before it reached the server
     before it did, and are counted. (A 429 comes back at once, milliseconds after the
     burst that emptied the bucket: taking that whole burst off its `remaining` a second
     time would put the bucket up to a second of refill below the server's, and idle the
     key that long.) A `remaining` at or above what the bucket can hold cannot lower it,
     and is not sent to the store.

`Capacity` is the same idea for a quantity held rather than spent (Datalab's pages in
flight): leases from the store, released when the job ends.

Why not `aiolimiter` or `pyrate-limiter`: neither can take back or add to a reservation
after the fact (token usage is only known when the response arrives), lower its level
from server feedback, or pause all waiters until a server-named reset; wrapping them
would leave most of this logic outside the library anyway.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable, Mapping

from . import telemetry
from .headers import count, parse_duration
from .store import ANY, IN_TRANSIT_SECS, LimitStore, Ticket

DIMENSIONS = ("requests", "tokens")
_HEADERS = tuple(
    (
        i,
        name,
        f"x-ratelimit-limit-{name}",
        f"x-ratelimit-remaining-{name}",
        f"x-ratelimit-reset-{name}",
    )
    for i, name in enumerate(DIMENSIONS)
)
"""Each of the `DIMENSIONS`, numbered, with its limit, remaining and reset headers."""
_TOKENS = DIMENSIONS.index("tokens")


class _PerLoop:
    """A lock, probe event and the head's nap for each event loop using a limiter (asyncio
    primitives are bound to one loop; a key's limiter outlives any one `asyncio.run`)."""

    __slots__ = ("lock", "probe", "nap")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.probe: asyncio.Event | None = None
        self.nap: asyncio.Future[None] | None = None
        """The head's sleep for quota, while it sleeps: `observe` ends it early when a
        borrow comes back."""


def _wake(nap: asyncio.Future[None]) -> None:
    if not nap.done():
        nap.set_result(None)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets of one key, in `store` at `key`."""

    def __init__(
        self,
        store: LimitStore,
        key: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        burst_seconds: float = 1.0,
        learn: bool = False,
    ) -> None:
        self.store = store
        self.key = key
        self.burst_seconds = burst_seconds
        self._given: dict[str, float | None] = {
            "requests": requests_per_minute,
            "tokens": tokens_per_minute,
        }
        self._limits: dict[str, float] | None = None
        """Per-minute limits in force (given or learned); None until first looked up."""
        self.max_tokens = tokens_per_minute or math.inf
        """The most tokens one request may reserve: the tokens-per-minute limit in force
        (inf: none known)."""
        self._learn = learn
        self._surcharges: dict[str, int] | None = None
        """Tokens the server charges a request of a kind beyond its estimate (from 429s,
        kept in the store); None until read from the store."""
        self._told = False
        """A reply has been observed (with limits or without: then there are none to learn)."""
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PerLoop] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop, _PerLoop] | None = None
        """The loop used last and its `_PerLoop` (a batch calls from one loop throughout)."""
        self._queued = 0
        """Callers waiting for quota or for the probe (of any loop): while there are,
        newcomers queue behind them. (Callers merely waiting for the lock do not count:
        if they did, the queue the probe leaves behind would never drain, newcomers
        joining it as fast as the lock hands over, one caller per turn of the loop.)"""
        self._probes = 0
        """Loops whose probe is out."""
        self._ready = False
        """Limits known and not learning: `acquire` may ask the store without queueing."""
        self._followed: list[str | None] = [None] * len(DIMENSIONS)
        """Each dimension's `x-ratelimit-limit-*` text last followed: a reply repeating it
        (nearly all do) needs only its `remaining` read."""
        self._ceilings: list[float] = [math.inf] * len(DIMENSIONS)
        """The capacity each dimension's bucket was last given here (inf: not by this
        limiter): a `remaining` at or above it cannot lower the bucket."""

    def given(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        """A further batch's given limits, in force from its first request."""
        for name, value in zip(DIMENSIONS, (requests_per_minute, tokens_per_minute), strict=True):
            if value is not None and value != self._given[name]:
                self._given[name] = value
                if name == "tokens":
                    self.max_tokens = value
                self._limits = None  # shaped again at the next acquire
                self._ready = False
                self._followed = [None] * len(DIMENSIONS)
                self._ceilings = [math.inf] * len(DIMENSIONS)

    @property
    def learning(self) -> bool:
        """True until a reply has told the limits (or shown there are none to learn)."""
        return self._learn and not self._told and not self._limits

    def _local(self) -> _PerLoop:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        local = self._loops.get(loop)
        if local is None:
            local = self._loops[loop] = _PerLoop()
        self._last = (loop, local)
        return local

    async def _setup(self) -> None:
        limits = await self.store.limits(self.key)
        for i, (name, given) in enumerate(self._given.items()):
            if given and limits.get(name, given) >= given:
                await self._shape(i, given, given * self.burst_seconds / 60.0)
                limits[name] = given
        self._limits = limits
        self.max_tokens = limits.get("tokens", math.inf)
        self._ready = not self.learning

    async def acquire(self, tokens: int = 0) -> Ticket | None:
        """Wait until one request of `tokens` estimated tokens may be sent, then reserve it;
        returns its ticket, for `observe` to tell the requests taken after it. None: the
        request is above `max_tokens` and can never pass (nothing is reserved).

        With nobody queued and the limits known, the store is asked at once: a request the
        buckets can take right away costs one store call, no lock."""
        amounts = (("requests", 1), ("tokens", tokens))
        if self._ready and not self._queued:
            if tokens > self.max_tokens:
                return None
            taken = await self.store.take(self.key, amounts)
            if taken.ticket is not None:
                return taken.ticket
        local = self._local()
        waiting = False  # counted in `_queued`: this caller waits for quota or the probe
        try:
            async with local.lock:
                if self._limits is None:
                    await self._setup()
                while True:
                    if tokens > self.max_tokens:  # limits known now (set up, or learned)
                        return None
                    pending: Awaitable[object]
                    if self.learning:
                        if local.probe is None:
                            local.probe = asyncio.Event()
                            self._probes += 1
                            return ANY
                        pending = local.probe.wait()
                    else:
                        taken = await self.store.take(self.key, amounts)
                        if taken.ticket is not None:
                            return taken.ticket
                        pending = self._nap(local, taken.wait)
                    if not waiting:
                        waiting = True
                        self._queued += 1
                    await pending
        finally:
            if waiting:
                self._queued -= 1

    @staticmethod
    async def _nap(local: _PerLoop, seconds: float) -> None:
        """Sleep `seconds`, or until `_returned` wakes the head sooner."""
        loop = asyncio.get_running_loop()
        nap = local.nap = loop.create_future()
        timer = loop.call_later(seconds, _wake, nap)
        try:
            await nap
        finally:
            timer.cancel()
            local.nap = None

    def _returned(self, refund: int) -> None:
        """`refund` tokens went back: more than a full bucket means a borrow came back
        unspent, and the head, sleeping off that borrow, may go now."""
        if refund > self._ceilings[_TOKENS]:
            nap = self._local().nap
            if nap is not None:
                _wake(nap)

    async def _shape(self, i: int, per_minute: float, capacity: float) -> None:
        await self.store.shape(self.key, DIMENSIONS[i], per_minute, capacity)
        self._ceilings[i] = max(1.0, capacity)

    async def surcharge(self, kind: str) -> int:
        """Tokens to reserve beyond the estimate of a request of this kind (see 5. above)."""
        surcharges = self._surcharges
        if surcharges is None:
            async with self._local().lock:
                surcharges = self._surcharges
                if surcharges is None:
                    surcharges = self._surcharges = await self.store.surcharges(self.key)
        return surcharges.get(kind, 0)

    def known_surcharge(self, kind: str) -> int | None:
        """`surcharge(kind)` once the key's surcharges are read (None before): no coroutine
        on every attempt's path."""
        surcharges = self._surcharges
        return None if surcharges is None else surcharges.get(kind, 0)

    async def charged(self, tokens: int, estimate: int, kind: str) -> None:
        """The server said a request of `kind` estimated at `estimate` tokens costs it
        `tokens`: the key's surcharge learns the excess (`LimitStore.learn_surcharge`)."""
        learned = await self.store.learn_surcharge(self.key, kind, max(0, tokens - estimate))
        if self._surcharges is None:
            self._surcharges = {}
        self._surcharges[kind] = learned

    async def pause(self, seconds: float) -> None:
        """Hold every worker on the key for `seconds`, then resume at the steady rate."""
        telemetry.paused(seconds)
        await self.store.pause(self.key, seconds)

    async def observe(
        self,
        headers: Mapping[str, str] | None,
        *,
        refund: int = 0,
        number: Ticket = ANY,
        window: float = IN_TRANSIT_SECS,
    ) -> None:
        """Follow the server's `x-ratelimit-*` headers (None: the attempt got no reply),
        after giving back `refund` tokens: what the request was reserved beyond what the
        server reported it used. `number`: the ticket `acquire` gave the request answered
        (`ANY`: not known; every request taken in the last `window` is then taken to be
        in transit). `window`: how long before now the reply's `remaining` may have been
        counted (`store.in_transit_window`)."""
        give = (("tokens", refund),) if refund else ()
        if headers is None:
            if give:
                await self.store.adjust(self.key, give)
                self._returned(refund)
            if self._probes:
                self._end_probe()
            return
        if self._limits is None:
            await self._setup()
        lower: list[tuple[str, float]] = []
        for i, name, limit_header, remaining_header, reset_header in _HEADERS:
            remaining = count(headers.get(remaining_header))
            if remaining is None:
                continue
            told = headers.get(limit_header)
            if told != self._followed[i]:
                if not await self._follow(i, told, remaining, headers.get(reset_header)):
                    continue
            if remaining < self._ceilings[i]:
                lower.append((name, float(remaining)))
        if give or lower:
            await self.store.adjust(self.key, give, lower, number, window)
            if give:
                self._returned(refund)
        if not self._told:
            self._told = True
            self._ready = True
        if self._probes:
            self._end_probe()

    async def _follow(self, i: int, told: str | None, remaining: int, reset: str | None) -> bool:
        """Shape dimension `i`'s bucket to the limit a reply told (with its `remaining`
        and `reset`); False when it told none."""
        reported = count(told)
        if not reported:
            return False
        assert self._limits is not None
        name = DIMENSIONS[i]
        # A limit the caller gave is a ceiling (the key may be shared with other
        # processes): the server's figure may lower it, never raise it.
        given = self._given[name]
        limit = min(float(reported), given) if given else float(reported)
        if self._limits.get(name) != limit:
            seconds = parse_duration(reset) or 0.0
            capacity = max(limit * self.burst_seconds / 60.0, remaining + seconds * limit / 60.0)
            await self._shape(i, limit, min(capacity, limit))
            self._limits[name] = limit
            if name == "tokens":
                self.max_tokens = limit
            telemetry.limit_learned(name, limit)
        self._followed[i] = told
        return True

    def _end_probe(self) -> None:
        local = self._local()
        if local.probe is not None:
            probe, local.probe = local.probe, None
            self._probes -= 1
            probe.set()


class Capacity:
    """A FIFO semaphore with weighted permits over a store (e.g. Datalab pages in flight).

    A request for more than the total is admitted alone (it waits until nothing else
    holds a permit) instead of never. Permits are leases: a holder that dies without
    releasing (another process, over a shared store) loses them after `lease_secs`.
    Waiters wake on a local release, and look again every `recheck_secs` for releases
    made elsewhere.
    """

    def __init__(
        self,
        store: LimitStore,
        key: str,
        total: int,
        *,
        lease_secs: float = 3600.0,
        recheck_secs: float = 0.25,
    ) -> None:
        self.store = store
        self.key = key
        self.total = total
        self.lease_secs = lease_secs
        self.recheck_secs = recheck_secs
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[asyncio.Lock, asyncio.Event]
        ] = weakref.WeakKeyDictionary()

    def _local(self) -> tuple[asyncio.Lock, asyncio.Event]:
        loop = asyncio.get_running_loop()
        local = self._loops.get(loop)
        if local is None:
            local = self._loops[loop] = (asyncio.Lock(), asyncio.Event())
        return local

    async def acquire(self, units: int) -> str:
        """Wait for `units` permits; returns the lease to `release`."""
        lock, freed = self._local()
        units = max(units, 0)
        async with lock:
            while True:
                lease = await self.store.lease(self.key, units, self.total, self.lease_secs)
                if lease is not None:
                    return lease
                freed.clear()
                try:
                    await asyncio.wait_for(freed.wait(), self.recheck_secs)
                except asyncio.TimeoutError:
                    pass

    async def hold(self, lease: str, units: int) -> None:
        """Hold `units` under `lease` for `lease_secs` more, however many are leased (see
        `LimitStore.hold`): what a live holder calls before its lease runs out."""
        await self.store.hold(self.key, lease, units, self.lease_secs)

    async def release(self, lease: str) -> None:
        await self.store.release(self.key, lease)
        self._local()[1].set()

    async def refused(self, lease: str, ttl: float) -> int | None:
        """The provider refused the holder of `lease` for exceeding a capacity it enforces
        below `total` (other clients of the key, or a lower plan): learn a ceiling for `ttl`
        seconds (`LimitStore.learn_ceiling`, shared like the rest of the key's limits), and
        give the lease back so the holder queues again behind the pages now in flight.
        Returns the ceiling learned, or None when nothing was."""
        ceiling = await self.store.learn_ceiling(self.key, lease, ttl)
        await self.release(lease)
        return ceiling
