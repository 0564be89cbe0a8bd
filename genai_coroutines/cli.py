"""The `genai-coroutines` command line.

Exit codes: 0 every item succeeded, 1 some items failed, 2 bad usage, 3 the output could not
be written (a full disk...: nothing more was sent, what was answered is in the journal),
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncGenerator, Iterable, Iterator, Sequence, Sized
from contextlib import aclosing
from typing import Any, Generic, TypeVar, cast

import orjson

from .batchfiles import JsonlWriter, Rereadable, check_documents, expand_documents, prompt_source
from .demo import run_demo
from .documents import DocumentConfig, DocumentProcessor
from .emulator import EmulatorConfig, serve_forever
from .engine.cutoff import Cutoff
from .engine.journal import Journal, JournalError
from .engine.store import LimitStoreUnavailable
from .engine.sync import run
from .metrics_server import DEFAULT_HOST, MetricsUnavailable, metrics_port, serving
from .params import add_deadline, add_flags, cli_fields, flags_named, given, json_file
from .pipeline import KIND as PIPELINE_KIND
from .pipeline import DatalabExtraction, ExtractionPipeline, PipelineSummary, extraction_request
from .responses import BatchAPI, ResponsesProcessor, ResponsesRequest
from .responses.prices import PriceTable, load_prices
from .summary import BatchSummary

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
T = TypeVar("T")


def _add_emulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser("emulate", help="run the local OpenAI + Datalab emulator")
    cmd.add_argument("--port", type=int, default=8765)
    add_flags(cmd, EmulatorConfig)


def emulator_config(args: argparse.Namespace) -> EmulatorConfig:
    with flags_named(EmulatorConfig):
        return EmulatorConfig(**given(args, EmulatorConfig))


def _add_batch_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--output", "-o", default="-", help="JSONL results (default: stdout)")
    cmd.add_argument("--journal", help="journal file: finished results survive a crash")
    cmd.add_argument(
        "--resume", action="store_true", help="continue the batch recorded in an existing --journal"
    )
    cmd.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    cmd.add_argument(
        "--limits-store",
        metavar="URL",
        help="share the key's limits with every process using this redis:// URL "
        "(default: $GENAI_COROUTINES_LIMITS_STORE, else this process only)",
    )
    cmd.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics at http://127.0.0.1:N/metrics while the job runs "
        "(default: $GENAI_COROUTINES_METRICS_PORT; 0: a free port; needs [prometheus])",
    )
    cmd.add_argument("--metrics-host", default=DEFAULT_HOST, help="address /metrics binds to")


def _add_cost_options(cmd: argparse.ArgumentParser, unit: str) -> None:
    cmd.add_argument(
        "--dedupe",
        action="store_true",
        help="send identical requests once; each line gets the answer, with duplicate_of",
    )
    cmd.add_argument(
        "--max-cost",
        type=float,
        metavar=unit.split()[0],
        help=f"budget in {unit}: nothing more is sent once the next request could pass it; "
        "the rest end budget_exceeded (raise it and --resume to continue)",
    )
    cmd.add_argument(
        "--budget-name",
        metavar="NAME",
        help="share --max-cost with every run given this name: in this process, or with "
        "--limits-store in every process using that store (its total is kept a week)",
    )


def _add_prices(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--prices",
        metavar="FILE",
        help="a JSON price file (the shape of genai_coroutines/responses/prices.json) in "
        "place of the built-in list prices; a model it does not name has no cost",
    )


def _add_batch_api(cmd: argparse.ArgumentParser, what: str) -> None:
    cmd.add_argument(
        "--batch-api",
        action="store_true",
        help=f"send {what} through the OpenAI Batch API: half the price, answered within "
        "24 h; an interrupted run leaves its batches running, --resume collects them",
    )
    add_flags(cmd, BatchAPI, "Batch API parameters (with --batch-api)")


def _add_responses(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser(
        "responses", help="run prompts through the OpenAI Responses API (key: OPENAI_API_KEY)"
    )
    cmd.add_argument("prompts", help="prompts file: .jsonl, .csv or text lines ('-' for stdin)")
    cmd.add_argument("--system", default="", help="system prompt (instructions)")
    cmd.add_argument("--system-file", help="read the system prompt from this file")
    cmd.add_argument("--field", default="prompt", help="JSONL/CSV field holding the prompt")
    cmd.add_argument("--schema", help="JSON Schema file: structured output (strict)")
    cmd.add_argument("--schema-name", default="output")
    cmd.add_argument("--json-object", action="store_true", help="JSON mode without a schema")
    add_flags(cmd, ResponsesRequest)
    _add_batch_api(cmd, "the prompts")
    _add_batch_options(cmd)
    add_deadline(cmd)
    _add_cost_options(cmd, "USD")
    _add_prices(cmd)
    cmd.add_argument(
        "--estimate",
        action="store_true",
        help="send nothing: print as JSON the tokens, cost and minutes of each path "
        "(sync, flex, batch_api), with and without prompt caching",
    )


def _add_ocr(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = commands.add_parser(
        "ocr", help="convert documents with the Datalab Marker API (key: DATALAB_API_KEY)"
    )
    cmd.add_argument("documents", nargs="+", help="files, globs, http(s) URLs or @list.txt")
    add_flags(cmd, DocumentConfig)
    _add_batch_options(cmd)
    _add_cost_options(cmd, "USD (Datalab's cents / 100)")
    cmd.add_argument(
        "--cents-per-page",
        type=float,
        help="the price per page --max-cost estimates with (default: Datalab's list price "
        "for the --mode)",
    )
    cmd.add_argument(
        "--estimate",
        action="store_true",
        help="send nothing: print as JSON the documents' pages (counted locally), Datalab's "
        "list cents on each endpoint and the minutes at --rpm",
    )


EXTRACT_SYSTEM = "Extract the fields of the schema from the document's text."
"""The extract command's default `--system`."""
EXTRACT_NO_OCR_FLAG = frozenset(
    {"page_schema", "schema_id", "schema_version", "checkpoint_id", "segmentation_schema"}
)
"""DocumentConfig fields the extract command has no flag for: its OCR converts."""


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def extract_ocr_flags() -> dict[str, str | None]:
    """Each DocumentConfig flag -> the extract command's flag for it (None: none). A name the
    request flags also use (--timeout, --max-retries, --rpm...) takes the prefix --ocr-;
    --concurrency is one flag bounding each stage."""
    request_flags = {flag for _, flag, _ in cli_fields(ResponsesRequest)}
    flags: dict[str, str | None] = {}
    for item, flag, _ in cli_fields(DocumentConfig):
        if item.name in EXTRACT_NO_OCR_FLAG or flag == "--concurrency":
            flags[flag] = None
        else:
            flags[flag] = "--ocr-" + flag[2:] if flag in request_flags else flag
    return flags


