"""Blocking entry points that work in a plain script and inside a running loop (Jupyter).

`asyncio.run` refuses to start inside a running event loop, and patching the loop
(`nest_asyncio`) is known to hang notebook cells. When a loop is already running in
this thread, the coroutine gets a fresh loop on a worker thread instead, and the
caller blocks on it; otherwise it runs on a fresh loop in this thread.

Where this library starts the loop itself (here and in the command line), it is
uvloop's when uvloop is installed (`pip install 'genai-coroutines[fast]'`): about a
third less CPU per request. It is passed as a loop factory, never installed as the
event loop policy, so the caller's own `asyncio.run` is left as it was.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvloop
except ImportError:  # an optional dependency (the `fast` extra)
    uvloop = None  # type: ignore[assignment]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on uvloop's loop when uvloop is installed, else on asyncio's."""
    if uvloop is None:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to completion and return its result, whatever loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="genai-coroutines") as pool:
        return pool.submit(run, coroutine).result()
