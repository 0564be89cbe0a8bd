"""The `genai-coroutines` command line.

Exit codes: 0 every item succeeded, 1 some items failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from .emulator import FAULT_KINDS, EmulatorConfig, serve_forever

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fault(text: str) -> tuple[str, str, float]:
    try:
        endpoint, kind, rate = text.split(":")
        share = float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ENDPOINT:KIND:RATE, got {text!r}") from None
    if kind not in FAULT_KINDS and not kind.isdigit():
        raise argparse.ArgumentTypeError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
    return endpoint, kind, share


def _add_emulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser("emulate", help="run the local OpenAI + Datalab emulator")
    cmd.add_argument("--port", type=int, default=8765)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--latency", type=float, default=0.0, help="median /v1/responses latency, s")
    cmd.add_argument("--openai-rpm", type=int)
    cmd.add_argument("--openai-tpm", type=int)
    cmd.add_argument("--burst-seconds", type=float, default=60.0)
    cmd.add_argument("--insufficient-quota", action="store_true")
    cmd.add_argument("--seconds-per-page", type=float, default=0.5)
    cmd.add_argument("--datalab-rpm", type=int)
    cmd.add_argument("--datalab-max-concurrent", type=int)
    cmd.add_argument("--datalab-max-pages", type=int, help="pages in flight per key")
    cmd.add_argument("--result-ttl", type=float, default=3600.0)
    cmd.add_argument("--failed-job-rate", type=float, default=0.0)
    cmd.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="ENDPOINT:KIND:RATE",
        help="e.g. responses:503:0.05 or marker_poll:reset:0.1 (repeatable)",
    )


def emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    rates: dict[str, dict[str, float]] = {}
    for endpoint, kind, rate in args.fault:
        rates.setdefault(endpoint, {})[kind] = rate
    return EmulatorConfig(
        seed=args.seed,
        latency=args.latency,
        openai_rpm=args.openai_rpm,
        openai_tpm=args.openai_tpm,
        burst_seconds=args.burst_seconds,
        insufficient_quota=args.insufficient_quota,
        seconds_per_page=args.seconds_per_page,
        datalab_rpm=args.datalab_rpm,
        datalab_max_concurrent=args.datalab_max_concurrent,
        datalab_max_pages_in_flight=args.datalab_max_pages,
        result_ttl=args.result_ttl,
        failed_job_rate=args.failed_job_rate,
        fault_rates=rates,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genai-coroutines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_emulate(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        if args.command == "emulate":
            asyncio.run(serve_forever(emulator_config(args), args.port))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