def _add_extract(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    renamed = extract_ocr_flags()
    prefixed = ", ".join(new for old, new in renamed.items() if new and new != old)
    cmd = commands.add_parser(
        "extract",
        help="documents -> Datalab OCR -> OpenAI structured extraction, one streamed batch "
        "(keys: DATALAB_API_KEY, OPENAI_API_KEY)",
        description="Each document's extraction is sent as soon as its OCR arrives. One "
        "JSONL row per document: source, success, fields, failed_stage, the OCR ids, pages "
        "and cost, the extraction's usage. --concurrency bounds each stage; OCR flags whose "
        f"names the request flags also use are prefixed --ocr-: {prefixed}.",
    )
    cmd.add_argument("documents", nargs="+", help="files, globs, http(s) URLs or @list.txt")
    cmd.add_argument("--schema", help="JSON Schema file: the fields (strict)")
    cmd.add_argument(
        "--datalab-schema",
        action="append",
        metavar="NAME=FILE",
        help="instead of --schema and a model: Datalab's /extract fills this JSON Schema from "
        "each document's checkpoint, converted once (repeatable: one object per NAME in fields)",
    )
    cmd.add_argument("--schema-name", default="extraction")
    cmd.add_argument("--system", default=EXTRACT_SYSTEM, help="instructions for the model")
    cmd.add_argument("--system-file", help="read the instructions from this file")
    cmd.add_argument(
        "--per-page", action="store_true", help="one extraction per page, merged (paginates)"
    )
    cmd.add_argument("--in-order", action="store_true", help="write rows in input order")
    add_flags(cmd, ResponsesRequest, "extraction (ResponsesRequest) parameters")
    for action in cmd._actions:
        if action.dest == "model":  # not with --datalab-schema (_extraction_request)
            action.required = False
    group = cmd.add_argument_group("OCR (DocumentConfig) parameters")
    for _, flag, options in cli_fields(DocumentConfig):
        new = renamed[flag]
        if new is not None:
            group.add_argument(new, **{**options, "dest": _dest(new)})
    _add_batch_api(cmd, "the extraction requests")
    _add_batch_options(cmd)
    add_deadline(cmd)
    _add_cost_options(cmd, "USD (both stages: Datalab's cents / 100 and OpenAI's dollars)")
    _add_prices(cmd)


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
    _add_extract(commands)
    _add_emulate(commands)
    commands.add_parser("demo", help="OCR + extraction on the built-in emulator, no key needed")
    return parser


class UsageError(Exception):
    """A command line that cannot run as given (exit code 2)."""


class OutputFailed(Exception):
    """The output file could not be written mid-batch (exit code 3)."""


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
        try:  # damaged, empty, locked, unwritable or of another kind: say which, send nothing
            Journal(args.journal, kind, resume=True).close()
        except JournalError as exc:
            raise UsageError(str(exc)) from None
    return str(args.journal)


def _responses_request(args: argparse.Namespace) -> ResponsesRequest:
    """The request of the responses command; its prompts come through a `Feed`."""
    response_format: dict[str, Any] = {"type": "text"}
    if args.schema:
        try:
            schema = json_file(args.schema)
        except ValueError as exc:
            raise UsageError(f"--schema: {exc}") from None
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": args.schema_name, "schema": schema, "strict": True},
        }
    elif args.json_object:
        response_format = {"type": "json_object"}
    with flags_named(ResponsesRequest):
        return ResponsesRequest(
            system_prompt=_read_text(args.system_file) if args.system_file else args.system,
            user_prompts=Feed.of(_prompts(args)),
            response_format=response_format,
            **given(args, ResponsesRequest),
        )


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


