"""Client overhead of a Responses batch: this library vs `AsyncOpenAI` vs bare aiohttp,
on asyncio's default event loop and on uvloop.

What is measured is the client: requests per second, the client process's CPU time
per request (`time.process_time()`, which the server's work cannot leak into) and its
peak RSS. The server answers at zero latency in its own process: by default a replay
server (`replay_server.py`) that sends every request the reply the emulator gave to
the first prompt, headers and body byte for byte, because a server slower than the
client makes the client wake for one reply at a time and its CPU per request then
measures the server's pace; `--server emulator` has the emulator answer every request.
Each client runs in a process of its own so peak RSS is its own. After a short warm-up
batch each (imports, caches), the clients take turns: one timed batch of N each per
round, `--rounds` rounds, medians reported, so a slow spell of the machine falls on
every client alike. With two CPUs or more the emulator keeps one and the clients
another, so a client never waits for the server's turn on its own core.

    python benchmarks/responses_overhead.py              # N=5000, concurrency 100
    python benchmarks/responses_overhead.py --n 500      # a quick run
    python benchmarks/responses_overhead.py --instructions   # needs valgrind

`--instructions` counts instead of timing: each aiohttp client runs under valgrind's
callgrind twice, with 500 and with N requests, and the difference of the instructions
its process executed, over the difference of requests, is its instructions per request
(start-up and warm-up cancel out). On the default loop the count repeats to within 0.5%
from run to run where a busy machine's CPU times move by 30%, so it is the steadier
figure for the ratios; on uvloop it moves by up to 10% (how many replies one turn of
its loop reads varies). It counts user-space work only (no system calls), and needs
`valgrind` on the PATH. Under callgrind the client runs some 50 times slower, so work
that grows with how many requests fall in a span of time is undercounted: the limiter's
50 ms in-transit window holds a few requests there, some 180 natively. The timed run is
the one that sees such costs.

Targets: this library within 1.1x of bare aiohttp's CPU per request on the same loop,
and on uvloop at or below bare aiohttp's on the default loop.

`--otel` compares this library with itself instead, in one session: in a process where
`opentelemetry` cannot be imported (as without the `[otel]` extra), with the API alone
(no SDK: the default), with the SDK's `MeterProvider` alone (as the CLI's `--metrics-port`
sets it), and with both SDK providers set as an exporting application sets them
(`with_sdk`: a `BatchSpanProcessor` and a `PeriodicExportingMetricReader`, their
exporters dropping the data). Each SDK batch ends with both providers flushed, so it pays
for exporting what it made. With `--instructions` the four are counted under callgrind
(the SDK's processor and reader threads included). Targets: the API alone within 1.02x of
no OpenTelemetry, the SDK within 1.10x.

    python benchmarks/responses_overhead.py --otel --n 2000 --rounds 7
    python benchmarks/responses_overhead.py --otel --instructions --n 2000

Measured on a shared 2-core machine, N=2000. Instructions per request: 623k without
OpenTelemetry, 621k with the API alone (1.00x), 910k with the SDK's metrics alone
(1.46x), 1,272k with metrics and traces (2.04x). Timed (7 rounds, three runs):
1.02-1.06x with the API alone (noise: its path is one `is None` test), 1.20-1.24x with
metrics alone, 1.77-1.87x with both. Most of what the SDK adds is its own work for what
each request must report, two spans (item, attempt) and three histogram points (input
tokens, output tokens, duration); this benchmark does not measure those calls apart.
When a sampler leaves a batch's trace out, no item or attempt span is made, and the
metrics' share alone remains.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import orjson
from common import emulator_process, peak_rss_mb, pin_to_cpu
from replay_server import record, replay_server

API_KEY = "sk-emulator"
MODEL = "gpt-4o-mini"
SYSTEM = "You are a terse assistant."
WARMUP = 200
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def prompts(n: int) -> list[str]:
    return [f"Summarise item number {i} in one line." for i in range(n)]


async def run_ours(base_url: str, items: list[str], concurrency: int) -> int:
    from genai_coroutines import ResponsesProcessor, ResponsesRequest

    request = ResponsesRequest(
        api_key=API_KEY,
        base_url=base_url,
        model=MODEL,
        system_prompt=SYSTEM,
        user_prompts=items,
        response_format={"type": "text"},
        max_concurrent_requests=concurrency,
    )
    results = await ResponsesProcessor().process_batch(request)
    return int(results["total_success"])


async def run_openai(base_url: str, items: list[str], concurrency: int) -> int:
    import openai

    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=base_url)
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> bool:
        async with gate:
            response = await client.responses.create(
                model=MODEL, instructions=SYSTEM, input=prompt, text={"format": {"type": "text"}}
            )
            return bool(response.output_text)

    try:
        done = await asyncio.gather(*(one(p) for p in items))
    finally:
        await client.close()
    return sum(done)


def bare_body(prompt: str) -> bytes:
    return orjson.dumps(
        {
            "model": MODEL,
            "instructions": SYSTEM,
            "text": {"format": {"type": "text"}},
            "input": prompt,
        }
    )


async def run_bare(base_url: str, items: list[str], concurrency: int) -> int:
    """The floor: one pooled session, pre-built headers, orjson both ways, no retries."""
    import aiohttp

    url = base_url + "/responses"
    source = iter(items)
    ok = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def worker() -> None:
            nonlocal ok
            for prompt in source:
                async with session.post(url, data=bare_body(prompt)) as response:
                    data = orjson.loads(await response.read())
                    ok += response.status == 200 and "usage" in data

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


CLIENTS: dict[str, tuple[Callable[[str, list[str], int], Awaitable[int]], str]] = {
    "genai-coroutines": (run_ours, "asyncio"),
    "genai-coroutines, uvloop": (run_ours, "uvloop"),
    "bare aiohttp (floor)": (run_bare, "asyncio"),
    "bare aiohttp, uvloop": (run_bare, "uvloop"),
    "openai.AsyncOpenAI + Semaphore": (run_openai, "asyncio"),
}


def without_opentelemetry() -> None:
    """This process cannot import `opentelemetry` (as without the `[otel]` extra)."""
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]


def with_sdk(traces: bool = True) -> None:
    """SDK providers set globally as an application exporting its telemetry would set them:
    a `TracerProvider` with a `BatchSpanProcessor` (spans leave the request path in
    batches, on the processor's thread) and a `MeterProvider` with a
    `PeriodicExportingMetricReader`, both handing their data to exporters that drop it (what
    a real exporter costs to serialise and send is the exporter's, not this library's).
    `traces=False`: the `MeterProvider` alone, as the CLI's `--metrics-port` sets it."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DroppedSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DroppedMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 0, **_: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **_: Any) -> None:
            pass

    reader = PeriodicExportingMetricReader(DroppedMetrics())
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if not traces:
        return
    tracers = TracerProvider()
    tracers.add_span_processor(BatchSpanProcessor(DroppedSpans()))
    trace.set_tracer_provider(tracers)


async def run_ours_exported(base_url: str, items: list[str], concurrency: int) -> int:
    """`run_ours`, then the SDK's spans and metrics exported (flushed, as the span
    processor and the reader would in their own time), so each batch pays for exporting
    what it produced, observable instruments' callbacks included, and leaves no queue to
    the next."""
    from opentelemetry import metrics, trace

    done = await run_ours(base_url, items, concurrency)
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        flush = getattr(provider, "force_flush", None)  # not the API's proxy, without an SDK
        if flush is not None:
            flush()
    return done


NO_OTEL, OTEL_API, OTEL_METRICS, OTEL_SDK = (
    "genai-coroutines, no opentelemetry",
    "genai-coroutines, OTel API, no SDK",
    "genai-coroutines, OTel SDK, metrics only",
    "genai-coroutines, OTel SDK installed",
)
OTEL_CLIENTS: dict[str, tuple[Callable[[str, list[str], int], Awaitable[int]], str]] = {
    NO_OTEL: (run_ours, "asyncio"),
    OTEL_API: (run_ours, "asyncio"),
    OTEL_METRICS: (run_ours_exported, "asyncio"),
    OTEL_SDK: (run_ours_exported, "asyncio"),
}
SETUPS: dict[str, Callable[[], None]] = {
    NO_OTEL: without_opentelemetry,
    OTEL_METRICS: functools.partial(with_sdk, traces=False),
    OTEL_SDK: with_sdk,
}
"""What a client's process does before its first batch."""


def client(
    name: str,
) -> tuple[Callable[[str, list[str], int], Awaitable[int]], Callable[[Awaitable[int]], int]]:
    """The client `name` and how it runs a batch: on asyncio's default loop or on uvloop."""
    SETUPS.get(name, lambda: None)()
    run, loop = {**CLIENTS, **OTEL_CLIENTS}[name]
    if loop == "uvloop":
        import uvloop

        return run, uvloop.run  # type: ignore[return-value]
    return run, asyncio.run  # type: ignore[return-value]


def run_once(name: str, base_url: str, n: int, concurrency: int) -> None:
    """`--one`: a warm-up batch and one batch of `n` of one client, for a counted run."""
    run, run_loop = client(name)
    run_loop(run(base_url, prompts(WARMUP), concurrency))
    if run_loop(run(base_url, prompts(n), concurrency)) != n:
        raise SystemExit(f"{name}: not every request succeeded")


def instructions(name: str, base_url: str, n: int, concurrency: int) -> float:
    """Instructions per request of one client: two runs under callgrind, 500 and `n`."""
    small = 500

    def counted(requests: int) -> int:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--one",
            name,
            "--url",
            base_url,
            "--n",
            str(requests),
            "--concurrency",
            str(concurrency),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"callgrind printed no count for {name}:\n{done.stderr[-2000:]}")
        return int(found.group(1))

    return (counted(n) - counted(small)) / (n - small)


