"""`RedisStore`: one key's limit state shared by every process and machine using one Redis.

Each `LimitStore` operation is one Lua script, a line-by-line translation of
`store.MemoryStore`: it reads and writes the key's (level, stamp) pairs, pause deadline
or leases in one atomic step on the server's clock (`TIME`), never a client's, so
clients on machines whose clocks disagree still share one budget. The scripts are
registered once per client and sent as `EVALSHA` (loaded again by the client if the
server forgot them, e.g. after a restart).

What Redis holds, per limited key (`limits.limit_key`: endpoint, a digest of the API
key, the model; the braces are a Redis Cluster hash tag, so both entries of a key live
on one shard):

    genai-coroutines:{<endpoint>:<key digest>:<model>}:limits   a hash: per bucket
        `<dim>:r` (per minute), `<dim>:c` (capacity), `<dim>:l` (level), `<dim>:t`
        (stamp, server seconds); `pause` (the deadline of a 429 pause)
    genai-coroutines:{...}:leases   a hash: lease id -> "<units> <expiry>" (pages in flight)
    genai-coroutines:{...}:ceiling  the capacity's learned ceiling (`learn_ceiling`), a
        number that Redis expires itself when its time is up
    genai-coroutines:{...}:slots    a sorted set: one member per event of a sliding window
        (batches created), scored by its server time
    genai-coroutines:{...}:sent     a sorted set: one member per take of the last
        `KEPT_SECS`, "<number> <dim> <what the takes before it came to> ...", scored
        by its server time (the limits hash keeps `sent`, the takes' count, and per bucket
        `<dim>:s`, what they came to)
    genai-coroutines:{...}:surcharges  a hash: request kind -> the tokens learned

and per named budget (`limits.budget_key`: its unit and a digest of its name):

    genai-coroutines:{budget:<unit>:<name digest>}:budget  a hash: `spent` (the total),
        and per holder (one batch) `h:<id>` -> "<reserved> <expiry>"

The hashes expire after `idle_ttl` seconds without a write (the leases hash: not before its
last lease would), the slots and takes one window after their last event, so a key nobody uses
leaves nothing behind; a budget's hash lives `BUDGET_KEEP_SECS` (a week) after its last write.
A bucket that expired while this process still knew its shape is
recreated full by the next `take` (after that long idle it would have refilled anyway).
The API key itself never reaches Redis.

Failures: `ready()` (called when a batch starts) raises `LimitStoreUnavailable`, naming
the URL without its credentials, when Redis cannot be reached, before anything is sent.
Redis lost later, mid-batch, degrades this store to an in-process `MemoryStore`, seeded
with the shapes and leases this process knew, its buckets empty, with one warning; the
batch goes on at in-process limits and loses nothing, except that a named budget cannot be
counted in one process for all of them: its next reservation is refused (the rest of the
batch ends `budget_exceeded`; a rerun continues). The next batch to start finds
Redis again (when reachable and no in-process lease is outstanding) and shares the
limits again.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .logs import log_event
from .store import (
    ANY,
    BUDGET_KEEP_SECS,
    IN_TRANSIT_SECS,
    KEPT_SECS,
    BudgetView,
    LimitStoreUnavailable,
    MemoryStore,
    Taken,
    Ticket,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOST = (RedisConnectionError, RedisTimeoutError, OSError)
"""Errors that mean the server cannot be reached (a script error is a bug and raises)."""

_PRELUDE = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function load(key, dim)
  local v = redis.call('HMGET', key, dim .. ':r', dim .. ':c', dim .. ':l', dim .. ':t')
  if not v[1] then return nil end
  return {pm = tonumber(v[1]), cap = tonumber(v[2]), level = tonumber(v[3]),
          stamp = tonumber(v[4])}
end
local function refill(b, t)
  b.level = math.min(b.cap, b.level + (t - b.stamp) * b.pm / 60)
  b.stamp = t
end
local function save(key, dim, b)
  redis.call('HSET', key, dim .. ':r', b.pm, dim .. ':c', b.cap, dim .. ':l', b.level,
             dim .. ':t', b.stamp)
end
local function words(text)
  local found = {}
  for word in string.gmatch(text, '%S+') do found[#found + 1] = word end
  return found
end
local function dims(key)
  local all = redis.call('HGETALL', key)
  local found = {}
  for i = 1, #all, 2 do
    local name = string.match(all[i], '^(.+):r$')
    if name then found[#found + 1] = name end
  end
  return found
end
"""

