"""Scale-out on one key: 1, 3 and 6 processes sharing its limits over one Redis, or not.

The emulator (its own process) enforces OpenAI-style RPM and TPM limits with a one-second
burst and answers after a lognormal latency (median 300 ms); the workers learn the
limits from its `x-ratelimit-*` headers only. The total work is fixed (N prompts of 20
to 120 words, split evenly); each worker process is started and imports everything
first, then all of them are released at once, so the wall time is the batch's alone
(from the release to the last answer, on the machine-wide monotonic clock).

Printed per run: wall time, the lower bound the limits imply, efficiency (bound / wall),
429 answers (count and share of requests sent) and items lost, with a store and without.

Lower bound (as in `rate_limited.py`): one second of each limit is available at once,
the rest arrives at the steady rate, and the last answer still takes one median latency:
    bound = max((N - rpm/60) / (rpm/60), (T - tpm/60) / (tpm/60)) + latency
where N and T count only the items delivered, so losing work never looks like speed.

    python benchmarks/scale_out.py                      # N=1500, 3000 RPM, 480k TPM
    python benchmarks/scale_out.py --n 600 --processes 1 3   # quicker

Requests in transit (`--transit`: counted that long after they reach the emulator, as over
a network; see `EmulatorConfig.openai_transit_seconds`), with OpenAI's accounting and a
start of 80 requests at once on a bucket banking three seconds:

    python benchmarks/scale_out.py --n 200 --processes 2 --rpm 60000 --tpm 10000000 \\
        --latency 0 --transit 0.02 --accounting provider --burst 3 --max-output 8192 \\
        --concurrency 40 --runs 5 --store-only
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from typing import Any

from common import ROOT, emulator_stats
from common import emulator_process as emulator
from rate_limited import API_KEY, SYSTEM, lower_bound, prompts

from tests.scale_support import redis_server


@dataclass
class Outcome:
    ended: float
    failed: int
    tokens: int


def _worker(
    base_url: str,
    batch: list[str],
    concurrency: int,
    store: str | None,
    max_output: int | None,
    ready: Any,
    go: Event,
    out: Any,
) -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from genai_coroutines import ResponsesProcessor, ResponsesRequest

    request = ResponsesRequest(
        api_key=API_KEY,
        base_url=f"{base_url}/v1",
        model="gpt-4o-mini",
        system_prompt=SYSTEM,
        user_prompts=batch,
        response_format={"type": "text"},
        max_concurrent_requests=concurrency,
        max_output_tokens=max_output,
        retry_delay_min_ms=100,
    )
    processor = ResponsesProcessor(limits_store=store or "local")

    async def main() -> Outcome:
        await processor.limits.ready()
        ready.put(True)
        await asyncio.to_thread(go.wait)
        results = await processor.process_batch(request)
        tokens = sum(
            r["usage"]["total_tokens"] for r in results["results"] if r["success"] and r["usage"]
        )
        return Outcome(time.monotonic(), results["total_errors"], tokens)

    out.put(asyncio.run(main()))


def run(
    base_url: str,
    batch: list[str],
    processes: int,
    concurrency: int,
    store: str | None,
    max_output: int | None,
) -> tuple[float, int, int]:
    """(wall seconds, items failed, tokens delivered) of `processes` workers on `batch`."""
    context = multiprocessing.get_context("spawn")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    shares = [batch[i::processes] for i in range(processes)]
    workers = [
        context.Process(
            target=_worker,
            args=(base_url, share, concurrency, store, max_output, ready, go, out),
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=60)
    started = time.monotonic()
    go.set()
    outcomes: list[Outcome] = [out.get(timeout=900) for _ in workers]
    for worker in workers:
        worker.join(30)
    wall = max(o.ended for o in outcomes) - started
    return wall, sum(o.failed for o in outcomes), sum(o.tokens for o in outcomes)


async def flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await client.flushall()
    await client.aclose()


def main(args: argparse.Namespace) -> None:
    batch = prompts(args.n)
    settings: dict[str, Any] = {
        "openai_api_key": API_KEY,
        "openai_rpm": args.rpm,
        "openai_tpm": args.tpm,
        "burst_seconds": args.burst,
        "latency": args.latency,
        "openai_transit_seconds": args.transit,
        "token_accounting": args.accounting,
        "seed": 1,
    }
    print(
        f"N={args.n} prompts in total, limits {args.rpm:g} RPM / {args.tpm:g} TPM "
        f"({args.burst:g} s burst, {args.accounting} accounting), median latency "
        f"{args.latency * 1000:.0f} ms, {args.transit * 1000:.0f} ms in transit, concurrency "
        f"{args.concurrency} per process, max_output_tokens {args.max_output}\n"
    )
    header = f"{'processes':>9} {'store':>6} {'wall s':>8} {'bound s':>8} {'effic.':>7} "
    print(header + f"{'429s':>6} {'429 %':>6} {'lost':>5}")
    with emulator(**settings) as base_url, redis_server() as redis:
        for with_store in (True,) if args.store_only else (True, False):
            for processes in [p for p in args.processes for _ in range(args.runs)]:
                asyncio.run(emulator_stats(base_url, reset=True))  # full buckets each run
                asyncio.run(flush(redis.url))
                store = redis.url if with_store else None
                wall, failed, tokens = run(
                    base_url, batch, processes, args.concurrency, store, args.max_output
                )
                stats = asyncio.run(emulator_stats(base_url))
                sent = sum(n for k, n in stats["requests"].items() if k.startswith("responses"))
                bound = lower_bound(args.n - failed, tokens, args.rpm, args.tpm, args.latency)
                print(
                    f"{processes:>9} {'redis' if with_store else 'none':>6} {wall:>8.2f} "
                    f"{bound:>8.2f} {bound / wall:>7.3f} {stats['rate_limited']:>6} "
                    f"{100 * stats['rate_limited'] / max(sent, 1):>5.1f}% {failed:>5}",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--rpm", type=float, default=3000)
    parser.add_argument("--tpm", type=float, default=480_000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--transit", type=float, default=0.0, help="s in transit per request")
    parser.add_argument("--accounting", choices=["settle", "provider"], default="settle")
    parser.add_argument("--burst", type=float, default=1.0, help="s of quota a bucket banks")
    parser.add_argument("--max-output", type=int, default=None, help="max_output_tokens")
    parser.add_argument("--runs", type=int, default=1, help="runs of each process count")
    parser.add_argument("--store-only", action="store_true", help="skip the runs without one")
    main(parser.parse_args())
