"""The `genai-coroutines` command line.

Exit codes: 0 every item succeeded, 1 some items failed, 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence, Sized
from typing import Any

import orjson

from .batchfiles import JsonlWriter, Rereadable, check_documents, expand_documents, prompt_source
from .demo import run_demo
from .documents import DocumentConfig, DocumentProcessor
from .emulator import FAULT_ENDPOINTS, FAULT_KINDS, EmulatorConfig, is_fault_kind, serve_forever
from .engine.journal import Journal
from .engine.summary import BatchSummary
from .responses import ResponsesProcessor, ResponsesRequest

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fault(text: str) -> tuple[str, str, float]:
    try:
        endpoint, kind, rate = text.split(":")
        share = float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ENDPOINT:KIND:RATE, got {text!r}") from None
    if endpoint not in FAULT_ENDPOINTS:
        known = ", ".join(FAULT_ENDPOINTS)
        raise argparse.ArgumentTypeError(f"unknown endpoint {endpoint!r}; known: {known}")
    if not is_fault_kind(kind):
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
        help=f"e.g. responses:503:0.05 (repeatable); KIND: any NNN, {', '.join(FAULT_KINDS)}",
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


def _add_batch_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--output", "-o", default="-", help="JSONL results (default: stdout)")
    cmd.add_argument("--journal", help="journal file: finished results survive a crash")
    cmd.add_argument(
        "--resume", action="store_true", help="continue the batch recorded in an existing --journal"
    )
    cmd.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    cmd.add_argument("--concurrency", type=int, default=10)
    cmd.add_argument("--max-retries", type=int, default=5)


def _add_responses(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser(
        "responses", help="run prompts through the OpenAI Responses API (key: OPENAI_API_KEY)"
    )
    cmd.add_argument("prompts", help="prompts file: .jsonl, .csv or text lines ('-' for stdin)")
    cmd.add_argument("--model", required=True)
    cmd.add_argument("--system", default="", help="system prompt (instructions)")
    cmd.add_argument("--system-file", help="read the system prompt from this file")
    cmd.add_argument("--field", default="prompt", help="JSONL/CSV field holding the prompt")
    cmd.add_argument("--schema", help="JSON Schema file: structured output (strict)")
    cmd.add_argument("--schema-name", default="output")
    cmd.add_argument("--json-object", action="store_true", help="JSON mode without a schema")
    cmd.add_argument("--base-url", default="https://api.openai.com/v1")
    cmd.add_argument("--timeout", type=float, default=60.0)
    cmd.add_argument("--temperature", type=float)
    cmd.add_argument("--top-p", type=float)
    cmd.add_argument("--max-output-tokens", type=int)
    cmd.add_argument("--reasoning-effort")
    cmd.add_argument("--reasoning-summary")
    cmd.add_argument("--service-tier")
    cmd.add_argument("--rpm", type=float, help="requests per minute (default: learned)")
    cmd.add_argument("--tpm", type=float, help="tokens per minute (default: learned)")
    cmd.add_argument("--tools", help="JSON file: a list of tools (Chat Completions or Responses)")
    cmd.add_argument("--tool-choice", help="auto, required, none, or a JSON object")
    cmd.add_argument("--parallel-tool-calls", action=argparse.BooleanOptionalAction)
    cmd.add_argument("--previous-response-id")
    cmd.add_argument("--include", action="append", help="extra output to include (repeatable)")
    cmd.add_argument("--store", action=argparse.BooleanOptionalAction)
    cmd.add_argument("--truncation", help="auto or disabled")
    cmd.add_argument("--metadata", help='JSON object, e.g. \'{"run": "nightly"}\'')
    cmd.add_argument("--stream", action="store_true", help="read answers as SSE streams")
    cmd.add_argument("--retry-delay-min-ms", type=int, default=1000)
    cmd.add_argument("--retry-delay-max-ms", type=int, default=60000)
    cmd.add_argument("--max-retry-wait", type=float, default=120.0, help="Retry-After ceiling, s")
    _add_batch_options(cmd)


def _add_ocr(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser(
        "ocr", help="convert documents with the Datalab Marker API (key: DATALAB_API_KEY)"
    )
    cmd.add_argument("documents", nargs="+", help="files, globs, http(s) URLs or @list.txt")
    cmd.add_argument("--api-url", default="https://www.datalab.to/api/v1/marker")
    cmd.add_argument("--output-format", default="json")
    cmd.add_argument("--mode", default="accurate")
    cmd.add_argument("--page-range")
    cmd.add_argument("--max-pages", type=int)
    cmd.add_argument("--paginate", action="store_true")
    cmd.add_argument("--page-schema", help="JSON Schema file for per-page extraction")
    cmd.add_argument("--poll-interval", type=float, default=2.0)
    cmd.add_argument("--max-poll-attempts", type=int, default=60)
    cmd.add_argument("--rpm", type=float, help="submissions per minute")
    cmd.add_argument("--max-pages-in-flight", type=int, default=5000)
    cmd.add_argument("--disable-image-extraction", action="store_true")
    cmd.add_argument("--extras", help="JSON object of additional form fields")
    cmd.add_argument("--webhook-url")
    cmd.add_argument("--timeout", type=float, default=300.0, help="per request, s")
    cmd.add_argument("--retry-delay", type=float, default=5.0, help="base_retry_delay_secs")
    cmd.add_argument("--jitter-percent", type=float, default=200.0)
    _add_batch_options(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genai-coroutines", description=__doc__)
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="library log lines on stderr (default WARNING: retries, 429s, failed items)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_responses(commands)
    _add_ocr(commands)
    _add_emulate(commands)
    commands.add_parser("demo", help="OCR + extraction on the built-in emulator, no key needed")
    return parser


class UsageError(Exception):
    """A command line that cannot run as given (exit code 2)."""


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _journal_path(args: argparse.Namespace, kind: str) -> str | None:
    """The journal to use, refused before anything is sent if it cannot be the right one."""
    if args.resume and not args.journal:
        raise UsageError("--resume needs --journal PATH")
    if not args.journal:
        return None
    if os.path.exists(args.journal):
        if not args.resume:
            raise UsageError(f"journal {args.journal} exists: pass --resume to continue it")
        try:
            Journal(args.journal, kind).close()  # raises if it holds another kind of batch
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{args.journal} is not a journal: {exc}") from None
    return str(args.journal)


def _responses_request(args: argparse.Namespace) -> ResponsesRequest:
    response_format: dict[str, Any] = {"type": "text"}
    if args.schema:
        schema = _json_file(args.schema)
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": args.schema_name, "schema": schema, "strict": True},
        }
    elif args.json_object:
        response_format = {"type": "json_object"}
    return ResponsesRequest(
        model=args.model,
        system_prompt=_read_text(args.system_file) if args.system_file else args.system,
        user_prompts=_prompts(args),
        response_format=response_format,
        base_url=args.base_url,
        timeout_secs=args.timeout,
        temperature=args.temperature,
        top_p=args.top_p,
        max_output_tokens=args.max_output_tokens,
        reasoning_effort=args.reasoning_effort,
        reasoning_summary=args.reasoning_summary,
        service_tier=args.service_tier,
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        max_concurrent_requests=args.concurrency,
        max_retries=args.max_retries,
        tools=_json_file(args.tools) if args.tools else None,
        tool_choice=_tool_choice(args.tool_choice),
        parallel_tool_calls=args.parallel_tool_calls,
        previous_response_id=args.previous_response_id,
        include=args.include,
        store=args.store,
        truncation=args.truncation,
        metadata=_json_text("--metadata", args.metadata) if args.metadata else None,
        stream=args.stream or None,
        retry_delay_min_ms=args.retry_delay_min_ms,
        retry_delay_max_ms=args.retry_delay_max_ms,
        max_retry_wait_secs=args.max_retry_wait,
    )


def _json_text(option: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{option} is not JSON: {exc}") from None


def _json_file(path: str) -> Any:
    return _json_text(path, _read_text(path))


def _tool_choice(text: str | None) -> str | dict[str, Any] | None:
    """A mode name as given, or a JSON object naming a tool."""
    if text is None or not text.lstrip().startswith("{"):
        return text
    choice: dict[str, Any] = _json_text("--tool-choice", text)
    return choice


def _prompts(args: argparse.Namespace) -> Iterable[str | list[Any]]:
    """The prompts file, opened and counted now so a missing, empty or malformed file is a
    usage error before the output is truncated or anything is paid for."""
    try:
        prompts = prompt_source(args.prompts, field=args.field)
        count = len(prompts) if isinstance(prompts, Sized) else None
    except OSError as exc:
        raise UsageError(f"cannot read {args.prompts}: {exc.strerror}") from None
    if count == 0:
        raise UsageError(f"no prompts in {args.prompts}")
    return prompts


class NamedDocuments(Rereadable[str]):
    """The documents of the command line, remembering which path each index is until its
    result is written (so memory holds only the documents in flight)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        try:
            check_documents(patterns)
        except OSError as exc:
            raise UsageError(str(exc)) from None
        super().__init__(lambda: expand_documents(patterns))
        self.names: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        for index, path in enumerate(super().__iter__()):
            self.names[index] = path
            yield path

    def label(self, result: dict[str, Any]) -> dict[str, Any]:
        """The result with the document's path as `source`, right after its index."""
        return {"index": result["index"], "source": self.names.pop(result["index"], None), **result}


