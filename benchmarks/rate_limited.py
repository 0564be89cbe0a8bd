"""Throughput under OpenAI-style RPM and TPM limits: use the whole quota, and no more.

The emulator (a child process) enforces RPM and TPM with a one-second burst allowance,
so the steady rate decides, and answers after a lognormal latency (median 300 ms). It
counts tokens one of two ways (`--accounting`):

- settle: each request is charged its estimated input plus `max_output_tokens` at
  admission, corrected to its real usage when answered;
- provider: charged the same at admission and never refunded (OpenAI's documented rule),
  with a request answered 429 still counting against the RPM.

Workloads (`--workload`):

- fixed: N prompts of 400 characters with `max_output_tokens=100`;
- mixed: N prompts of 20 to 4,000 characters, half of them in a batch with
  `max_output_tokens=100`, half in one without (run at once on the one key).

Clients: this library (`ResponsesProcessor`, limits learned from the `x-ratelimit-*`
headers, nothing configured) at each `--concurrency`; the same N prompts as three
batches at once on the key (concurrency 50 each); and, unless `--no-sdk`,
`openai.AsyncOpenAI` (its default 2 retries) behind an `asyncio.Semaphore`.

Printed per run: wall time, the lower bound the limits imply, efficiency (bound / wall),
429 answers received (count and share of requests sent), items failed.

Lower bound: one second of each limit is available at once (the burst); the rest
arrives at the steady rate; the last answer still takes one median latency:
    bound = max((N - rpm/60) / (rpm/60), (T - tpm/60) / (tpm/60)) + latency
where N counts the delivered items and T the tokens the emulator charged for them
(`tokens_charged`), so losing work never looks like speed.

    python benchmarks/rate_limited.py                  # N=2000, 3000 RPM, 480k TPM
    python benchmarks/rate_limited.py --n 600 --rpm 1200 --tpm 200000 --no-sdk   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from common import emulator_process, emulator_stats

API_KEY = "sk-emulator"
SYSTEM = "Answer in one short sentence."
WORDS = "invoice total amount due customer order shipment receipt payment account".split()
MAX_OUTPUT = 100


@dataclass(frozen=True)
class Batch:
    prompts: list[str]
    max_output_tokens: int | None


def text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:chars]


def prompts(n: int, seed: int = 7) -> list[str]:
    """Prompts of 20 to 120 words (`scale_out.py`'s workload)."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(20, 120))) for _ in range(n)]


def workload(name: str, n: int, seed: int = 7) -> list[Batch]:
    rng = random.Random(seed)
    if name == "fixed":
        return [Batch([text(rng, 400) for _ in range(n)], MAX_OUTPUT)]
    sizes = [int(20 * 200 ** rng.random()) for _ in range(n)]  # 20 to 4,000, log-uniform
    prompts = [text(rng, size) for size in sizes]
    return [Batch(prompts[::2], MAX_OUTPUT), Batch(prompts[1::2], None)]


@dataclass
class Run:
    name: str
    wall: float
    failed: int


def library_request(base_url: str, batch: Batch, concurrency: int) -> Any:
    from genai_coroutines import ResponsesRequest

    return ResponsesRequest(
        api_key=API_KEY,
        base_url=f"{base_url}/v1",
        model="gpt-4o-mini",
        system_prompt=SYSTEM,
        user_prompts=batch.prompts,
        response_format={"type": "text"},
        max_output_tokens=batch.max_output_tokens,
        max_concurrent_requests=concurrency,
        retry_delay_min_ms=100,
    )


async def run_batches(base_url: str, batches: list[Batch], concurrency: int) -> int:
    """Every batch at once on the one key; the number of items that failed. Each run has
    limits of its own (as a fresh process would), shared by its batches."""
    from genai_coroutines import KeyLimits, ResponsesProcessor
    from genai_coroutines.engine import MemoryStore

    processor = ResponsesProcessor(limits=KeyLimits(MemoryStore()))
    results = await asyncio.gather(
        *(
            processor.process_batch(library_request(base_url, batch, concurrency))
            for batch in batches
        )
    )
    return sum(r["total_errors"] for r in results)


async def run_library(base_url: str, batches: list[Batch], concurrency: int) -> Run:
    start = time.perf_counter()
    failed = await run_batches(base_url, batches, concurrency)
    return Run(f"genai-coroutines c={concurrency}", time.perf_counter() - start, failed)


async def run_three_batches(base_url: str, batches: list[Batch], concurrency: int) -> Run:
    """The same prompts as three batches at once per workload batch, on one key."""
    thirds = [Batch(b.prompts[i::3], b.max_output_tokens) for b in batches for i in range(3)]
    start = time.perf_counter()
    failed = await run_batches(base_url, thirds, concurrency)
    return Run(f"genai-coroutines 3 batches c={concurrency}", time.perf_counter() - start, failed)


async def run_openai_sdk(base_url: str, batches: list[Batch], concurrency: int) -> Run:
    import openai

    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=f"{base_url}/v1")
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(prompt: str, max_output: int | None) -> None:
        nonlocal failed
        extra = {} if max_output is None else {"max_output_tokens": max_output}
        async with gate:
            try:
                await client.responses.create(
                    model="gpt-4o-mini", instructions=SYSTEM, input=prompt, **extra
                )
            except openai.APIError:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(p, b.max_output_tokens) for b in batches for p in b.prompts))
    wall = time.perf_counter() - start
    await client.close()
    return Run(f"AsyncOpenAI+Semaphore c={concurrency}", wall, failed)


