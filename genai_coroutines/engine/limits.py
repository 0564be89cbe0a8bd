"""The limits of each API key, shared by every batch that spends it.

A provider counts requests, tokens and pages per key (OpenAI: per organisation and
model), so two batches on one key, in one process or several, must draw on one
budget or together they overrun it. `KeyLimits` hands out one `RateLimiter` and one
`Capacity` per (endpoint, key digest, model), created on first use and kept for the
life of the process: what a batch learned from headers, a pause a 429 imposed, the
pages another batch holds in flight all hold for the next batch too.

Which store holds the state is the only choice: the process's memory by default
(`LOCAL`), or a store shared by several processes (see `store.LimitStore`).
`limits_for(url)` gives the one `KeyLimits` of a store URL in this process (a
`redis://` URL: `redis_store.RedisStore`; none: `$GENAI_COROUTINES_LIMITS_STORE`, else
`LOCAL`), so every processor naming the same store shares its limiters too.
"""

from __future__ import annotations

import hashlib
import os
import threading

from .limiter import Capacity, RateLimiter
from .store import LimitStore, MemoryStore


def key_digest(api_key: str) -> str:
    """A short, stable digest naming a key in stores and logs (never the key itself)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def limit_key(endpoint: str, api_key: str, model: str = "") -> str:
    """The store key of one key's limits. The braces are a Redis Cluster hash tag, so
    every entry of one key's state lives on one shard."""
    return f"genai-coroutines:{{{endpoint}:{key_digest(api_key)}:{model}}}"


def budget_key(name: str, unit: str) -> str:
    """The store key of a named budget (`max_cost_usd` with `budget_name`) in `unit`
    ("usd", "cents": one name in two units is two budgets): a digest of the name, so what
    a caller puts in it (a customer, a path) is never written to the store."""
    return f"genai-coroutines:{{budget:{unit}:{key_digest(name)}}}"


class KeyLimits:
    """The rate limiters and capacities of every key used with one store."""

    def __init__(self, store: LimitStore) -> None:
        self.store = store
        self._rates: dict[str, RateLimiter] = {}
        self._capacities: dict[str, Capacity] = {}

    async def ready(self) -> None:
        """Check the store can be used (called before a batch sends anything); a shared
        store that cannot be reached raises `LimitStoreUnavailable`."""
        check = getattr(self.store, "ready", None)
        if check is not None:
            await check()

    def rate(
        self,
        endpoint: str,
        api_key: str,
        model: str = "",
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        burst_seconds: float = 1.0,
        learn: bool = False,
    ) -> RateLimiter:
        """The key's limiter. Limits a batch gives are ceilings on what the server reports,
        and the latest batch's given limits are the ones in force."""
        key = limit_key(endpoint, api_key, model)
        limiter = self._rates.get(key)
        if limiter is None:
            limiter = self._rates[key] = RateLimiter(
                self.store,
                key,
                requests_per_minute,
                tokens_per_minute,
                burst_seconds=burst_seconds,
                learn=learn,
            )
        else:
            limiter.given(requests_per_minute, tokens_per_minute)
        return limiter

    def capacity(
        self, endpoint: str, api_key: str, total: int, model: str = "", **lease: float
    ) -> Capacity:
        """The key's capacity, of `total` units from now on (the latest batch's figure);
        `lease`: `Capacity`'s `lease_secs`, `recheck_secs` when it is created."""
        key = limit_key(endpoint, api_key, model)
        capacity = self._capacities.get(key)
        if capacity is None:
            capacity = self._capacities[key] = Capacity(self.store, key, total, **lease)
        capacity.total = total
        return capacity

    async def take_slot(self, endpoint: str, api_key: str, limit: int, window: float) -> float:
        """One of the key's `limit` events per `window` seconds at `endpoint` (the Batch API's
        batches created per hour): 0 when counted, else the seconds to wait (nothing was)."""
        return await self.store.take_slot(limit_key(endpoint, api_key), limit, window)


LOCAL = KeyLimits(MemoryStore())
"""The limits of this process, used unless a batch is given a shared store."""

ENV_STORE = "GENAI_COROUTINES_LIMITS_STORE"
"""The environment variable naming the limits store when a processor is given none."""

LOCAL_NAMES = ("", "local", "memory")
"""Store names meaning this process's memory (`LOCAL`), e.g. to override `ENV_STORE`."""


_SHARED: dict[str, KeyLimits] = {}
_SHARED_LOCK = threading.Lock()


def chosen_limits(limits: KeyLimits | None, limits_store: str | None) -> KeyLimits:
    """What a processor's `limits=` / `limits_store=` arguments choose (not both)."""
    if limits is not None and limits_store is not None:
        raise ValueError("give limits or limits_store, not both")
    return limits if limits is not None else limits_for(limits_store)


def limits_for(store: str | None = None) -> KeyLimits:
    """The `KeyLimits` of a store URL, one per URL in this process: `redis://host:port/db`
    (or `rediss://`, `unix://`) is shared by every process and machine using that Redis;
    None reads `$GENAI_COROUTINES_LIMITS_STORE`; "local" (or that variable unset) is
    `LOCAL`. Nothing is sent here: a malformed URL raises ValueError, an unreachable one
    `LimitStoreUnavailable` when a batch starts."""
    if store is None:
        store = os.environ.get(ENV_STORE, "")
    if not isinstance(store, str):
        raise TypeError(f"limits_store must be a URL string, not {type(store).__name__}")
    if store.strip().lower() in LOCAL_NAMES:
        return LOCAL
    with _SHARED_LOCK:
        limits = _SHARED.get(store)
        if limits is None:
            try:
                from .redis_store import RedisStore
            except ImportError as exc:
                raise ImportError(
                    "a shared limits store needs the redis client: "
                    "pip install 'genai-coroutines[redis]'"
                ) from exc
            limits = _SHARED[store] = KeyLimits(RedisStore(store))
    return limits