def _document_config(args: argparse.Namespace) -> DocumentConfig:
    return DocumentConfig(
        api_url=args.api_url,
        output_format=args.output_format,
        mode=args.mode,
        page_range=args.page_range,
        max_pages=args.max_pages,
        paginate=args.paginate,
        page_schema=_read_text(args.page_schema) if args.page_schema else None,
        poll_interval_secs=args.poll_interval,
        max_poll_attempts=args.max_poll_attempts,
        requests_per_minute=args.rpm,
        max_concurrent_requests=args.concurrency,
        max_retries=args.max_retries,
        max_pages_in_flight=args.max_pages_in_flight,
        disable_image_extraction=args.disable_image_extraction,
        extras=args.extras,
        webhook_url=args.webhook_url,
        timeout_secs=args.timeout,
        base_retry_delay_secs=args.retry_delay,
        jitter_percent=args.jitter_percent,
    )


async def _write_all(
    results: AsyncIterator[dict[str, Any]], output: str, documents: NamedDocuments | None
) -> None:
    writer = JsonlWriter(output)
    try:
        async for result in results:
            writer.write(documents.label(result) if documents is not None else result)
    finally:
        writer.close()


def _run_batch(args: argparse.Namespace) -> int:
    """Run one batch; every input is checked before the output file is opened."""
    summary = BatchSummary(model=getattr(args, "model", ""))
    documents: NamedDocuments | None = None
    if args.command == "responses":
        journal = _journal_path(args, "responses")
        stream = ResponsesProcessor().stream(
            _responses_request(args), journal=journal, progress=args.progress, summary=summary
        )
    else:
        journal = _journal_path(args, "documents")
        documents = NamedDocuments(args.documents)
        stream = DocumentProcessor(_document_config(args)).stream(
            documents, journal=journal, progress=args.progress, summary=summary
        )
    try:
        asyncio.run(_write_all(stream, args.output, documents))
    except KeyboardInterrupt:
        print(summary.finish().describe(), file=sys.stderr)
        raise
    print(summary.finish().describe(), file=sys.stderr)
    return EXIT_FAILED if summary.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    logging.basicConfig(
        level=args.log_level, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    try:
        if args.command == "emulate":
            asyncio.run(serve_forever(emulator_config(args), args.port))
            return EXIT_OK
        if args.command == "demo":
            return EXIT_FAILED if asyncio.run(run_demo()) else EXIT_OK
        return _run_batch(args)
    except KeyboardInterrupt:
        print("interrupted: finished results are in the journal and the output", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, ValueError, TypeError) as exc:  # bad options, keys, files
        print(f"genai-coroutines {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
