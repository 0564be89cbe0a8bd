"""Streamed OCR-to-extraction against the two-phase way, under both APIs' limits.

The emulator runs in a child process (`common.emulator_process`) with Datalab processing
at `--seconds-per-page` (0.5 s) per page, extraction answering after a lognormal latency
of median `--latency` (1 s), a Datalab submission limit (`--datalab-rpm`, 600 a minute)
and an OpenAI request limit (`--openai-rpm`, 600 a minute), both with a one-second burst
allowance so the steady rate decides. N invoices of 1 to 5 pages (`--n`, 200; real text
layers, so the emulated model extracts their real fields) go through:

- streamed: `ExtractionPipeline`, each document's extraction sent the moment its OCR
  arrives;
- two-phase: `DocumentProcessor.process` over every document, then
  `ResponsesProcessor.process_batch` over every OCR text (the old demo's way);
- batch API: `ExtractionPipeline.process(batch_api=...)`, each document's extraction a
  Batch API line as its OCR arrives, files sent partly filled after `--flush-idle` (0.5 s)
  without a new line; the emulator's batches run `--batch-seconds-per-line` (0.005 s) a
  line after `batch_validating_seconds` and before `batch_finalizing_seconds` (0.05 s each),
  a compressed clock. Printed beside its wall time: its extraction cost against the
  streamed (synchronous) pipeline's, from each run's `PipelineSummary` (target 0.5).

Both are told the keys' limits, use the same concurrency per stage (`--concurrency`) and
run on fresh, unshared limiters. Printed for each: wall time, documents extracted with the
invoice's own fields, 429s received, duplicate uploads and duplicate extractions.

The bound the slower stage implies, each stage on its own:

    OCR:        uploads evenly paced at rpm/60 a second, the i-th (from 0) no sooner than
                i / (datalab_rpm / 60), each done only once its pages are processed:
                max over i of  i / (datalab_rpm / 60) + pages_i * seconds_per_page
                (or, if larger, total pages * seconds_per_page / concurrency)
    extraction: after the bucket's burst, requests at rpm/60 a second, the last answered:
                (N - burst) / (openai_rpm / 60) + latency
                (or, if larger, N * latency / concurrency)
    bound = max(OCR, extraction)

Targets: streamed wall <= 1.15 x bound, and at least 25% below two-phase.

    python benchmarks/pipeline.py                 # N=200, the defaults above
    python benchmarks/pipeline.py --n 50          # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from common import emulator_process, emulator_stats

DATALAB_KEY, OPENAI_KEY, MODEL = "dl-emulator", "sk-emulator", "gpt-4o-mini"


def documents(n: int, seed: int) -> tuple[list[bytes], list[int], list[dict[str, Any]]]:
    from tests.pipeline_support import invoice_fields, invoice_pdf

    rng = random.Random(seed)
    pages = [rng.randint(1, 5) for _ in range(n)]
    docs = [invoice_pdf(i, count) for i, count in enumerate(pages)]
    return docs, pages, [invoice_fields(i) for i in range(n)]


@dataclass
class Run:
    name: str
    wall: float
    extracted: int
    stats: dict[str, Any]
    extraction_usd: float | None = None


def configs(base_url: str, args: argparse.Namespace) -> tuple[Any, Any]:
    from genai_coroutines import DocumentConfig, extraction_request
    from tests.pipeline_support import INVOICE_SCHEMA

    ocr = DocumentConfig(
        api_key=DATALAB_KEY,
        api_url=f"{base_url}/api/v1/convert",
        output_format="markdown",
        max_concurrent_requests=args.concurrency,
        poll_interval_secs=args.poll_interval,
        max_poll_attempts=10_000,
        base_retry_delay_secs=0.5,
        requests_per_minute=args.datalab_rpm,
    )
    extraction = extraction_request(
        model=MODEL,
        schema=INVOICE_SCHEMA,
        system_prompt="Extract the invoice fields from the OCR text.",
        api_key=OPENAI_KEY,
        base_url=f"{base_url}/v1",
        max_concurrent_requests=args.concurrency,
        requests_per_minute=args.openai_rpm,
        retry_delay_min_ms=200,
    )
    return ocr, extraction


def fresh_limits() -> Any:
    from genai_coroutines import KeyLimits
    from genai_coroutines.engine import MemoryStore

    return KeyLimits(MemoryStore())


async def streamed(
    base_url: str, docs: list[bytes], args: argparse.Namespace, *, batch_api: bool = False
) -> tuple[list[Any], float]:
    """The pipeline's rows' fields and its extraction's cost (USD)."""
    from genai_coroutines import BatchAPI, ExtractionPipeline

    ocr, extraction = configs(base_url, args)
    pipeline = ExtractionPipeline(ocr, extraction, limits=fresh_limits())
    options = BatchAPI(poll_interval_secs=args.poll_interval, flush_idle_secs=args.flush_idle)
    rows = await pipeline.process(docs, batch_api=options if batch_api else False)
    assert pipeline.last_summary is not None
    return [row["fields"] for row in rows], pipeline.last_summary.cost_usd