def count_instructions(base_url: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """`--instructions`: every aiohttp client (with `--otel`: this library in its three
    OpenTelemetry setups) counted in turn."""
    print(f"N={args.n} concurrency={args.concurrency} (instructions per request, callgrind)")
    rows: dict[str, dict[str, Any]] = {}
    for name, (run, _) in (OTEL_CLIENTS if args.otel else CLIENTS).items():
        if run is run_openai:
            continue
        per_request = instructions(name, base_url, args.n, args.concurrency)
        rows[name] = {"cpu": per_request}
        print(f"{name:<40} {per_request:>12,.0f} instructions/request")
    return rows


def measure(name: str, base_url: str, n: int, concurrency: int, orders: Connection) -> None:
    """Child process: warm up, then run one batch of `n` per order; send its figures back."""
    pin_to_cpu(1)
    run, run_loop = client(name)
    run_loop(run(base_url, prompts(WARMUP), concurrency))
    orders.send("warm")
    while orders.recv() == "run":
        cpu, wall = time.process_time(), time.perf_counter()
        ok = run_loop(run(base_url, prompts(n), concurrency))
        orders.send(
            {"ok": ok, "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
        )
    orders.send(peak_rss_mb())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="requests per client (default 5000)")
    parser.add_argument("--concurrency", type=int, default=100, help="default 100")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per client")
    parser.add_argument(
        "--server",
        choices=["replay", "emulator"],
        default="replay",
        help="replay: one recorded emulator reply served as fast as a core can (default); "
        "emulator: the emulator answers every request",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under valgrind instead of timing",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="compare this library without opentelemetry, with the API alone, with an SDK",
    )
    parser.add_argument("--one", choices=[*CLIENTS, *OTEL_CLIENTS], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_once(args.one, args.url, args.n, args.concurrency)
        return
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on the PATH (Debian: apt install valgrind)")
    if args.instructions and args.n <= 500:
        raise SystemExit("--instructions needs --n above 500 (the runs it subtracts)")
    measured: Callable[[str, argparse.Namespace], dict[str, dict[str, Any]]] = (
        count_instructions
        if args.instructions
        else functools.partial(compare, multiprocessing.get_context("spawn"))
    )
    with emulator_process(cpu=0, openai_api_key=API_KEY) as emulator_url:
        if args.server == "emulator":
            rows = measured(f"{emulator_url}/v1", args)
        else:
            reply = asyncio.run(
                record(f"{emulator_url}/v1/responses", bare_body(prompts(1)[0]), HEADERS)
            )
    if args.server == "replay":
        with replay_server(reply, cpu=0) as replay_url:
            rows = measured(f"{replay_url}/v1", args)
    what = "Instructions" if args.instructions else "CPU"
    if args.otel:
        bare = rows[NO_OTEL]["cpu"]
        for label, name, target in [
            ("OTel API alone / no opentelemetry", OTEL_API, 1.02),
            ("OTel SDK, metrics only / no opentelemetry", OTEL_METRICS, 1.10),
            ("OTel SDK installed / no opentelemetry", OTEL_SDK, 1.10),
        ]:
            ratio = rows[name]["cpu"] / bare
            verdict = "meets" if ratio <= target else "MISSES"
            print(f"{what} ratio {label}: {ratio:.3f}x ({verdict} {target:g}x target)")
        return
    ours, floor = rows["genai-coroutines"]["cpu"], rows["bare aiohttp (floor)"]["cpu"]
    ours_uv, floor_uv = rows["genai-coroutines, uvloop"]["cpu"], rows["bare aiohttp, uvloop"]["cpu"]
    for label, ratio, target in [
        ("genai-coroutines / bare aiohttp, default loop", ours / floor, 1.1),
        ("genai-coroutines / bare aiohttp, uvloop", ours_uv / floor_uv, 1.1),
        ("genai-coroutines on uvloop / bare aiohttp on the default loop", ours_uv / floor, 1.0),
    ]:
        verdict = "meets" if ratio <= target else "MISSES"
        print(f"{what} ratio {label}: {ratio:.2f}x ({verdict} {target:g}x target)")


def compare(spawn: Any, base_url: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every client warmed up in a process of its own, then their timed batches taken in
    turns (one of each client per round), so a slow spell of the machine falls on all of
    them alike; each client's median figures."""
    print(
        f"N={args.n} concurrency={args.concurrency} rounds={args.rounds} (medians, clients "
        f"in turns) emulator={base_url} (separate process)"
    )
    clients = OTEL_CLIENTS if args.otel else CLIENTS
    children = {}
    for name in clients:
        ours, theirs = spawn.Pipe()
        child = spawn.Process(
            target=measure, args=(name, base_url, args.n, args.concurrency, theirs)
        )
        child.start()
        children[name] = (child, ours)
    for _, orders in children.values():
        orders.recv()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, (_, orders) in children.items():
            orders.send("run")
            rounds[name].append(orders.recv())
    print(f"{'client':40} {'req/s':>8} {'CPU us/req':>11} {'peak RSS MB':>12} {'ok':>6}")
    rows: dict[str, dict[str, Any]] = {}
    for name, (child, orders) in children.items():
        orders.send("stop")
        figures = rows[name] = {
            "ok": min(r["ok"] for r in rounds[name]),
            "cpu": statistics.median(r["cpu"] for r in rounds[name]),
            "wall": statistics.median(r["wall"] for r in rounds[name]),
            "rss_mb": orders.recv(),
        }
        child.join()
        print(
            f"{name:40} {args.n / figures['wall']:8.0f} "
            f"{figures['cpu'] / args.n * 1e6:11.0f} {figures['rss_mb']:12.1f} {figures['ok']:6}"
        )
    return rows


if __name__ == "__main__":
    main()
