"""Throughput under OpenAI-style RPM and TPM limits: use the whole quota, and no more.

The emulator (a child process) enforces RPM and TPM with a one-second burst allowance,
so the steady rate decides, and answers after a lognormal latency (median 300 ms).
N prompts of varied length go through, in one run:

- this library (`ResponsesProcessor`, limits learned from the `x-ratelimit-*` headers,
  nothing configured) at concurrency 50 and 200, and
- this library running the same N prompts as three batches at once on the one key (one
  process, concurrency 50 each): the key's limits are shared, so together they must do
  what one batch does, and
- `openai.AsyncOpenAI` (its default 2 retries) behind an `asyncio.Semaphore`, the usual
  hand-rolled batch, at the same concurrencies.

Printed per run: wall time, the lower bound the limits imply, efficiency (bound / wall),
429 answers received (count and share of requests sent), items failed.

Lower bound: one second of each limit is available at once (the burst); the rest
arrives at the steady rate; the last answer still takes one median latency:
    bound = max((N - rpm/60) / (rpm/60), (T - tpm/60) / (tpm/60)) + latency
where T is the batch's total tokens as the emulator charges them (input + output).
A client that loses items is measured on what it delivered: N and T count only its
successful items, so losing work never looks like speed.

    python benchmarks/rate_limited.py                 # N=3000, 3000 RPM, 480k TPM
    python benchmarks/rate_limited.py --n 600 --rpm 1200 --tpm 200000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from common import emulator_process, emulator_stats

API_KEY = "sk-emulator"
SYSTEM = "Answer in one short sentence."
WORDS = "invoice total amount due customer order shipment receipt payment account".split()


def prompts(n: int, seed: int = 7) -> list[str]:
    """Prompts of 20 to 120 words, so some requests weigh five times others in tokens and,
    on average, the RPM and TPM limits bind about equally."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(20, 120))) for _ in range(n)]


@dataclass
class Run:
    name: str
    wall: float
    failed: int
    tokens: int


def library_request(base_url: str, batch: list[str], concurrency: int) -> Any:
    from genai_coroutines import ResponsesRequest

    return ResponsesRequest(
        api_key=API_KEY,
        base_url=f"{base_url}/v1",
        model="gpt-4o-mini",
        system_prompt=SYSTEM,
        user_prompts=batch,
        response_format={"type": "text"},
        max_concurrent_requests=concurrency,
        retry_delay_min_ms=100,
    )


def _tokens(results: dict[str, Any]) -> int:
    return sum(r["usage"]["total_tokens"] for r in results["results"] if r["success"])


async def run_library(base_url: str, batch: list[str], concurrency: int) -> Run:
    from genai_coroutines import ResponsesProcessor

    start = time.perf_counter()
    results = await ResponsesProcessor().process_batch(
        library_request(base_url, batch, concurrency)
    )
    wall = time.perf_counter() - start
    return Run(f"genai-coroutines c={concurrency}", wall, results["total_errors"], _tokens(results))


async def run_three_batches(base_url: str, batch: list[str], concurrency: int) -> Run:
    """The same prompts as three batches at once on one key, each at `concurrency`."""
    from genai_coroutines import ResponsesProcessor

    thirds = [batch[i::3] for i in range(3)]
    start = time.perf_counter()
    results = await asyncio.gather(
        *(
            ResponsesProcessor().process_batch(library_request(base_url, third, concurrency))
            for third in thirds
        )
    )
    wall = time.perf_counter() - start
    failed = sum(r["total_errors"] for r in results)
    tokens = sum(_tokens(r) for r in results)
    return Run(f"genai-coroutines 3 batches c={concurrency}", wall, failed, tokens)


async def run_openai_sdk(base_url: str, batch: list[str], concurrency: int) -> Run:
    import openai

    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=f"{base_url}/v1")
    gate = asyncio.Semaphore(concurrency)
    failed = tokens = 0

    async def one(prompt: str) -> None:
        nonlocal failed, tokens
        async with gate:
            try:
                response = await client.responses.create(
                    model="gpt-4o-mini", instructions=SYSTEM, input=prompt
                )
            except openai.APIError:
                failed += 1
                return
            if response.usage is not None:
                tokens += response.usage.total_tokens

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in batch))
    wall = time.perf_counter() - start
    await client.close()
    return Run(f"AsyncOpenAI+Semaphore c={concurrency}", wall, failed, tokens)


def lower_bound(n: int, tokens: int, rpm: float, tpm: float, latency: float) -> float:
    by_requests = max(0.0, n - rpm / 60) / (rpm / 60)
    by_tokens = max(0.0, tokens - tpm / 60) / (tpm / 60)
    return max(by_requests, by_tokens) + latency


async def main(args: argparse.Namespace) -> None:
    batch = prompts(args.n)
    settings: dict[str, Any] = {
        "openai_api_key": API_KEY,
        "openai_rpm": args.rpm,
        "openai_tpm": args.tpm,
        "burst_seconds": 1.0,
        "latency": args.latency,
        "seed": 1,
    }
    runners = [("lib", c) for c in args.concurrency] + [("lib3", 50)]
    if not args.no_sdk:
        runners += [("sdk", c) for c in args.concurrency]
    print(
        f"N={args.n} prompts, limits {args.rpm:g} RPM / {args.tpm:g} TPM (1 s burst), "
        f"median latency {args.latency * 1000:.0f} ms\n"
    )
    header = f"{'client':<34} {'wall s':>8} {'bound s':>8} {'effic.':>7} {'429s':>6} "
    print(header + f"{'429 %':>6} {'failed':>7}")
    with emulator_process(**settings) as base_url:
        await emulator_stats(base_url, reset=True)  # each run starts with full buckets
        for kind, concurrency in runners:
            runner = {"lib": run_library, "lib3": run_three_batches, "sdk": run_openai_sdk}[kind]
            run = await runner(base_url, batch, concurrency)
            stats = await emulator_stats(base_url, reset=True)
            sent = sum(n for key, n in stats["requests"].items() if key.startswith("responses"))
            bound = lower_bound(args.n - run.failed, run.tokens, args.rpm, args.tpm, args.latency)
            print(
                f"{run.name:<34} {run.wall:>8.2f} {bound:>8.2f} {bound / run.wall:>7.3f} "
                f"{stats['rate_limited']:>6} {100 * stats['rate_limited'] / max(sent, 1):>5.1f}% "
                f"{run.failed:>7}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rpm", type=float, default=3000)
    parser.add_argument("--tpm", type=float, default=480_000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--no-sdk", action="store_true", help="skip the AsyncOpenAI baseline")
    asyncio.run(main(parser.parse_args()))
