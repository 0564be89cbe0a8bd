"""What every benchmark needs: the emulator in a child process, its counters, peak RSS.

The emulator (and any other server a benchmark needs, `server_process`) runs in its own
process so the client's CPU time and memory are the client's alone; it binds to
127.0.0.1 and is terminated when the `with` block ends.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pin_to_cpu(cpu: int) -> None:
    """Keep this process on one CPU (when the machine has more than one), so a client and
    the emulator measured against it do not take turns on the same core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def _serve(settings: dict[str, Any], cpu: int | None, url_out: Connection) -> None:
    import asyncio

    if cpu is not None:
        pin_to_cpu(cpu)

    from genai_coroutines.emulator import Emulator, EmulatorConfig

    async def main() -> None:
        async with Emulator(EmulatorConfig(**settings)) as emu:
            url_out.send(emu.base_url)
            await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def server_process(serve: Callable[..., None], *args: Any, name: str) -> Iterator[str]:
    """Run `serve(*args, url_out)` in a spawned child process; yield the base URL it sends
    on `url_out` once it listens, and terminate it when the block ends."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(*args, sender), daemon=True
    )
    process.start()
    try:
        if not receiver.poll(30):
            raise RuntimeError(f"{name} did not start within 30 s")
        yield str(receiver.recv())
    finally:
        process.terminate()
        process.join(5)


@contextmanager
def emulator_process(*, cpu: int | None = None, **settings: Any) -> Iterator[str]:
    """Run an emulator with these `EmulatorConfig` settings (on CPU `cpu` alone, if given);
    yield its base URL."""
    with server_process(_serve, settings, cpu, name="the emulator") as url:
        yield url


async def emulator_stats(base_url: str, *, reset: bool = False) -> dict[str, Any]:
    """The emulator's counters (and optionally reset them for the next run)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/_emulator/stats") as response:
            stats: dict[str, Any] = await response.json()
        if reset:
            async with session.post(f"{base_url}/_emulator/reset"):
                pass
    return stats


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
