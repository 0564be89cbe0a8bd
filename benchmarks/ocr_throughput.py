"""OCR throughput under Datalab's limits: how close a batch gets to what the limits allow.

The emulator runs in a child process (so its CPU is not the client's) with its Datalab
submission limit on (by default 50 uploads per 10 s: 300 per minute with a one-second
burst allowance, so the steady rate decides) and 10% of polls failing (503, connection
reset, malformed body). N PDFs of 1 to 5 pages go through:

- this library, told the key's limit (`requests_per_minute`), and
- the seed's design: a semaphore only; any retriable failure, a failed poll included,
  retries the whole task, re-uploading the document; its exponential backoff (5 s base,
  200% jitter, 5 attempts, the seed's defaults). A malformed poll body is fatal there.

For each it prints wall time, the lower bound the limits imply, efficiency
(bound / wall), 429 answers received (and their share of uploads), duplicate uploads
(same document accepted twice, i.e. paid twice) and failed documents.

Lower bound: the first `burst` uploads are accepted at once, the rest at `rpm/60` per
second, and the last one still needs at least one page of processing:
    bound = (N - burst) / (rpm / 60) + seconds_per_page

    python benchmarks/ocr_throughput.py                  # N=200, the defaults above
    python benchmarks/ocr_throughput.py --n 50 --no-seed-client   # a quick run

Targets for this library: efficiency >= 0.90, 429s <= 2% of uploads, no duplicates.

Many schemas, one OCR (`--schemas 3`, the default; 0 skips it): the same documents
(`--schema-n`, default 200) each filled with 3 JSON schemas, under the same limits,

- by `DatalabExtraction`: one `/convert` with `save_checkpoint` per document, then one
  `/extract` per schema from its checkpoint, and
- by three separate `/extract` runs from the files (one `DocumentProcessor` per schema),
  each parsing every document again.

For each it prints submissions, the OCR's cents (the `parse` operations billed), all cents,
and wall time.

    python benchmarks/ocr_throughput.py --n 0 --no-seed-client     # the schemas row alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from common import emulator_process, emulator_stats

API_KEY = "dl-emulator"


def documents(n: int, seed: int) -> list[bytes]:
    from tests import samples

    rng = random.Random(seed)
    return [samples.pdf(rng.randint(1, 5), tag=f"doc-{i}") for i in range(n)]


@dataclass
class Run:
    name: str
    wall: float
    ok: int
    stats: dict[str, Any]


async def measure(name: str, base_url: str, client: Any) -> Run:
    await emulator_stats(base_url, reset=True)
    started = time.monotonic()
    ok = await client()
    wall = time.monotonic() - started
    return Run(name, wall, ok, await emulator_stats(base_url))


async def run_ours(marker_url: str, docs: list[bytes], args: argparse.Namespace) -> int:
    from genai_coroutines import DocumentConfig, DocumentProcessor

    config = DocumentConfig(
        api_key=API_KEY,
        api_url=marker_url,
        max_concurrent_requests=args.concurrency,
        poll_interval_secs=args.poll_interval,
        base_retry_delay_secs=args.retry_delay,
        max_poll_attempts=10_000,
        requests_per_minute=args.rpm,
    )
    results = await DocumentProcessor(config).process_multiparts(docs)
    return sum(r["success"] for r in results)


async def run_seed_design(marker_url: str, docs: list[bytes], args: argparse.Namespace) -> int:
    """The seed's client, transcribed: semaphore, whole-task retries, re-upload on any error."""
    gate = asyncio.Semaphore(args.concurrency)
    headers = {"X-API-Key": API_KEY}
    max_retries, base, jitter = 5, args.seed_retry_delay, 2.0

    async def once(session: aiohttp.ClientSession, doc: bytes) -> bool:
        form = aiohttp.FormData()
        form.add_field("file", doc, filename="file.pdf", content_type="application/pdf")
        form.add_field("output_format", "json")
        form.add_field("mode", "accurate")
        async with session.post(marker_url, data=form, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"Datalab API error [{response.status}]")
            check_url = (await response.json())["request_check_url"]
        for _ in range(10_000):
            await asyncio.sleep(args.poll_interval)
            async with session.get(check_url, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"Poll failed [{response.status}]")
                body = json.loads(await response.read())  # malformed: a fatal decode error
            if body.get("status") == "complete":
                return True
            if body.get("status") == "failed":
                raise RuntimeError("Processing failed")
        raise RuntimeError("Polling timeout")

    def retriable(error: Exception) -> bool:
        text = f"{type(error).__name__} {error}".lower()
        if any(code in text for code in ("400", "401", "403", "404")):
            return False
        return any(s in text for s in ("429", "50", "connection", "disconnect", "timeout"))

    async def one(session: aiohttp.ClientSession, doc: bytes) -> bool:
        async with gate:
            for attempt in range(max_retries):
                if attempt:
                    delay = base * 2 ** (attempt - 1)
                    await asyncio.sleep(max(0.0, delay * random.uniform(1 - jitter, 1 + jitter)))
                try:
                    return await once(session, doc)
                except (RuntimeError, aiohttp.ClientError, ValueError, KeyError) as error:
                    if not retriable(error):
                        return False
            return False

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        outcomes = await asyncio.gather(*(one(session, doc) for doc in docs))
    return sum(outcomes)