class Feed(Generic[T]):
    """The inputs the command line hands its batch, until `halt()`: then no more come, so
    the batch finishes the requests in flight (journaling their answers) and ends, where
    cancelling it would throw away answers already paid for."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = items
        self._halted = False

    @staticmethod
    def of(items: Iterable[T]) -> Feed[T]:
        """A feed of `items`, counted (for the progress bar) when they know their count."""
        return CountedFeed(items) if isinstance(items, Sized) else Feed(items)

    def halt(self) -> None:
        self._halted = True

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            if self._halted:
                return
            yield item


class CountedFeed(Feed[T]):
    """A `Feed` of inputs that know their count."""

    def __len__(self) -> int:
        return len(cast(Sized, self._items))


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
        rest = {key: value for key, value in result.items() if key != "source"}
        return {"index": result["index"], "source": self.names.pop(result["index"], None), **rest}


def _document_config(args: argparse.Namespace) -> DocumentConfig:
    with flags_named(DocumentConfig):
        return DocumentConfig(**given(args, DocumentConfig))


def _extract_ocr_config(args: argparse.Namespace) -> DocumentConfig:
    """The extract command's OCR config: its (renamed) flags, --concurrency, and markdown
    unless --output-format says otherwise (paginated with --per-page)."""
    values, renamed = vars(args), extract_ocr_flags()
    ocr_args = argparse.Namespace()
    for _, flag, options in cli_fields(DocumentConfig):
        new = renamed[flag]
        if new is not None and _dest(new) in values:
            setattr(ocr_args, options["dest"], values[_dest(new)])
    chosen = given(ocr_args, DocumentConfig)
    if "concurrency" in values:
        chosen["max_concurrent_requests"] = values["concurrency"]
    chosen.setdefault("output_format", "markdown")
    if args.per_page and chosen["output_format"] in ("markdown", "html"):
        chosen.setdefault("paginate", True)
    with flags_named(DocumentConfig, renamed):
        return DocumentConfig(**chosen)


def _extraction_request(args: argparse.Namespace) -> ResponsesRequest | DatalabExtraction:
    if args.datalab_schema:
        if args.schema is not None:
            raise UsageError("--schema and --datalab-schema: give one (a model, or Datalab)")
        if args.batch_api:
            raise UsageError("--batch-api: Datalab's /extract (--datalab-schema) has no batch API")
        if args.max_cost is not None:
            raise UsageError("--max-cost cannot be used with --datalab-schema")
        return _datalab_extraction(args.datalab_schema)
    if args.schema is None or args.model is None:
        raise UsageError("--schema and --model are required (or --datalab-schema NAME=FILE)")
    try:
        schema = json_file(args.schema)
    except ValueError as exc:
        raise UsageError(f"--schema: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema: {args.schema} holds no JSON object")
    with flags_named(ResponsesRequest):
        return extraction_request(
            schema=schema,
            schema_name=args.schema_name,
            system_prompt=_read_text(args.system_file) if args.system_file else args.system,
            **given(args, ResponsesRequest),
        )


def _datalab_extraction(given: list[str]) -> DatalabExtraction:
    """`--datalab-schema NAME=FILE ...` as a `DatalabExtraction`."""
    schemas: dict[str, Any] = {}
    for value in given:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--datalab-schema: {value!r} is not NAME=FILE")
        if name in schemas:
            raise UsageError(f"--datalab-schema: {name} given twice")
        try:
            schemas[name] = json_file(path)
        except ValueError as exc:
            raise UsageError(f"--datalab-schema: {exc}") from None
    try:
        return DatalabExtraction(schemas)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--datalab-schema: {exc}") from None


async def _write_all(
    results: AsyncGenerator[dict[str, Any], None],
    output: str,
    documents: NamedDocuments | None,
    feed: Feed[Any],
    *,
    drain: bool,
) -> None:
    """Write each result as it comes. When the output fails (a full disk), halt the feed
    and, with `drain`, let the results in flight come (their answers go to the journal),
    then raise `OutputFailed`; without it (the Batch API, whose batches may take hours
    and are journaled already), stop at once as Ctrl-C does."""
    try:
        writer = JsonlWriter(output)
    except OSError as exc:  # nothing sent yet
        raise UsageError(f"cannot write the output {output}: {exc.strerror or exc}") from None
    failure: OSError | None = None
    unwritten = 0
    try:
        async with aclosing(results):  # a break ends the batch here, not at the loop's end
            async for result in results:
                if failure is None:
                    try:
                        writer.write(documents.label(result) if documents is not None else result)
                        continue
                    except OSError as exc:
                        failure = exc
                        feed.halt()
                unwritten += 1
                if not drain:
                    break
    finally:
        try:
            writer.close()
        except OSError as exc:  # what it still held was not written
            failure = failure or exc
    if failure is not None:
        raise OutputFailed(
            f"cannot write the output {output}: {failure.strerror or failure}; sending "
            f"stopped with {unwritten} result(s) unwritten"
        )


def _run_batch(args: argparse.Namespace) -> int:
    """Run one batch; every input is checked before the output file is opened."""
    model = getattr(args, "model", None) or ""
    prices = _prices_of(args)
    if getattr(args, "estimate", False):
        if args.command == "ocr":
            counter = DocumentProcessor(_document_config(args))
            figures = run(counter.estimate(NamedDocuments(args.documents)))
        else:
            estimator = ResponsesProcessor(prices=prices, limits_store=args.limits_store)
            figures = run(estimator.estimate(_responses_request(args)))
        sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    summary: BatchSummary = BatchSummary(model=model, prices=prices)
    if args.command == "extract":
        summary = PipelineSummary(model=model, prices=prices)
    documents: NamedDocuments | None = None
    feed: Feed[Any]
    if args.command == "extract":
        journal = _journal_path(args, PIPELINE_KIND)
        pipeline = ExtractionPipeline(
            _extract_ocr_config(args),
            _extraction_request(args),
            per_page=args.per_page,
            prices=prices,
            limits_store=args.limits_store,
        )
        documents = NamedDocuments(args.documents)
        feed = Feed.of(documents)
        limits = pipeline.limits
        stream = pipeline.stream(
            feed,
            journal=journal,
            progress=args.progress,
            summary=summary,
            ordered=args.in_order,
            dedupe=args.dedupe,
            max_cost_usd=args.max_cost,
            budget_name=args.budget_name,
            batch_api=_batch_api(args),
            deadline=args.deadline,
        )
    elif args.command == "responses":
        journal = _journal_path(args, "responses")
        responses = ResponsesProcessor(prices=prices, limits_store=args.limits_store)
        limits = responses.limits
        request = _responses_request(args)
        assert isinstance(request.user_prompts, Feed)
        feed = request.user_prompts
        stream = responses.stream(
            request,
            journal=journal,
            progress=args.progress,
            summary=summary,
            dedupe=args.dedupe,
            max_cost_usd=args.max_cost,
            budget_name=args.budget_name,
            batch_api=_batch_api(args),
            deadline=args.deadline,
        )
    else:
        journal = _journal_path(args, "documents")
        documents = NamedDocuments(args.documents)
        feed = Feed.of(documents)
        processor = DocumentProcessor(_document_config(args), limits_store=args.limits_store)
        limits = processor.limits
        stream = processor.stream(
            feed,
            journal=journal,
            progress=args.progress,
            summary=summary,
            dedupe=args.dedupe,
            max_cost_cents=None if args.max_cost is None else args.max_cost * 100,
            cents_per_page=args.cents_per_page,
            budget_name=args.budget_name,
        )
    try:  # a deadline past already is refused before the output is opened
        Cutoff.of(getattr(args, "deadline", None))
    except ValueError as exc:
        raise UsageError(f"--deadline: {exc}") from None
    try:  # an unreachable store is refused before the output is opened
        run(limits.ready())
    except LimitStoreUnavailable as exc:
        raise UsageError(str(exc)) from None
    batch_api = getattr(args, "batch_api", False)
    try:
        run(_write_all(stream, args.output, documents, feed, drain=not batch_api))
    except KeyboardInterrupt:
        print(summary.finish().describe(), file=sys.stderr)
        if getattr(args, "background", False):
            print(_background_note(args), file=sys.stderr)
        if batch_api:
            print(_batch_api_note(args), file=sys.stderr)
        raise
    except OutputFailed as exc:
        print(summary.finish().describe(), file=sys.stderr)
        if batch_api:
            print(_batch_api_note(args), file=sys.stderr)
        kept = (
            "the journal holds them: --resume writes them without paying again"
            if args.journal
            else "lost: there is no --journal"
        )
        print(f"genai-coroutines {args.command}: {exc} ({kept})", file=sys.stderr)
        return EXIT_OUTPUT
    print(summary.finish().describe(), file=sys.stderr)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _prices_of(args: argparse.Namespace) -> PriceTable:
    """`--prices FILE` read (the built-in table without it), before anything is sent."""
    try:
        return load_prices(getattr(args, "prices", None))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--{exc}") from None


def _batch_api(args: argparse.Namespace) -> BatchAPI | bool:
    """`--batch-api` and its options (which mean nothing without it)."""
    chosen = given(args, BatchAPI)
    if not args.batch_api:
        if chosen:
            names = ", ".join(flag for item, flag, _ in cli_fields(BatchAPI) if item.name in chosen)
            raise UsageError(f"{names}: only with --batch-api")
        return False
    with flags_named(BatchAPI):
        return BatchAPI(**chosen)


def _batch_api_note(args: argparse.Namespace) -> str:
    """What became of the batches an interrupted --batch-api run had created."""
    if getattr(args, "cancel_on_interrupt", False):
        return "Batch API batches still running were cancelled (--cancel-on-interrupt)"
    if args.journal:
        return (
            "Batch API batches still running keep going at OpenAI (their ids are in the "
            "journal): run the same command with --resume to collect them without paying again"
        )
    return (
        "Batch API batches still running keep going at OpenAI, but without --journal a rerun "
        "sends their prompts again (their ids are in the batch_api_interrupted log line)"
    )


def _background_note(args: argparse.Namespace) -> str:
    """What became of the background responses an interrupted batch had started."""
    if getattr(args, "cancel_on_interrupt", False):
        return "background responses still running were cancelled (--cancel-on-interrupt)"
    if args.journal:
        return (
            "background responses still running keep going at OpenAI (their ids are in the "
            "journal): run the same command with --resume to collect them without paying again"
        )
    return (
        "background responses still running keep going at OpenAI, but without --journal "
        "their ids are only in the log (left_running lines); use --journal next time"
    )


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
            run(serve_forever(emulator_config(args), args.port))
            return EXIT_OK
        if args.command == "demo":
            return EXIT_FAILED if run(run_demo()) else EXIT_OK
        with serving(metrics_port(args.metrics_port, os.environ), args.metrics_host):
            return _run_batch(args)
    except KeyboardInterrupt:
        print("interrupted: finished results are in the journal and the output", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, JournalError, ValueError, TypeError, MetricsUnavailable) as exc:
        print(f"genai-coroutines {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
