"""`prompt_cache_key="auto"`: the keys planned so that a shared prefix is served from cache.

OpenAI routes a request to a cache machine by a hash of its prompt's first ~256 tokens and
its `prompt_cache_key`; one machine serves about 15 requests a minute for one prefix and
key, and the rest spill to machines without the cache. So one key for a hot prefix spills
most requests, and a key per request never hits (a key's first request only fills its
cache). The plan: the requests sharing a prefix use the fewest keys that keep each within
`per_minute` requests in any rolling minute, `gc-<prefix hash>-0` first, the next key opening
only when every earlier one is full.

A key is chosen when a request is sent (each attempt counts), not when its body is built:
the key is not part of the body the journal's digest is taken of, so a rerun matches its
journal whatever the timing, and the key names are the same for the same prefix across runs
(the lowest numbers first), so a rerun within the cache's lifetime hits what the first
warmed. The counts are this process's (a `CacheKeys` per processor); processes sharing a
prefix each plan their own, which only spreads them over more machines.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

AUTO = "auto"
PER_KEY_MINUTE = 15
"""Requests one cache machine serves per minute for a prefix and key (OpenAI's guide)."""
ROUTING_CHARS = 1024
"""The prompt's head that names its prefix: about the 256 tokens OpenAI routes by."""
WINDOW_SECONDS = 60.0


def prefix_group(model: str, instructions: str, prompt: str | list[dict[str, Any]]) -> str:
    """8 hex digits naming the prefix a request shares: its model and its prompt's head
    (`instructions`, then the input), as the cache routes it."""
    head = instructions[:ROUTING_CHARS]
    if len(head) < ROUTING_CHARS:
        text = prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
        head += text[: ROUTING_CHARS - len(head)]
    return hashlib.blake2b(f"{model}\0{head}".encode(), digest_size=4).hexdigest()


def with_key(body: bytes, key: str) -> bytes:
    """`body` (a JSON object) with `prompt_cache_key` set to `key` (of [a-z0-9-] only)."""
    return body[:-1] + b',"prompt_cache_key":"' + key.encode() + b'"}'


class CacheKeys:
    """The keys of one processor's requests (see the module docstring): for each prefix
    and key number, when its requests of the last minute were sent."""

    def __init__(
        self,
        per_minute: int = PER_KEY_MINUTE,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._sent: dict[str, list[deque[float]]] = {}

    def key(self, group: str) -> str:
        """The key of a request of prefix `group` sent now: the first with room."""
        now = self.clock()
        keys = self._sent.setdefault(group, [])
        for number, sent in enumerate(keys):
            while sent and sent[0] <= now - WINDOW_SECONDS:
                sent.popleft()
            if len(sent) < self.per_minute:
                sent.append(now)
                return f"gc-{group}-{number}"
        keys.append(deque([now]))  # every key of the prefix is full: open the next
        return f"gc-{group}-{len(keys) - 1}"