# KEYS[1] the limits hash, KEYS[2] the takes in transit. ARGV[1] idle ttl (ms), ARGV[2] how long
# takes are kept (s), then per amount: dimension, amount, and the per-minute rate and
# capacity this client knows for it ('' when none), to recreate a bucket that expired while
# idle. Returns the wait, or '0' and the ticket: the take's number, then dimension and what
# the takes came to, with this one.
_TAKE = """
local t = now()
local wait = (tonumber(redis.call('HGET', KEYS[1], 'pause')) or 0) - t
local found = {}
for i = 3, #ARGV, 4 do
  local dim, amount = ARGV[i], tonumber(ARGV[i + 1])
  local b = load(KEYS[1], dim)
  if not b and ARGV[i + 2] ~= '' then
    b = {pm = tonumber(ARGV[i + 2]), cap = math.max(1, tonumber(ARGV[i + 3])), stamp = t}
    b.level = b.cap
  end
  if b then
    refill(b, t)
    local need = math.min(amount, b.cap)
    if b.level < need then wait = math.max(wait, (need - b.level) / (b.pm / 60)) end
    found[#found + 1] = {dim, b, amount}
  end
end
if wait > 0 then return string.format('%.17g', wait) end
if #found == 0 then return '0' end
local number = redis.call('HINCRBY', KEYS[1], 'sent', 1)
local before, through = {number}, {'0', number}
for _, f in ipairs(found) do
  f[2].level = f[2].level - f[3]
  save(KEYS[1], f[1], f[2])
  local sum = tonumber(redis.call('HGET', KEYS[1], f[1] .. ':s')) or 0
  redis.call('HSET', KEYS[1], f[1] .. ':s', string.format('%.17g', sum + f[3]))
  before[#before + 1] = f[1] .. ' ' .. string.format('%.17g', sum)
  through[#through + 1] = f[1] .. ' ' .. string.format('%.17g', sum + f[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], t, table.concat(before, ' '))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t - window)
redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000))
return table.concat(through, ' ')
"""

# KEYS[1] the limits hash, KEYS[2] the takes in transit. ARGV: idle ttl (ms), the in-transit
# window (s), the ticket of the request answered ("<number> <dim> <value> ..."), the number of
# amounts to give, then (dimension, amount) pairs to give, then (dimension, remaining) pairs
# to lower to, less what is in transit.
_ADJUST = """
local t = now()
local gives = tonumber(ARGV[4])
local changed = false
local base = nil
if #ARGV > 4 + 2 * gives then
  local cutoff = string.format('(%.17g', t - tonumber(ARGV[2]))
  local first = redis.call('ZRANGEBYSCORE', KEYS[2], cutoff, '+inf', 'LIMIT', 0, 1)[1]
  if first then
    local since, oldest = words(ARGV[3]), words(first)
    local chosen = tonumber(oldest[1]) > tonumber(since[1]) + 1 and oldest or since
    base = {}
    for j = 2, #chosen, 2 do base[chosen[j]] = tonumber(chosen[j + 1]) end
  end
end
local function in_transit(dim)
  if not base then return 0 end
  local sum = tonumber(redis.call('HGET', KEYS[1], dim .. ':s')) or 0
  return math.max(0, sum - (base[dim] or 0))
end
for i = 5, #ARGV, 2 do
  local b = load(KEYS[1], ARGV[i])
  if b then
    refill(b, t)
    local value = tonumber(ARGV[i + 1])
    if (i - 5) / 2 < gives then
      b.level = math.min(b.cap, b.level + value)
    else
      b.level = math.min(b.level, value - in_transit(ARGV[i]))
    end
    save(KEYS[1], ARGV[i], b)
    changed = true
  end
end
if changed then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

# ARGV: idle ttl (ms), dimension, per minute, capacity.
_SHAPE = """
local t = now()
local fresh = {pm = tonumber(ARGV[3]), cap = math.max(1, tonumber(ARGV[4])), stamp = t}
fresh.level = fresh.cap
local old = load(KEYS[1], ARGV[2])
if old then
  refill(old, t)
  if old.level >= 0 then
    fresh.level = math.min(old.level, fresh.cap)
  else
    fresh.level = old.level / (old.pm / 60) * (fresh.pm / 60)
  end