async def two_phase(base_url: str, docs: list[bytes], args: argparse.Namespace) -> list[Any]:
    import dataclasses

    import orjson

    from genai_coroutines import DocumentProcessor, ResponsesProcessor, parse_responses
    from genai_coroutines.documents.parse import document_text

    ocr, extraction = configs(base_url, args)
    limits = fresh_limits()
    converted = await DocumentProcessor(ocr, limits=limits).process(docs)
    texts = [document_text(result) for result in converted]
    request = dataclasses.replace(extraction, user_prompts=texts)
    answers = await ResponsesProcessor(limits=limits).process_batch(request)
    fields = []
    for text in parse_responses(answers):
        try:
            fields.append(orjson.loads(text) if text else None)
        except orjson.JSONDecodeError:
            fields.append(None)
    return fields


async def measure(name: str, base_url: str, client: Any, truth: list[Any]) -> Run:
    await emulator_stats(base_url, reset=True)
    started = time.monotonic()
    got = await client()
    wall = time.monotonic() - started
    fields, usd = got if isinstance(got, tuple) else (got, None)
    extracted = sum(1 for got, want in zip(fields, truth, strict=True) if got == want)
    return Run(name, wall, extracted, await emulator_stats(base_url), usd)


def _posts(stats: dict[str, Any]) -> int:
    """Requests to `POST /v1/responses` (the emulator counts them as `responses <status>`)."""
    return sum(n for key, n in stats["requests"].items() if key.split(" ")[0] == "responses")


def bound(pages: list[int], args: argparse.Namespace) -> tuple[float, float]:
    n = len(pages)
    ocr_rate, ai_rate = args.datalab_rpm / 60, args.openai_rpm / 60
    ocr = max(
        max(i / ocr_rate + count * args.seconds_per_page for i, count in enumerate(pages)),
        sum(pages) * args.seconds_per_page / args.concurrency,
    )
    burst = max(1.0, args.openai_rpm * args.burst_seconds / 60)
    extraction = max((n - burst) / ai_rate + args.latency, n * args.latency / args.concurrency)
    return ocr, extraction


def report(run: Run, n: int, limit: float) -> None:
    stats = run.stats
    twice = stats["duplicate_batch_executions"]
    print(
        f"{run.name:<10} wall {run.wall:7.2f}s  {run.wall / limit:5.2f}x bound  "
        f"extracted {run.extracted}/{n}  429s {stats['rate_limited']}  "
        f"duplicate uploads {stats['duplicate_submissions']}  "
        f"duplicate extractions {stats['duplicate_completions']}"
        + (f"  batch lines run twice {twice}" if run.name == "batch api" else "")
    )


async def main(args: argparse.Namespace) -> None:
    docs, pages, truth = documents(args.n, args.seed)
    ocr_bound, extraction_bound = bound(pages, args)
    limit = max(ocr_bound, extraction_bound)
    print(
        f"{args.n} documents, {sum(pages)} pages; OCR {args.seconds_per_page:g} s/page, "
        f"extraction latency median {args.latency:g} s; Datalab {args.datalab_rpm:g} uploads/min, "
        f"OpenAI {args.openai_rpm:g} requests/min; concurrency {args.concurrency} per stage"
    )
    print(
        f"bound: OCR stage {ocr_bound:.2f}s, extraction stage {extraction_bound:.2f}s "
        f"-> slower stage {limit:.2f}s"
    )
    with emulator_process(
        seconds_per_page=args.seconds_per_page,
        latency=args.latency,
        datalab_rpm=int(args.datalab_rpm),
        openai_rpm=int(args.openai_rpm),
        burst_seconds=args.burst_seconds,
        seed=args.seed,
        batch_seconds_per_line=args.batch_seconds_per_line,
    ) as base_url:
        runs = [
            await measure("streamed", base_url, lambda: streamed(base_url, docs, args), truth),
            await measure("two-phase", base_url, lambda: two_phase(base_url, docs, args), truth),
            await measure(
                "batch api",
                base_url,
                lambda: streamed(base_url, docs, args, batch_api=True),
                truth,
            ),
        ]
    for run in runs:
        report(run, args.n, limit)
    stream, phased, batched = runs
    saved = 1 - stream.wall / phased.wall
    print(
        f"streamed: {stream.wall / limit:.2f}x the bound (target <= 1.15), "
        f"{saved:.0%} below two-phase (target >= 25%)"
    )
    assert stream.extraction_usd and batched.extraction_usd is not None
    print(
        f"batch api: extraction ${batched.extraction_usd:.6f} against streamed "
        f"${stream.extraction_usd:.6f}: {batched.extraction_usd / stream.extraction_usd:.3f}x "
        f"(target 0.5); wall {batched.wall:.2f}s, {batched.stats['batches_created']} batches, "
        f"{_posts(batched.stats)} synchronous extraction POSTs"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seconds-per-page", type=float, default=0.5)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--datalab-rpm", type=float, default=600)
    parser.add_argument("--openai-rpm", type=float, default=600)
    parser.add_argument("--burst-seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flush-idle", type=float, default=0.5)
    parser.add_argument("--batch-seconds-per-line", type=float, default=0.005)
    asyncio.run(main(parser.parse_args()))