def schemas(count: int) -> dict[str, dict[str, Any]]:
    """`count` small JSON schemas (an invoice's parts), each with its own fields."""
    fields = [("vendor", "total"), ("buyer", "date"), ("currency", "invoice_number")]
    return {
        f"schema{i}": {
            "type": "object",
            "properties": {name: {"type": "string"} for name in fields[i % len(fields)]},
        }
        for i in range(count)
    }


async def run_one_ocr(base_url: str, docs: list[bytes], args: argparse.Namespace) -> Any:
    """`DatalabExtraction`: converted once, each schema extracted from the checkpoint."""
    from genai_coroutines import DatalabExtraction, ExtractionPipeline

    pipeline = ExtractionPipeline(
        schema_config(f"{base_url}/api/v1/convert", args),
        DatalabExtraction(schemas(args.schemas)),
    )
    rows = await pipeline.process(docs)
    summary = pipeline.last_summary
    assert summary is not None
    return sum(row["success"] for row in rows), summary.ocr_cents, summary.cost_cents


async def run_from_files(base_url: str, docs: list[bytes], args: argparse.Namespace) -> Any:
    """Three separate `/extract` runs from the files, one per schema."""
    from genai_coroutines import DocumentProcessor

    ok, ocr, total = len(docs), 0.0, 0.0
    for schema in schemas(args.schemas).values():
        config = schema_config(f"{base_url}/api/v1/extract", args, page_schema=json.dumps(schema))
        results = await DocumentProcessor(config).process_multiparts(docs)
        ok = min(ok, sum(r["success"] for r in results))
        for result in results:
            cost = result["cost_breakdown"] or {}
            ocr += cost.get("operations", {}).get("parse", 0.0)
            total += cost.get("final_cost_cents", 0.0)
    return ok, ocr, total


def schema_config(url: str, args: argparse.Namespace, **options: Any) -> Any:
    from genai_coroutines import DocumentConfig

    return DocumentConfig(
        api_key=API_KEY,
        api_url=url,
        max_concurrent_requests=args.concurrency,
        poll_interval_secs=args.poll_interval,
        base_retry_delay_secs=args.retry_delay,
        max_poll_attempts=10_000,
        requests_per_minute=args.rpm,
        **options,
    )


async def measure_schemas(name: str, base_url: str, client: Any) -> tuple[str, float, Any, Any]:
    await emulator_stats(base_url, reset=True)
    started = time.monotonic()
    figures = await client()
    return name, time.monotonic() - started, figures, await emulator_stats(base_url)


def report_schemas(rows: list[tuple[str, float, Any, Any]], n: int, count: int) -> None:
    print(f"\n{n} documents x {count} schemas")
    print(
        f"{'client':<34}{'ok':>5}{'submissions':>13}{'parses':>8}{'OCR cents':>11}"
        f"{'all cents':>11}{'wall s':>8}"
    )
    for name, wall, (ok, ocr, total), stats in rows:
        submissions = sum(sum(c.values()) for c in stats["submissions_by_endpoint"].values())
        parses = sum(stats["parses_by_digest"].values())
        print(
            f"{name:<34}{ok:>5}{submissions:>13}{parses:>8}{ocr:>11.1f}{total:>11.1f}{wall:>8.2f}"
        )


