"""Prompt caching, as OpenAI's guide describes it, on when `EmulatorConfig.prompt_caching` is.

A request's prompt is the text its tokens are estimated from (`openai_output.prompt_text`:
`instructions` then `input`, 4 characters a token), cut into blocks of `CACHE_INCREMENT`
(128) tokens. The rules, chosen to be plausible and exactly predictable:

- Only a prompt of at least `MIN_CACHED_TOKENS` (1024) tokens is cached or looked up.
- A request is routed to one cache "machine" by its model, a hash of its first
  `ROUTING_TOKENS` (256) tokens and its `prompt_cache_key` (absent is a key of its own).
- A machine serves `prompt_cache_rpm_per_key` requests in any rolling minute. It answers a
  request with `cached_tokens`: the longest prefix, in whole blocks, that a live prompt it
  served before shares with this one (0 below 1024), then keeps this prompt's blocks.
- A request beyond that share spills to a machine without the cache: no cached tokens, and
  nothing kept (the guide: overflow "reduces cache effectiveness").
- A kept block lives `prompt_cache_ttl` seconds after its last use (written or hit), or
  `prompt_cache_extended_ttl` when the request said `prompt_cache_retention: "24h"`.

Blocks are remembered by a chained hash of the text up to their end, as an inference
server's prefix cache keys its blocks, so memory is a few bytes per live block, not the
prompts. Each lookup counts in `Stats.prompt_cache_lookups` as "hit", "miss" or "spill".
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .openai_output import CHARS_PER_TOKEN, prompt_text

if TYPE_CHECKING:
    from .shared import Shared

MIN_CACHED_TOKENS = 1024
"""The shortest prompt the cache serves (OpenAI: "prompts of 1024 tokens or longer")."""
CACHE_INCREMENT = 128
"""Cached tokens come in steps of this many (OpenAI: "in increments of 128 tokens")."""
ROUTING_TOKENS = 256
"""The prefix whose hash picks the machine (OpenAI: "typically the first 256 tokens")."""
WINDOW_SECONDS = 60.0
EXTENDED_RETENTION = "24h"
SWEEP_EVERY = 4096
"""Kept prompts between sweeps that forget expired blocks and idle machines."""


@dataclass
class Machine:
    """One cache machine: its kept blocks (chained hash -> expiry) and its recent requests."""

    blocks: dict[bytes, float] = field(default_factory=dict)
    served: deque[float] = field(default_factory=deque)
    """`time.monotonic()` of each request it served in the last `WINDOW_SECONDS`."""


def block_hashes(text: str) -> list[bytes]:
    """The chained hash of each whole block of `text`: equal hashes mean equal text up to
    that block's end."""
    size = CACHE_INCREMENT * CHARS_PER_TOKEN
    chain = hashlib.blake2b(digest_size=16)
    hashes = []
    for start in range(0, len(text) - size + 1, size):
        chain.update(text[start : start + size].encode())
        hashes.append(chain.copy().digest())
    return hashes


class PromptCache:
    """The prompt cache machines of one emulator."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._machines: dict[tuple[Any, ...], Machine] = {}
        self._kept_since_sweep = 0

    def clear(self) -> None:
        self._machines.clear()
        self._kept_since_sweep = 0

    def cached_tokens(self, body: dict[str, Any]) -> int:
        """Serve a checked request body: its cached tokens (0 when caching is off)."""
        config = self.shared.config
        if not config.prompt_caching:
            return 0
        text = prompt_text(body)
        if len(text) < MIN_CACHED_TOKENS * CHARS_PER_TOKEN:
            return 0
        now = time.monotonic()
        route = (
            body["model"],
            hashlib.blake2b(text[: ROUTING_TOKENS * CHARS_PER_TOKEN].encode()).digest(),
            body.get("prompt_cache_key"),
        )
        machine = self._machines.setdefault(route, Machine())
        while machine.served and machine.served[0] <= now - WINDOW_SECONDS:
            machine.served.popleft()
        lookups = self.shared.stats.prompt_cache_lookups
        if len(machine.served) >= config.prompt_cache_rpm_per_key:
            lookups["spill"] += 1
            return 0
        machine.served.append(now)
        hashes = block_hashes(text)
        hit = 0
        for block in hashes:
            if machine.blocks.get(block, 0.0) <= now:
                break
            hit += 1
        extended = body.get("prompt_cache_retention") == EXTENDED_RETENTION
        expiry = now + (config.prompt_cache_extended_ttl if extended else config.prompt_cache_ttl)
        for block in hashes:
            machine.blocks[block] = max(expiry, machine.blocks.get(block, 0.0))
        self._sweep(now)
        cached = hit * CACHE_INCREMENT
        if cached < MIN_CACHED_TOKENS:
            lookups["miss"] += 1
            return 0
        lookups["hit"] += 1
        return cached

    def _sweep(self, now: float) -> None:
        """Every `SWEEP_EVERY` kept prompts, forget expired blocks and idle, empty machines,
        so a long run holds only what is live."""
        self._kept_since_sweep += 1
        if self._kept_since_sweep < SWEEP_EVERY:
            return
        self._kept_since_sweep = 0
        for route, machine in list(self._machines.items()):
            machine.blocks = {block: ends for block, ends in machine.blocks.items() if ends > now}
            idle = not machine.served or machine.served[-1] <= now - WINDOW_SECONDS
            if idle and not machine.blocks:
                del self._machines[route]
