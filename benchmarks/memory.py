"""Peak memory of a streamed batch: it must not grow with the number of prompts.

10,000 and 100,000 prompts are written to a JSONL file and run through the command
line, `python -m genai_coroutines responses prompts.jsonl --output out.jsonl`, against
the zero-latency emulator (its own process). Each size runs in a fresh client process
whose peak RSS is read from `os.wait4` for that very child, so one size's peak cannot
hide another's. The output is then checked: every index exactly once, all succeeded,
and the emulator answered each prompt exactly once.

    python benchmarks/memory.py                       # 10,000 and 100,000, concurrency 100
    python benchmarks/memory.py --sizes 1000 10000    # a quick run
    python benchmarks/memory.py --journal             # the same with a SQLite journal
    python benchmarks/memory.py --batch-api --journal  # through the Batch API (--batch-api)

The emulator is told to advertise limits far above what one machine can send: its
default headers say 10,000 RPM (a real tier's figure), which the client rightly learns
and paces to, and that would make this a 10-minute test of the rate limiter.

Target: the largest size's peak RSS within 1.1x of the smallest's. With `--batch-api`
the prompts go through the Batch API path (the emulator's batches take 0.1 s, 5,000
lines per file): every item waits on the provider's side at once, so memory grows with
the batch; the last line prints that growth per item between the smallest and largest
size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from common import ROOT, emulator_process, emulator_stats

MODEL = "gpt-4o-mini"
API_KEY = "sk-emulator"
TARGET = 1.1
NO_LIMITS = {"openai_rpm": 10**9, "openai_tpm": 10**12}
"""Advertised limits no batch here comes near, so pacing never decides the wall time."""
BATCH_FLAGS = [
    "--batch-api",
    "--batch-poll-interval",
    "0.1",
    "--batch-max-requests-per-file",
    "5000",
]


def write_prompts(path: Path, n: int) -> None:
    with open(path, "wb") as out:
        for i in range(n):
            out.write(orjson.dumps({"prompt": f"Summarise item number {i} in one line."}) + b"\n")


def maxrss_mb(ru_maxrss: int) -> float:
    """`ru_maxrss` in MiB: Linux reports KiB, macOS bytes."""
    return ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def run_cli(args: list[str], stderr_path: Path) -> tuple[int, float, float]:
    """Run the CLI in a fresh process: (exit code, wall seconds, that process's peak RSS MiB)."""
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "genai_coroutines", *args]
    started = time.perf_counter()
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return process.returncode, wall, maxrss_mb(usage.ru_maxrss)


def check_output(path: Path, n: int) -> None:
    """Every index exactly once and every item a success, read line by line."""
    seen = bytearray(n)
    with open(path, "rb") as results:
        for line in results:
            record = orjson.loads(line)
            index = record["index"]
            if seen[index]:
                raise SystemExit(f"index {index} written twice")
            if not record["success"]:
                raise SystemExit(f"index {index} failed: {record.get('error')}")
            seen[index] = 1
    if not all(seen):
        raise SystemExit(f"{n - sum(seen)} of {n} indices missing from the output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--journal", action="store_true", help="also journal to SQLite")
    parser.add_argument("--batch-api", action="store_true", help="through the Batch API path")
    options = parser.parse_args()

    rows: list[tuple[int, float, float]] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        emulator_process(latency=0.0, **NO_LIMITS) as base_url,
    ):
        work = Path(folder)
        baseline = run_cli(["--help"], work / "help.txt")[2]
        for n in options.sizes:
            prompts, output = work / f"prompts-{n}.jsonl", work / f"out-{n}.jsonl"
            write_prompts(prompts, n)
            args = ["responses", str(prompts), "--model", MODEL, "--base-url", f"{base_url}/v1"]
            args += ["--output", str(output), "--concurrency", str(options.concurrency)]
            if options.journal:
                args += ["--journal", str(work / f"journal-{n}.db")]
            if options.batch_api:
                args += BATCH_FLAGS
            code, wall, peak = run_cli(args, work / "stderr.txt")
            if code != 0:
                sys.stderr.write((work / "stderr.txt").read_text())
                raise SystemExit(f"the CLI exited {code} for {n} prompts")
            check_output(output, n)
            stats = asyncio.run(emulator_stats(base_url, reset=True))
            if options.batch_api:
                answered = len(stats["batch_executions_by_custom_id"])
                twice = stats["duplicate_batch_executions"]
            else:
                answered = stats["requests"].get("responses 200", 0)
                twice = stats["duplicate_completions"]
            if answered != n or twice:
                raise SystemExit(f"{n} prompts but the emulator answered {answered}")
            rows.append((n, wall, peak))

    print(f"Streamed JSONL -> JSONL, concurrency {options.concurrency}, zero-latency emulator")
    print(f"journal: {'SQLite' if options.journal else 'none'}")
    print(f"path: {'Batch API' if options.batch_api else 'synchronous'}")
    print(f"interpreter + imports alone (--help): {baseline:.1f} MiB peak RSS\n")
    print(f"{'prompts':>9}  {'peak RSS MiB':>12}  {'wall s':>7}  {'items/s':>8}")
    for n, wall, peak in rows:
        print(f"{n:>9,}  {peak:>12.1f}  {wall:>7.2f}  {n / wall:>8.0f}")
    ratio = rows[-1][2] / rows[0][2]
    if options.batch_api:  # every item of a batch waits at once: growth, not a flat target
        growth = (rows[-1][2] - rows[0][2]) * 1024 / (rows[-1][0] - rows[0][0])
        print(f"\ngrowth: {growth:.2f} KiB per item between those sizes")
    else:
        verdict = "OK" if ratio <= TARGET else "OVER TARGET"
        print(
            f"\npeak RSS {rows[-1][0]:,} / {rows[0][0]:,}: {ratio:.2f}x "
            f"(target <= {TARGET}x) {verdict}"
        )


if __name__ == "__main__":
    main()