def report(runs: list[Run], n: int, bound: float) -> None:
    print(
        f"\n{'client':<22}{'wall s':>8}{'bound s':>9}{'effic.':>8}{'429s':>7}{'429 %':>8}"
        f"{'dup. uploads':>14}{'failed':>8}{'faults':>8}"
    )
    for run in runs:
        uploads = sum(v for k, v in run.stats["requests"].items() if k.startswith("marker_submit"))
        limited = run.stats["rate_limited"]
        print(
            f"{run.name:<22}{run.wall:>8.2f}{bound:>9.2f}{bound / run.wall:>8.2f}{limited:>7}"
            f"{100 * limited / max(1, uploads):>7.1f}%{run.stats['duplicate_submissions']:>14}"
            f"{n - run.ok:>8}{sum(run.stats['faults'].values()):>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200, help="documents (PDFs of 1-5 pages)")
    parser.add_argument("--rpm", type=int, default=300, help="emulator uploads per minute")
    parser.add_argument("--burst-seconds", type=float, default=1.0, help="emulator burst allowance")
    parser.add_argument("--seconds-per-page", type=float, default=0.5)
    parser.add_argument("--poll-fault-rate", type=float, default=0.10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--retry-delay", type=float, default=0.5, help="base_retry_delay_secs")
    parser.add_argument(
        "--seed-retry-delay",
        type=float,
        default=5.0,
        help="the seed design's base delay (its default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schemas", type=int, default=3, help="schemas per document (0: skip)")
    parser.add_argument("--schema-n", type=int, default=200, help="documents of the schemas row")
    parser.add_argument("--no-seed-client", action="store_true", help="skip the seed's design")
    args = parser.parse_args()

    share = args.poll_fault_rate
    settings = {
        "datalab_api_key": API_KEY,
        "seed": args.seed,
        "seconds_per_page": args.seconds_per_page,
        "datalab_rpm": args.rpm,
        "burst_seconds": args.burst_seconds,
        "fault_rates": {
            "marker_poll": {"503": share * 0.4, "reset": share * 0.3, "malformed": share * 0.3}
        },
    }
    with emulator_process(**settings) as base_url:
        marker_url = f"{base_url}/api/v1/marker"
        docs = documents(args.n, args.seed)
        burst = max(1.0, args.rpm * args.burst_seconds / 60.0)
        bound = max(0.0, args.n - burst) / (args.rpm / 60.0) + args.seconds_per_page
        print(
            f"{args.n} PDFs ({sum(d.count(b'/Type /Page ') for d in docs)} pages), emulator: "
            f"{args.rpm} uploads/min (burst {burst:g}), {args.seconds_per_page:g} s/page, "
            f"{share:.0%} poll faults; client: concurrency {args.concurrency}, "
            f"poll every {args.poll_interval:g} s"
        )
        runs = []
        if args.n:
            runs.append(
                asyncio.run(
                    measure("genai-coroutines", base_url, lambda: run_ours(marker_url, docs, args))
                )
            )
        if args.n and not args.no_seed_client:
            runs.append(
                asyncio.run(
                    measure(
                        "seed design (semaphore)",
                        base_url,
                        lambda: run_seed_design(marker_url, docs, args),
                    )
                )
            )
        if runs:
            report(runs, args.n, bound)
        if args.schemas:
            docs = documents(args.schema_n, args.seed + 1)
            rows = [
                asyncio.run(
                    measure_schemas(
                        "DatalabExtraction (convert once)",
                        base_url,
                        lambda: run_one_ocr(base_url, docs, args),
                    )
                ),
                asyncio.run(
                    measure_schemas(
                        f"{args.schemas} /extract runs from files",
                        base_url,
                        lambda: run_from_files(base_url, docs, args),
                    )
                ),
            ]
            report_schemas(rows, args.schema_n, args.schemas)


if __name__ == "__main__":
    main()
