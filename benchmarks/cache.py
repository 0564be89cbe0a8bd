"""Prompt caching with and without `prompt_cache_key="auto"`: hit rate and input cost.

600 prompts sharing a 2,000-token system prompt go through the synchronous path against
the emulator (its own process, 3,000 requests a minute, prompt caching on: a cache machine
serves 15 requests a minute per prefix and key, the rest spill), once with no key and once
with `prompt_cache_key="auto"`. For each it prints the emulator's cache lookups (hit, miss,
spill), the hit rate (cached input tokens / input tokens, as the emulator billed them), the
input cost at the summary's prices and what the cache saved.

    python benchmarks/cache.py
    python benchmarks/cache.py --prompts 300 --rpm 6000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from common import emulator_process, emulator_stats

from genai_coroutines import PRICES, BatchSummary, ResponsesProcessor, ResponsesRequest

MODEL = "gpt-4o-mini"
API_KEY = "sk-emulator"
SYSTEM = "Classify the support ticket by the house rules below. " * 148
"""About 2,000 tokens at the emulator's 4 characters a token."""


def request(base_url: str, n: int, key: str | None) -> ResponsesRequest:
    return ResponsesRequest(
        system_prompt=SYSTEM,
        user_prompts=[f"Ticket {i}: the printer on floor {i % 7} is jammed." for i in range(n)],
        model=MODEL,
        response_format={"type": "text"},
        base_url=f"{base_url}/v1",
        api_key=API_KEY,
        max_concurrent_requests=50,
        max_output_tokens=16,
        prompt_cache_key=key,
    )


async def run(base_url: str, n: int, key: str | None) -> dict[str, Any]:
    summary = BatchSummary(model=MODEL)
    started = time.perf_counter()
    out = await ResponsesProcessor().process_batch(request(base_url, n, key), summary=summary)
    wall = time.perf_counter() - started
    stats = await emulator_stats(base_url, reset=True)
    return {"ok": out["total_success"], "wall": wall, "stats": stats, "summary": summary}


def input_usd(summary: BatchSummary) -> float:
    price = PRICES[MODEL]
    cached = summary.cached_tokens
    fresh = summary.input_tokens - cached
    return (fresh * price.input + cached * price.cached_input) / 1_000_000


def report(name: str, row: dict[str, Any]) -> float:
    billed, lookups = row["stats"]["billed_tokens"], row["stats"]["prompt_cache_lookups"]
    rate = billed.get("cached_input", 0) / max(1, billed.get("input", 0))
    summary: BatchSummary = row["summary"]
    print(
        f"{name:<6} ok {row['ok']:>4}  wall {row['wall']:6.2f} s  "
        f"lookups hit {lookups.get('hit', 0):>4} miss {lookups.get('miss', 0):>4} "
        f"spill {lookups.get('spill', 0):>4}  hit rate {rate:6.1%}  "
        f"input USD {input_usd(summary):.6f}  saved USD {summary.cache_saving_usd:.6f}"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--rpm", type=int, default=3000)
    args = parser.parse_args()
    settings = {"openai_rpm": args.rpm, "openai_tpm": 10**9, "prompt_caching": True}
    with emulator_process(**settings) as base_url:
        print(f"{args.prompts} prompts, a ~2,000-token system prompt, {args.rpm} RPM")
        plain = report("no key", asyncio.run(run(base_url, args.prompts, None)))
        auto = report("auto", asyncio.run(run(base_url, args.prompts, "auto")))
    good = auto > 0.85 > 0.1 > plain  # each key but its first request hits; one key spills
    print("PASS" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
