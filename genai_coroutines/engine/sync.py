"""Blocking entry points that work in a plain script and inside a running loop (Jupyter).

`asyncio.run` refuses to start inside a running event loop, and patching the loop
(`nest_asyncio`) is known to hang notebook cells. When a loop is already running in
this thread, the coroutine gets a fresh loop on a worker thread instead, and the
caller blocks on it; otherwise `asyncio.run` is used directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to completion and return its result, whatever loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="genai-coroutines") as pool:
        return pool.submit(asyncio.run, coroutine).result()