end
save(KEYS[1], ARGV[2], fresh)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Returns dimension, per minute, capacity for each bucket.
_LIMITS = """
local out = {}
for _, dim in ipairs(dims(KEYS[1])) do
  local v = redis.call('HMGET', KEYS[1], dim .. ':r', dim .. ':c')
  out[#out + 1] = dim
  out[#out + 1] = v[1]
  out[#out + 1] = v[2]
end
return out
"""

# ARGV: idle ttl (ms), seconds.
_PAUSE = """
local t = now()
local seconds = tonumber(ARGV[2])
local deadline = math.max(tonumber(redis.call('HGET', KEYS[1], 'pause')) or 0, t + seconds)
redis.call('HSET', KEYS[1], 'pause', deadline)
for _, dim in ipairs(dims(KEYS[1])) do
  local b = load(KEYS[1], dim)
  refill(b, t)
  b.level = math.min(b.level, -(b.pm / 60) * seconds)
  save(KEYS[1], dim, b)
end
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[1]) + seconds * 1000))
return 1
"""

# KEYS[1] the leases hash, KEYS[2] the learned ceiling. ARGV: lease id, units, total, ttl (s),
# idle ttl (ms).
_LEASE = """
local t = now()
local units, total, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ceiling = tonumber(redis.call('GET', KEYS[2]))
if ceiling and ceiling < total then total = ceiling end
local used = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local held, expires = string.match(all[i + 1], '^(%S+) (%S+)$')
  if tonumber(expires) <= t then
    redis.call('HDEL', KEYS[1], all[i])
  else
    used = used + tonumber(held)
  end
end
if used + math.min(units, total) > total then return false end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %.17g', units, t + ttl))
local keep = math.floor(ttl * 1000) + tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return ARGV[1]
"""

# KEYS[1] the leases hash. ARGV: lease id, units, ttl (s), idle ttl (ms).
_HOLD = """
local t = now()
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %.17g', tonumber(ARGV[2]), t + ttl))
local keep = math.floor(ttl * 1000) + tonumber(ARGV[4])
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 1
"""

_RELEASE = """
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# KEYS[1] the surcharges hash. ARGV: kind, excess, idle ttl (ms).
_LEARN_SURCHARGE = """
local known = tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0
local excess = tonumber(ARGV[2])
local learned = excess
if excess <= known then learned = math.floor((9 * known + excess) / 10) end
redis.call('HSET', KEYS[1], ARGV[1], learned)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return learned
"""

_SURCHARGES = """
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] the leases hash, KEYS[2] the learned ceiling. ARGV: the refused lease's id, ttl (ms).
_LEARN_CEILING = """
local t = now()
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local held, expires = string.match(all[i + 1], '^(%S+) (%S+)$')
  if tonumber(expires) <= t then
    redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] then
    others = others + tonumber(held)
  end
end
if others <= 0 then return false end
local ceiling = tonumber(redis.call('GET', KEYS[2])) or (others + 1)
local learned = math.max(1, math.min(others, ceiling - 1))
redis.call('SET', KEYS[2], learned, 'PX', ARGV[2])
return learned
"""

