"""The Batch API with a deadline its batches would miss: the switch to the synchronous path.

20,000 prompts go through `ResponsesProcessor.stream(request, batch_api=..., deadline=...)`
against the emulator (its own process) with its batch clock set so the batches finish after
the deadline (`batch_seconds_per_line`: four files of 5,000 lines, run side by side, each
150 s, against a 150 s deadline), and its synchronous path limited to `--rpm` requests a
minute (12,000: about what one client sends the emulator on a 2-core machine), which the
request states (`requests_per_minute`) so the fallback plans by it; all 20,000 sent
synchronously would take 100 s, so the batches run until the remainder fits. It prints the wall time
against the deadline, when the switch came (`deadline_fallback`), the share of the results
answered by batches, the cost against the same tokens all synchronous and all through the
Batch API, and the requests answered twice, by a batch line and synchronously or twice by
either, counted at the emulator (must be 0). PASS needs every prompt answered before the
deadline and none answered twice.

    python benchmarks/deadline.py
    python benchmarks/deadline.py --prompts 2000 --deadline 8 --line-seconds 0.01 --per-file 500
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
import time
from collections import Counter
from typing import Any

import orjson
from common import emulator_process, emulator_stats

from genai_coroutines import BatchAPI, BatchSummary, ResponsesProcessor, ResponsesRequest
from genai_coroutines.responses.batch.spool import index_of

MODEL = "gpt-4o-mini"
API_KEY = "sk-emulator"


def request(base_url: str, n: int, rpm: int) -> ResponsesRequest:
    return ResponsesRequest(
        system_prompt="Answer in one line.",
        user_prompts=[f"Summarise item number {i} of the archive in one line." for i in range(n)],
        model=MODEL,
        response_format={"type": "text"},
        base_url=f"{base_url}/v1",
        api_key=API_KEY,
        max_concurrent_requests=100,
        requests_per_minute=rpm,
    )


class Switches(logging.Handler):
    """The `deadline_fallback` lines, with when they came."""

    def __init__(self, started: float) -> None:
        super().__init__(logging.INFO)
        self.started = started
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("deadline_fallback "):
            self.lines.append((time.perf_counter() - self.started, message))


def answered_twice(stats: dict[str, Any], prompts: list[str], body_input: Any) -> int:
    """Items answered more than once, batch lines and synchronous answers together."""
    by_index: Counter[int] = Counter()
    for custom_id, runs in stats["batch_executions_by_custom_id"].items():
        index = index_of(custom_id)
        if index is not None:
            by_index[index] += runs
    completed = stats["completed_by_digest"]
    for index, prompt in enumerate(prompts):
        key = hashlib.sha256(orjson.dumps(body_input(prompt))).hexdigest()[:16]
        by_index[index] += completed.get(key, 0)
    return sum(1 for n in by_index.values() if n > 1)


async def run(base_url: str, args: argparse.Namespace) -> int:
    job = request(base_url, args.prompts, args.rpm)
    options = BatchAPI(
        poll_interval_secs=0.1,
        max_requests_per_file=args.per_file,
        fallback_margin_secs=args.margin,
    )
    summary = BatchSummary(model=MODEL)
    logger = logging.getLogger("genai_coroutines")
    logger.setLevel(logging.INFO)
    started = time.perf_counter()
    switches = Switches(started)
    logger.addHandler(switches)
    ok = by_batch = late = 0
    async for result in ResponsesProcessor().stream(
        job, batch_api=options, deadline=args.deadline, summary=summary
    ):
        ok += result["success"]
        by_batch += result["batch_id"] is not None and result["success"]
        late += result.get("error_type") == "deadline_exceeded"
    wall = time.perf_counter() - started
    logger.removeHandler(switches)
    stats = await emulator_stats(base_url, reset=True)
    template = job._template

    def body_input(prompt: str) -> Any:
        return orjson.loads(template.body(prompt))["input"]

    twice = answered_twice(stats, list(job.user_prompts), body_input)  # type: ignore[arg-type]
    all_sync = all_batch = 0.0
    for (pricer, model, _), (inputs, cached, outputs, _r) in summary.billed.items():
        all_sync += pricer.usd(model, 1.0, inputs, cached, outputs) or 0.0
        all_batch += pricer.usd(model, 0.5, inputs, cached, outputs) or 0.0
    sync_posts = sum(n for k, n in stats["requests"].items() if k.startswith("responses "))
    cancels = sum(n for k, n in stats["requests"].items() if k.startswith("batches_cancel "))
    print(
        f"{args.prompts:,} prompts, {args.per_file:,} per file, "
        f"{args.line_seconds} s a batch line, sync limit {args.rpm:,} RPM, "
        f"margin {args.margin} s"
    )
    for at, line in switches.lines:
        print(f"switch at {at:.1f} s: {line}")
    print(f"wall {wall:.1f} s against a deadline of {args.deadline:.1f} s")
    print(
        f"answered {ok:,} ({late} deadline_exceeded): by batches {by_batch:,} "
        f"({by_batch / args.prompts:.1%}), synchronously {ok - by_batch:,}; "
        f"batches created {stats['batches_created']}, cancelled {cancels}, "
        f"POST /responses {sync_posts:,}; tiers {summary.tiers}"
    )
    print(
        f"cost USD {summary.cost_usd:.6f}: {summary.cost_usd / all_sync:.3f} of all synchronous "
        f"({all_sync:.6f}), {summary.cost_usd / all_batch:.3f} of all batch ({all_batch:.6f})"
    )
    print(f"requests answered twice: {twice}")
    good = ok == args.prompts and wall < args.deadline and twice == 0
    print("PASS" if good else "FAIL")
    return 0 if good else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--per-file", type=int, default=5_000)
    parser.add_argument("--deadline", type=float, default=150.0, help="seconds")
    parser.add_argument("--line-seconds", type=float, default=0.03, help="a batch line's time")
    parser.add_argument("--rpm", type=int, default=12_000, help="the synchronous limit")
    parser.add_argument("--margin", type=float, default=5.0, help="fallback_margin_secs")
    args = parser.parse_args()
    emulator = {
        "batch_validating_seconds": 0.05,
        "batch_seconds_per_line": args.line_seconds,
        "batch_finalizing_seconds": 0.05,
        "openai_rpm": args.rpm,
        "openai_tpm": 10**12,
    }
    with emulator_process(**emulator) as base_url:
        return asyncio.run(run(base_url, args))


if __name__ == "__main__":
    sys.exit(main())
