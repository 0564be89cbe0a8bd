"""The Batch API path against the synchronous path: the same request, half the price.

20,000 prompts go through `ResponsesProcessor.stream(request, batch_api=BatchAPI(...))`
against the emulator (its own process, batches time-compressed: no per-line time, short
validating and finalizing), journaled, results consumed as they come; then the very
same request through the synchronous path (`POST /v1/responses`, limits far above what
one machine sends). For each path it prints the files and batches the emulator saw,
the wall time, the tokens and the summary's estimated USD; then the ratio of the two
costs, which must be 0.5 (the same tokens at the Batch API's half price), and this
client's peak RSS after the Batch API run, which must stay under 150 MB (the lines go
to temporary files and output files are read line by line; each waiting item keeps about
0.3 KiB, 0.4 KiB with a journal: `million.py`).

    python benchmarks/batch_api.py                       # 20,000 prompts, 5,000 per file
    python benchmarks/batch_api.py --prompts 2000 --per-file 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emulator_process, emulator_stats, peak_rss_mb

from genai_coroutines import BatchAPI, BatchSummary, ResponsesProcessor, ResponsesRequest

MODEL = "gpt-4o-mini"
API_KEY = "sk-emulator"
RSS_LIMIT_MB = 150.0
EMULATOR = {
    "batch_validating_seconds": 0.05,
    "batch_seconds_per_line": 0.0,
    "batch_finalizing_seconds": 0.05,
    "openai_rpm": 10**9,
    "openai_tpm": 10**12,
}


def request(base_url: str, n: int) -> ResponsesRequest:
    return ResponsesRequest(
        system_prompt="Answer in one line.",
        user_prompts=[f"Summarise item number {i} of the archive in one line." for i in range(n)],
        model=MODEL,
        response_format={"type": "text"},
        base_url=f"{base_url}/v1",
        api_key=API_KEY,
        max_concurrent_requests=100,
    )


async def run(
    base_url: str, n: int, batch_api: BatchAPI | None, journal: Path | None
) -> dict[str, Any]:
    summary = BatchSummary(model=MODEL)
    started = time.perf_counter()
    ok = failed = 0
    async for result in ResponsesProcessor().stream(
        request(base_url, n), batch_api=batch_api or False, summary=summary, journal=journal
    ):
        if result["success"]:
            ok += 1
        else:
            failed += 1
    wall = time.perf_counter() - started
    stats = await emulator_stats(base_url, reset=True)
    return {
        "ok": ok,
        "failed": failed,
        "wall": wall,
        "files": stats["files_uploaded"],
        "batches": stats["batches_created"],
        "sync_requests": sum(n for k, n in stats["requests"].items() if k.startswith("responses ")),
        "summary": summary,
    }


def report(name: str, row: dict[str, Any]) -> None:
    summary: BatchSummary = row["summary"]
    print(
        f"{name:<10} files {row['files']:>3}  batches {row['batches']:>3}  "
        f"POST /responses {row['sync_requests']:>6}  ok {row['ok']:>6}  failed {row['failed']:>3}  "
        f"wall {row['wall']:6.2f} s  tokens {summary.input_tokens:>8} in "
        f"{summary.output_tokens:>8} out  USD {summary.cost_usd:.6f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--per-file", type=int, default=5_000)
    parser.add_argument("--no-journal", action="store_true")
    args = parser.parse_args()
    options = BatchAPI(poll_interval_secs=0.1, max_requests_per_file=args.per_file)
    with emulator_process(**EMULATOR) as base_url, tempfile.TemporaryDirectory() as folder:
        journal = None if args.no_journal else Path(folder) / "batch.journal"
        print(
            f"{args.prompts:,} prompts, {args.per_file:,} per file, "
            f"journal: {'no' if journal is None else 'yes'}"
        )
        batch = asyncio.run(run(base_url, args.prompts, options, journal))
        rss = peak_rss_mb()
        report("batch API", batch)
        direct = asyncio.run(run(base_url, args.prompts, None, None))
        report("sync", direct)
    same_tokens = (batch["summary"].input_tokens, batch["summary"].output_tokens) == (
        direct["summary"].input_tokens,
        direct["summary"].output_tokens,
    )
    ratio = batch["summary"].cost_usd / direct["summary"].cost_usd
    print(f"cost ratio batch/sync: {ratio:.4f} (same tokens: {same_tokens})")
    print(f"client peak RSS after the Batch API run: {rss:.1f} MB (limit {RSS_LIMIT_MB:.0f} MB)")
    good = (
        same_tokens
        and abs(ratio - 0.5) < 1e-9
        and rss < RSS_LIMIT_MB
        and batch["ok"] == direct["ok"] == args.prompts
    )
    print("PASS" if good else "FAIL")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