# KEYS[1] the slots sorted set. ARGV: event id, limit, window (s).
_TAKE_SLOT = """
local t = now()
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], t, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return string.format('%.17g', tonumber(oldest[2]) + window - t)
"""

# KEYS[1] the budget hash. ARGV: holder, amount, limit, ttl (s), force ('1'), keep (ms).
# Returns granted ('1' or '0'), spent, what the live holders hold (before this amount).
_BUDGET_RESERVE = """
local t = now()
local amount, limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
local held, mine = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local holder = string.match(all[i], '^h:(.+)$')
  if holder then
    local reserved, expires = string.match(all[i + 1], '^(%S+) (%S+)$')
    if tonumber(expires) <= t then
      redis.call('HDEL', KEYS[1], all[i])
    else
      held = held + tonumber(reserved)
      if holder == ARGV[1] then mine = tonumber(reserved) end
    end
  end
end
local view = {string.format('%.17g', spent), string.format('%.17g', held)}
if ARGV[5] ~= '1' and spent + held + amount > limit then return {'0', view[1], view[2]} end
redis.call('HSET', KEYS[1], 'h:' .. ARGV[1], string.format('%.17g %.17g', mine + amount, t + ttl))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {'1', view[1], view[2]}
"""

# KEYS[1] the budget hash. ARGV: holder, release, spend, ttl (s; 0 ends the holder), keep (ms).
_BUDGET_SETTLE = """
local t = now()
local release, spend, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local field = 'h:' .. ARGV[1]
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent')) or 0
redis.call('HSET', KEYS[1], 'spent', string.format('%.17g', spent + spend))
local current = redis.call('HGET', KEYS[1], field)
redis.call('HDEL', KEYS[1], field)
if current and ttl > 0 then
  local reserved, expires = string.match(current, '^(%S+) (%S+)$')
  if tonumber(expires) > t then
    local left = math.max(0, tonumber(reserved) - release)
    redis.call('HSET', KEYS[1], field, string.format('%.17g %.17g', left, t + ttl))
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

SCRIPTS = {
    "take": _TAKE,
    "adjust": _ADJUST,
    "shape": _SHAPE,
    "limits": _LIMITS,
    "pause": _PAUSE,
    "lease": _LEASE,
    "hold": _HOLD,
    "release": _RELEASE,
    "learn_surcharge": _LEARN_SURCHARGE,
    "surcharges": _SURCHARGES,
    "learn_ceiling": _LEARN_CEILING,
    "take_slot": _TAKE_SLOT,
    "budget_reserve": _BUDGET_RESERVE,
    "budget_settle": _BUDGET_SETTLE,
}


def redact(url: str) -> str:
    """The URL without user name or password (what errors and logs may show)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


SCHEMES = ("redis", "rediss", "unix")
_KEPT = repr(KEPT_SECS)
_KEEP_MS = str(int(BUDGET_KEEP_SECS * 1000))


class _Connection:
    """The Redis client of one store, owned by an event loop on a daemon thread of its own.

    An asyncio client belongs to the loop it connects on, while a store serves every loop
    of the process (each `asyncio.run`, `process_batch_sync`, a Ray actor's loop): the
    callers' coroutines hand each call to this loop and await its answer, so the process
    keeps one connection pool per store and never leaves one behind on a closed loop."""

    def __init__(self, url: str, connect_timeout: float, op_timeout: float) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="genai-coroutines-redis", daemon=True
        )
        self.thread.start()
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=connect_timeout,
            socket_timeout=op_timeout,
            retry=Retry(NoBackoff(), 1),  # one reconnect for a dropped idle connection
        )
        self.scripts = {name: self.redis.register_script(_PRELUDE + body)
                        for name, body in SCRIPTS.items()}  # fmt: skip
        atexit.register(self.close)

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on this connection's loop; await its result from any loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    def close(self) -> None:
        if self.loop.is_closed() or os.getpid() != self.pid:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.redis.aclose(), self.loop).result(2)
        except Exception:  # closing on the way out: nothing left to tell
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(2)
        if not self.thread.is_alive():
            self.loop.close()
        atexit.unregister(self.close)