def lower_bound(n: int, tokens: int, rpm: float, tpm: float, latency: float) -> float:
    by_requests = max(0.0, n - rpm / 60) / (rpm / 60)
    by_tokens = max(0.0, tokens - tpm / 60) / (tpm / 60)
    return max(by_requests, by_tokens) + latency


Runner = Callable[[str, list[Batch], int], Awaitable[Run]]


async def main(args: argparse.Namespace) -> None:
    runners: list[tuple[Runner, int]] = [(run_library, c) for c in args.concurrency]
    runners.append((run_three_batches, 50))
    if not args.no_sdk:
        runners += [(run_openai_sdk, c) for c in args.concurrency]
    print(
        f"N={args.n} prompts, limits {args.rpm:g} RPM / {args.tpm:g} TPM (1 s burst), "
        f"median latency {args.latency * 1000:.0f} ms"
    )
    header = f"{'client':<36} {'wall s':>8} {'bound s':>8} {'effic.':>7} {'429s':>6} "
    for accounting in args.accounting:
        settings: dict[str, Any] = {
            "openai_api_key": API_KEY,
            "openai_rpm": args.rpm,
            "openai_tpm": args.tpm,
            "burst_seconds": 1.0,
            "latency": args.latency,
            "token_accounting": accounting,
            "seed": 1,
        }
        with emulator_process(**settings) as base_url:
            for name in args.workload:
                batches = workload(name, args.n)
                print(f"\naccounting={accounting} workload={name}")
                print(header + f"{'429 %':>6} {'failed':>7}")
                for runner, concurrency in runners:
                    await emulator_stats(base_url, reset=True)  # each run: full buckets
                    run = await runner(base_url, batches, concurrency)
                    stats = await emulator_stats(base_url)
                    requests = stats["requests"]
                    sent = sum(n for key, n in requests.items() if key.startswith("responses"))
                    delivered = args.n - run.failed
                    bound = lower_bound(
                        delivered, stats["tokens_charged"], args.rpm, args.tpm, args.latency
                    )
                    limited = stats["rate_limited"]
                    print(
                        f"{run.name:<36} {run.wall:>8.2f} {bound:>8.2f} "
                        f"{bound / run.wall:>7.3f} {limited:>6} "
                        f"{100 * limited / max(sent, 1):>5.1f}% {run.failed:>7}"
                    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rpm", type=float, default=3000)
    parser.add_argument("--tpm", type=float, default=480_000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 200])
    parser.add_argument(
        "--accounting", nargs="+", choices=["settle", "provider"], default=["settle", "provider"]
    )
    parser.add_argument(
        "--workload", nargs="+", choices=["fixed", "mixed"], default=["fixed", "mixed"]
    )
    parser.add_argument("--no-sdk", action="store_true", help="skip the AsyncOpenAI baseline")
    asyncio.run(main(parser.parse_args()))