class RedisStore:
    """`LimitStore` in Redis at `url` (`redis://`, `rediss://` or `unix://`), shared by
    every process using that URL. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        idle_ttl: float = 3600.0,
        connect_timeout: float = 2.0,
        op_timeout: float = 5.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(
                f"limits store {redact(url)!r}: expected a redis://, rediss:// or unix:// URL"
            )
        aioredis.ConnectionPool.from_url(url)  # a malformed URL fails now, naming nothing secret
        self.url = url
        self.name = redact(url)
        self.idle_ttl = idle_ttl
        self._idle_ms = str(int(idle_ttl * 1000))
        self._timeouts = (connect_timeout, op_timeout)
        self._connection: _Connection | None = None
        self._connecting = threading.Lock()
        self._shapes: dict[tuple[str, str], tuple[float, float]] = {}
        """(key, dimension) -> (per minute, capacity) this process set or read."""
        self._held: dict[str, tuple[str, int, float]] = {}
        """Leases granted by Redis and not yet released: id -> (key, units, ttl)."""
        self._fallback: MemoryStore | None = None
        """The in-process store used while Redis is lost."""
        self._local_leases: set[str] = set()
        """Leases the fallback granted (they hold Redis back until released)."""
        self._orphans: list[tuple[str, str]] = []
        """Redis leases released while Redis was lost: released there once it is back."""

    def __repr__(self) -> str:
        return f"RedisStore({self.name!r})"

    @property
    def degraded(self) -> bool:
        """True while Redis is lost and limits are counted in this process only."""
        return self._fallback is not None

    def _connect(self) -> _Connection:
        connection = self._connection
        if connection is None or connection.pid != os.getpid():  # none yet, or forked
            with self._connecting:
                connection = self._connection
                if connection is None or connection.pid != os.getpid():
                    connection = self._connection = _Connection(self.url, *self._timeouts)
        return connection

    async def ready(self) -> None:
        """Check that Redis answers (at the start of a batch); raise `LimitStoreUnavailable`
        naming the URL if it does not. Redis found again ends a degraded period."""
        try:
            connection = self._connect()

            async def ping() -> None:
                await connection.redis.ping()

            await connection.call(ping())
        except LOST as exc:
            raise LimitStoreUnavailable(
                f"limits store {self.name} is unreachable: {exc or type(exc).__name__}"
            ) from None
        if self._fallback is not None and not self._local_leases:
            try:
                for key, lease in self._orphans:
                    await self._run("release", [f"{key}:leases"], [lease])
            except LOST:
                return  # lost again: stay in-process
            self._orphans.clear()
            self._fallback = None
            log_event(logger, logging.INFO, "limits_store_back", store=self.name)

    def close(self) -> None:
        """Close the connections (a later operation opens them again)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        connection = self._connect()
        return await connection.call(connection.scripts[name](keys=list(keys), args=list(args)))

    async def _shared(
        self, call: Callable[[], Awaitable[T]], local: Callable[[MemoryStore], Awaitable[T]]
    ) -> T:
        """`call` on Redis, or `local` on the fallback once Redis is lost."""
        if self._fallback is None:
            try:
                return await call()
            except LOST as exc:
                await self._degrade(exc)
        assert self._fallback is not None
        return await local(self._fallback)

    async def _degrade(self, exc: BaseException) -> None:
        if self._fallback is not None:
            return
        fallback = self._fallback = MemoryStore()
        log_event(
            logger,
            logging.WARNING,
            "limits_store_lost",
            store=self.name,
            error=repr(str(exc) or type(exc).__name__),
            now="limits counted in this process only until a batch starts with the store back",
        )
        for (key, dimension), (per_minute, capacity) in list(self._shapes.items()):
            await fallback.shape(key, dimension, per_minute, capacity)
        for key in {key for key, _ in self._shapes}:
            # Start empty, at the steady rate: the burst a new bucket banks was most
            # likely spent on Redis already, by this process or others.
            await fallback.pause(key, 0.0)
        for lease_id, (key, units, ttl) in list(self._held.items()):
            await fallback.hold(key, lease_id, units, ttl)

    def _known(self, key: str, dimension: str) -> tuple[str, str]:
        shape = self._shapes.get((key, dimension))
        return ("", "") if shape is None else (repr(shape[0]), repr(shape[1]))

    # -- LimitStore ------------------------------------------------------------------

    async def take(self, key: str, amounts: Sequence[tuple[str, float]]) -> Taken:
        args: list[Any] = [self._idle_ms, _KEPT]
        for dimension, amount in amounts:
            args += [dimension, repr(float(amount)), *self._known(key, dimension)]

        async def call() -> Taken:
            reply = str(await self._run("take", [f"{key}:limits", f"{key}:sent"], args))
            if reply == "0":
                return Taken(0.0, ANY)
            if " " not in reply:
                return Taken(float(reply), None)
            parts = reply.split()
            through = {parts[i]: float(parts[i + 1]) for i in range(2, len(parts), 2)}
            return Taken(0.0, Ticket(int(parts[1]), through))

        return await self._shared(call, lambda store: store.take(key, amounts))

    async def adjust(
        self,
        key: str,
        give: Sequence[tuple[str, float]],
        lower: Sequence[tuple[str, float]] = (),
        since: Ticket = ANY,
        window: float = IN_TRANSIT_SECS,
    ) -> None:
        ticket = " ".join(
            [str(since.number), *(f"{dim} {value!r}" for dim, value in since.through.items())]
        )
        args: list[Any] = [self._idle_ms, repr(min(window, KEPT_SECS)), ticket, len(give)]
        for dimension, amount in (*give, *lower):
            args += [dimension, repr(float(amount))]

        async def call() -> None:
            await self._run("adjust", [f"{key}:limits", f"{key}:sent"], args)

        await self._shared(call, lambda store: store.adjust(key, give, lower, since, window))

    async def shape(self, key: str, dimension: str, per_minute: float, capacity: float) -> None:
        self._shapes[(key, dimension)] = (float(per_minute), float(capacity))

        async def call() -> None:
            args = [self._idle_ms, dimension, repr(float(per_minute)), repr(float(capacity))]
            await self._run("shape", [f"{key}:limits"], args)

        await self._shared(call, lambda store: store.shape(key, dimension, per_minute, capacity))

    async def limits(self, key: str) -> dict[str, float]:
        async def call() -> dict[str, float]:
            flat = await self._run("limits", [f"{key}:limits"], [])
            found: dict[str, float] = {}
            for i in range(0, len(flat), 3):
                dimension, per_minute, capacity = flat[i], float(flat[i + 1]), float(flat[i + 2])
                self._shapes[(key, dimension)] = (per_minute, capacity)
                found[dimension] = per_minute
            return found

        return await self._shared(call, lambda store: store.limits(key))

    async def pause(self, key: str, seconds: float) -> None:
        async def call() -> None:
            await self._run("pause", [f"{key}:limits"], [self._idle_ms, repr(float(seconds))])

        await self._shared(call, lambda store: store.pause(key, seconds))

    async def lease(self, key: str, units: int, total: int, ttl: float) -> str | None:
        async def call() -> str | None:
            lease_id = uuid.uuid4().hex
            args = [lease_id, int(units), int(total), repr(float(ttl)), self._idle_ms]
            granted = await self._run("lease", [f"{key}:leases", f"{key}:ceiling"], args)
            if granted is None:
                return None
            self._held[lease_id] = (key, int(units), float(ttl))
            return lease_id

        async def local(store: MemoryStore) -> str | None:
            granted = await store.lease(key, units, total, ttl)
            if granted is not None:
                self._local_leases.add(granted)
            return granted

        return await self._shared(call, local)

    async def learn_ceiling(self, key: str, lease: str, ttl: float) -> int | None:
        async def call() -> int | None:
            args = [lease, max(1, int(ttl * 1000))]
            learned = await self._run("learn_ceiling", [f"{key}:leases", f"{key}:ceiling"], args)
            return None if learned is None else int(learned)

        return await self._shared(call, lambda store: store.learn_ceiling(key, lease, ttl))

    async def hold(self, key: str, lease: str, units: int, ttl: float) -> None:
        async def call() -> None:
            args = [lease, int(units), repr(float(ttl)), self._idle_ms]
            await self._run("hold", [f"{key}:leases"], args)
            self._held[lease] = (key, int(units), float(ttl))

        async def local(store: MemoryStore) -> None:
            await store.hold(key, lease, units, ttl)
            if lease not in self._held:
                self._local_leases.add(lease)

        await self._shared(call, local)

    async def surcharges(self, key: str) -> dict[str, int]:
        async def call() -> dict[str, int]:
            flat = await self._run("surcharges", [f"{key}:surcharges"], [])
            return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

        return await self._shared(call, lambda store: store.surcharges(key))

    async def learn_surcharge(self, key: str, kind: str, excess: int) -> int:
        async def call() -> int:
            args = [kind, int(excess), self._idle_ms]
            return int(await self._run("learn_surcharge", [f"{key}:surcharges"], args))

        return await self._shared(call, lambda store: store.learn_surcharge(key, kind, excess))

    async def release(self, key: str, lease: str) -> None:
        if lease in self._local_leases:  # granted in-process while Redis was lost
            self._local_leases.discard(lease)
            if self._fallback is not None:
                await self._fallback.release(key, lease)
            return
        self._held.pop(lease, None)
        if self._fallback is not None:
            await self._fallback.release(key, lease)
            self._orphans.append((key, lease))  # released in Redis once it is back
            return
        try:
            await self._run("release", [f"{key}:leases"], [lease])
        except LOST as exc:
            await self._degrade(exc)
            self._orphans.append((key, lease))

    async def take_slot(self, key: str, limit: int, window: float) -> float:
        async def call() -> float:
            args = [uuid.uuid4().hex, int(limit), repr(float(window))]
            return float(await self._run("take_slot", [f"{key}:slots"], args))

        return await self._shared(call, lambda store: store.take_slot(key, limit, window))

    async def budget_reserve(
        self, key: str, holder: str, amount: float, limit: float, ttl: float, force: bool
    ) -> BudgetView:
        """Redis's `budget_reserve`. While Redis is lost, none: a budget shared by several
        processes cannot be counted in one of them (raises `LimitStoreUnavailable`)."""
        if self._fallback is None:
            args = [holder, repr(float(amount)), repr(float(limit)), repr(float(ttl))]
            try:
                granted, spent, held = await self._run(
                    "budget_reserve", [f"{key}:budget"], [*args, "1" if force else "0", _KEEP_MS]
                )
            except LOST as exc:
                await self._degrade(exc)
            else:
                return BudgetView(granted == "1", float(spent), float(held))
        raise LimitStoreUnavailable(f"limits store {self.name} is unreachable")

    async def budget_settle(
        self, key: str, holder: str, release: float, spend: float, ttl: float
    ) -> None:
        """Redis's `budget_settle`; nothing while Redis is lost (the holder's reservations
        expire there after their ttl)."""
        if self._fallback is not None:
            return
        args = [holder, repr(float(release)), repr(float(spend)), repr(float(ttl)), _KEEP_MS]
        try:
            await self._run("budget_settle", [f"{key}:budget"], args)
        except LOST as exc:
            await self._degrade(exc)
