"""Documents in, structured data out: Datalab OCR streamed into OpenAI extraction.

`ExtractionPipeline(ocr, extraction)` runs every document through two stages, each on
its own as soon as it can: the document is converted by Datalab (`ocr`, a
`DocumentConfig`: a `/convert` by default), and the moment its OCR result arrives its
text is sent to `POST /responses` (`extraction`, a `ResponsesRequest` whose
`response_format` is a JSON schema, or JSON mode; make one with `extraction_request`).
There is no phase barrier: the first extraction is sent while other documents are still
being converted, so the batch takes about as long as its slower stage, not the sum.

It is one batch of the engine's driver (`engine.batch.Driver`) with one adapter,
`PipelinePath`, composed of the Datalab path (`documents.path.DocumentsPath`: upload,
poll, pages in flight, submission rate) and the Responses direct path
(`responses.direct.DirectPath`: RPM/TPM limiter, retries). So one batch means:

- both APIs' limits at once: each stage draws on its own key's limiters, shared with
  every other batch on that key; `ocr.max_concurrent_requests` bounds the documents in
  Datalab (upload to last poll) and `extraction.max_concurrent_requests` the requests in
  flight to OpenAI, each with its own semaphore; the driver runs their sum of items.
- each API gets its own key: two HTTP sessions, one sending `X-Api-Key` to Datalab, one
  `Authorization: Bearer` to OpenAI, so neither key ever reaches the other host.
- one journal (kind "pipeline"): an accepted OCR job is journaled before its first poll
  and polled, not uploaded again, by a rerun; a finished OCR is journaled as the item's
  "ocr" stage (`Journal.record_stage`) and its text reused by a rerun, even one whose
  extraction settings changed; each successful extraction request is journaled as a
  stage too (per page with `per_page`); a finished document is answered from the
  journal (`from_journal`). Nothing finished is bought twice.
- one progress bar (documents done and failed, plus `ocred` and `extracted` as each
  stage ends) and one `PipelineSummary`: pages, Datalab cents, tokens, estimated USD,
  retries of both stages, and the total.

One row per document (`stream()` as they finish, or in input order with
`ordered=True`; `process()` returns the list in input order):

    index, source, success, fields (the parsed extraction), failed_stage ("ocr" or
    "extraction", None on success), error, error_type, request_id / checkpoint_id
    (Datalab's ids), page_count, cost_breakdown (Datalab's, cents), usage (tokens, summed
    over the requests), model, service_tier, response_ids, retries (both stages),
    rate_limited, processing_time_secs, from_journal (the whole row came from the
    journal), and the stages' detail in `ocr` and `extraction` (attempts, timings,
    `from_journal` for a reused stage; `page_fields` with `per_page`).

`per_page=True` sends one extraction request per page (a schema that describes one page
of a long document) and merges their objects: a key takes the first page's non-empty
value, lists are concatenated, objects merged the same way; each page's own object stays
in `extraction.page_fields`. Pages come from the OCR output: `json` pages, `chunks`
blocks by page, or `paginate=True` markdown/HTML.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, cast

import orjson

from .documents import DocumentConfig, DocumentProcessor
from .documents.parse import _render, document_text
from .documents.path import DocumentsPath, check_inputs
from .documents.processor import _user_agent
from .documents.sources import DocumentInput, Upload
from .engine import (
    BatchOptions,
    BatchRun,
    Driver,
    ErrorType,
    Failure,
    ItemRun,
    KeyLimits,
    Result,
    Submission,
    collect_in_order,
    count,
    log_event,
    open_session,
)
from .engine.journal import request_digest
from .engine.limits import chosen_limits
from .engine.summary import BatchSummary
from .engine.sync import run_sync
from .responses import ResponsesRequest, parse_responses
from .responses.direct import DirectPath, Prepared
from .responses.processor import request_headers
from .responses.wire import text_format

logger = logging.getLogger("genai_coroutines.pipeline")

KIND = "pipeline"
"""The journal kind of a pipeline batch."""
OCR_STAGE = "ocr"
EXTRACTION_STAGE = "extraction"

Inputs = Iterable[DocumentInput] | AsyncIterable[DocumentInput]


def extraction_request(
    *,
    model: str,
    schema: Mapping[str, Any] | None = None,
    schema_name: str = "extraction",
    system_prompt: str = "",
    **options: Any,
) -> ResponsesRequest:
    """The `ResponsesRequest` of a pipeline's extraction stage: `schema` (a JSON Schema)
    as a strict `json_schema` response format, or `response_format=` as for any request,
    and any other `ResponsesRequest` parameter. Its prompts are the documents' OCR text,
    so it has none of its own."""
    if schema is not None:
        if "response_format" in options:
            raise ValueError("give schema or response_format, not both")
        options["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "schema": dict(schema), "strict": True},
        }
    options.setdefault("response_format", {"type": "json_object"})
    return ResponsesRequest(
        model=model, system_prompt=system_prompt, user_prompts=iter(()), **options
    )


# -- the summary -----------------------------------------------------------------------


@dataclass
class PipelineSummary(BatchSummary):
    """A `BatchSummary` of pipeline rows, with each stage's share.

    The inherited counts are the documents'; `pages`/`cost_cents` are the OCR's,
    tokens/`cost_usd` the extraction's, `retries` both stages' (a row's `retries`).
    `total_cost_usd` adds the two. A plain `BatchSummary` fed the same rows counts all
    of it but the retries (a row has no single `attempts`).
    """

    ocr_done: int = 0
    """Documents whose OCR succeeded (this run or a journaled one)."""
    ocr_failed: int = 0
    extraction_failed: int = 0
    ocr_retries: int = 0
    extraction_retries: int = 0
    extraction_requests: int = 0
    ocr_reused: int = 0
    """OCR results reused from the journal (a row from the journal counts too)."""
    extractions_reused: int = 0

    def add(self, result: Mapping[str, Any]) -> None:
        super().add(result)
        self.retries += int(result.get("retries") or 0)
        ocr, extraction = result.get("ocr"), result.get("extraction")
        if not isinstance(ocr, Mapping):
            return
        stage = result.get("failed_stage")
        self.ocr_failed += stage == OCR_STAGE
        self.extraction_failed += stage == EXTRACTION_STAGE
        whole = bool(result.get("from_journal"))
        if stage != OCR_STAGE:
            self.ocr_done += 1
            self.ocr_reused += whole or bool(ocr.get("from_journal"))
        if not whole:
            self.ocr_retries += int(ocr.get("retries") or 0)
        if isinstance(extraction, Mapping):
            self.extraction_requests += int(extraction.get("requests") or 0)
            reused = extraction.get("requests" if whole else "reused")
            self.extractions_reused += int(reused or 0)
            if not whole:
                self.extraction_retries += int(extraction.get("retries") or 0)

    @property
    def total_cost_usd(self) -> float:
        """Datalab's cents as dollars plus the estimated token cost."""
        return self.cost_cents / 100.0 + self.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "ocr": {
                "documents": self.ocr_done,
                "failed": self.ocr_failed,
                "reused_from_journal": self.ocr_reused,
                "retries": self.ocr_retries,
                "pages": self.pages,
                "cost_cents": self.cost_cents,
            },
            "extraction": {
                "requests": self.extraction_requests,
                "failed": self.extraction_failed,
                "reused_from_journal": self.extractions_reused,
                "retries": self.extraction_retries,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "estimated_cost_usd": round(self.cost_usd, 6),
            },
            "total_cost_usd": round(self.total_cost_usd, 6),
        }

    def describe(self) -> str:
        failed = f"{self.failed} failed"
        if self.failed:
            failed += f": {self.ocr_failed} at OCR, {self.extraction_failed} at extraction"
        reused = f", {self.reused} from journal" if self.reused else ""
        return "\n".join(
            [
                f"documents: {self.total} ({self.succeeded} extracted, {failed}{reused})"
                f"  retries: {self.retries}  429s: {self.rate_limited}"
                f"  wall: {self.wall_seconds:.2f}s",
                f"OCR (Datalab):       {self.ocr_done} documents, {self.pages} pages, "
                f"Datalab cost: {self.cost_cents:g} cents (${self.cost_cents / 100:.4f}), "
                f"{_plural(self.ocr_retries, 'retry', 'retries')}",
                f"extraction (OpenAI): {_plural(self.extraction_requests, 'request')}, "
                f"{self.input_tokens} tokens in ({self.cached_tokens} cached), "
                f"{self.output_tokens} out, estimated cost: ${self.cost_usd:.4f}, "
                f"{_plural(self.extraction_retries, 'retry', 'retries')}",
                f"total cost: ${self.total_cost_usd:.4f}",
            ]
        )


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


# -- the adapter -----------------------------------------------------------------------


@dataclass(slots=True)
class _Stages:
    """What one document's extraction came to."""

    results: list[Result] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    failure: Failure | None = None
    reused: int = 0


class PipelinePath:
    """The pipeline's `Adapter` (see `engine.batch`): the Datalab path, then the Responses
    direct path, each under its own bound and on its own session."""

    kind = KIND
    unit = "doc"
    logger = logger

    def __init__(
        self,
        ocr: DocumentsPath,
        extraction: DirectPath,
        *,
        ocr_slots: int,
        extraction_slots: int,
        per_page: bool = False,
        ocr_session: Any = None,
        extraction_session: Any = None,
    ) -> None:
        self.ocr = ocr
        self.extraction = extraction
        self.per_page = per_page
        self.ocr_slots = asyncio.Semaphore(ocr_slots)
        self.extraction_slots = asyncio.Semaphore(extraction_slots)
        self.sessions = {OCR_STAGE: ocr_session, EXTRACTION_STAGE: extraction_session}
        self._batches: dict[str, tuple[BatchRun, BatchRun]] = {}
        self.identity = orjson.dumps(
            {"extraction": extraction.template.body("").decode(), "per_page": per_page}
        )
        """What besides the document and OCR settings decides a row (its journal digest)."""
        self.ocred = 0
        self.extracted = 0

    # The driver's side.

    async def prepare(self, index: int, item: Any) -> Upload | Failure:
        return await self.ocr.prepare(index, item)

    def digest(self, upload: Upload) -> tuple[bytes, ...]:
        return (*self.ocr.digest(upload), self.identity)

    def failed(self, index: int, failure: Failure, started: float) -> Result:
        """A document that never ran (unreadable, or the batch was stopped): its OCR failed."""
        log_event(
            logger,
            logging.WARNING,
            "task_failed",
            index=index,
            stage=OCR_STAGE,
            error_type=failure.error_type,
            error=failure.message,
        )
        return self._row(index, started, None, None, _Stages(), OCR_STAGE, failure)

    async def execute(self, run: ItemRun, upload: Upload) -> Result:
        ocr = await self._ocr(run, upload)
        if not ocr["success"]:
            failure = _failure_of(ocr)
            return self._row(run.index, run.started, upload, ocr, _Stages(), OCR_STAGE, failure)
        self.ocred += 1
        run.batch.note(ocred=self.ocred)
        stages = await self._extract(run, ocr)
        if stages.failure is not None:
            failure = stages.failure
            if failure.error_type == "invalid_response":  # the others' paths logged theirs
                log_event(
                    logger,
                    logging.WARNING,
                    "task_failed",
                    index=run.index,
                    stage=EXTRACTION_STAGE,
                    error_type=failure.error_type,
                    error=failure.message,
                )
            return self._row(run.index, run.started, upload, ocr, stages, EXTRACTION_STAGE, failure)
        self.extracted += 1
        run.batch.note(extracted=self.extracted)
        return self._row(run.index, run.started, upload, ocr, stages, None, None)

    def replayed(self, run_note: Any, row: Mapping[str, Any]) -> None:
        """Count a row the journal answered in the bar's stage counts."""
        if row.get("from_journal") and row.get("success"):
            self.ocred += 1
            self.extracted += 1
            run_note(ocred=self.ocred, extracted=self.extracted)

    # The stages.

    def _batch(self, run: ItemRun, stage: str) -> BatchRun:
        """The batch's shared state with this stage's session (its API's key)."""
        cached = self._batches.get(stage)
        if cached is None or cached[0] is not run.batch:
            session = self.sessions[stage] or run.batch.session
            cached = (run.batch, dataclasses.replace(run.batch, session=session))
            self._batches[stage] = cached
        return cached[1]

    async def _ocr(self, run: ItemRun, upload: Upload) -> Result:
        """The document's OCR result: journaled earlier, or run now (polling the job the
        journal holds, if any), and journaled at once as the item's "ocr" stage."""
        journal = run.batch.journal
        digest = request_digest(*self.ocr.digest(upload))
        if journal is not None:
            done = journal.stage_result(run.index, OCR_STAGE, digest)
            if done is not None:
                return {**done, "from_journal": True}
        async with self.ocr_slots:
            stage_run = ItemRun(
                run.index,
                self._batch(run, OCR_STAGE),
                time.perf_counter(),
                run.submission,
                on_submitted=run.submitted,
            )
            result = await self.ocr.execute(stage_run, upload)
        if result["success"]:
            run.batch.journaled(lambda j: j.record_stage(run.index, OCR_STAGE, digest, result))
        return result

    async def _extract(self, run: ItemRun, ocr: Result) -> _Stages:
        texts = page_texts(ocr) if self.per_page else [document_text(ocr)]
        parts = await asyncio.gather(
            *(self._extract_one(run, page, text) for page, text in enumerate(texts))
        )
        stages = _Stages()
        for result, fields, failure in parts:
            if result is not None:
                stages.results.append(result)
                stages.reused += bool(result.get("from_journal"))
            if failure is not None and stages.failure is None:
                stages.failure = failure
            if fields is not None:
                stages.fields.append(fields)
        return stages

    async def _extract_one(
        self, run: ItemRun, page: int, text: str
    ) -> tuple[Result | None, dict[str, Any] | None, Failure | None]:
        """One extraction request (a page's, with `per_page`): its result, parsed fields,
        or why there are none."""
        if not text.strip():
            return None, None, Failure("the OCR text is empty", "invalid_input", False)
        prepared = await self.extraction.prepare(run.index, text)
        if isinstance(prepared, Failure):
            return None, None, prepared
        stage = f"{EXTRACTION_STAGE}:{page}"
        digest = request_digest(*self.extraction.digest(prepared))
        journal = run.batch.journal
        if journal is not None:
            done = journal.stage_result(run.index, stage, digest)
            if done is not None:
                done = {**done, "from_journal": True}
                return done, _fields(done), None
        result = await self._send(run, prepared)
        if not result["success"]:
            return result, None, _failure_of(result)
        fields = _fields(result)
        if fields is None:
            text_out = parse_responses([result])[0]
            failure = Failure(
                f"the extraction is not a JSON object: {text_out[:200]!r}",
                "invalid_response",
                False,
            )
            return result, None, failure
        run.batch.journaled(lambda j: j.record_stage(run.index, stage, digest, result))
        return result, fields, None

    async def _send(self, run: ItemRun, prepared: Prepared) -> Result:
        async with self.extraction_slots:
            stage_run = ItemRun(run.index, self._batch(run, EXTRACTION_STAGE), time.perf_counter())
            return await self.extraction.execute(stage_run, prepared)

    # The row.

    def _row(
        self,
        index: int,
        started: float,
        upload: Upload | None,
        ocr: Result | None,
        stages: _Stages,
        failed_stage: str | None,
        failure: Failure | None,
    ) -> Result:
        ocr = ocr or {}
        payload = _payload(ocr)
        ocr_done = failed_stage != OCR_STAGE
        checkpoint = payload.get("checkpoint_id")
        ocr_retries = max(0, int(ocr.get("attempts") or 0) - 1)
        results = stages.results
        usage = _summed_usage([r.get("usage") for r in results if r.get("success")])
        extraction_retries = sum(
            max(0, int(r.get("attempts") or 0) - 1) for r in results if not r.get("from_journal")
        )
        response_ids = [_response_id(r) for r in results if r.get("success")]
        fields = merge_fields(stages.fields) if failed_stage is None else None
        fresh_ocr = not ocr.get("from_journal")
        row: Result = {
            "index": index,
            "source": None if upload is None else (upload.url or upload.filename),
            "success": failed_stage is None,
            "fields": fields,
            "failed_stage": failed_stage,
            "error": None if failure is None else failure.message,
            "error_type": None if failure is None else failure.error_type,
            "request_id": ocr.get("request_id"),
            "checkpoint_id": checkpoint if isinstance(checkpoint, str) else None,
            "page_count": ocr.get("page_count") if ocr_done else None,
            "cost_breakdown": ocr.get("cost_breakdown") if ocr_done else None,
            "usage": usage,
            "model": self.extraction.model,
            "service_tier": next(
                (r.get("service_tier") for r in results if r.get("service_tier")), None
            ),
            "response_ids": response_ids,
            "retries": (ocr_retries if fresh_ocr else 0) + extraction_retries,
            "rate_limited": int(ocr.get("rate_limited") or 0)
            + sum(int(r.get("rate_limited") or 0) for r in results),
            "processing_time_secs": time.perf_counter() - started,
            "ocr": {
                "success": bool(ocr.get("success")),
                "request_id": ocr.get("request_id"),
                "page_count": ocr.get("page_count"),
                "cost_breakdown": ocr.get("cost_breakdown"),
                "attempts": int(ocr.get("attempts") or 0),
                "retries": ocr_retries,
                "rate_limited": int(ocr.get("rate_limited") or 0),
                "processing_time_secs": ocr.get("processing_time_secs"),
                "from_journal": bool(ocr.get("from_journal")),
            },
            "extraction": None
            if not ocr_done
            else {
                "requests": len(results),
                "attempts": sum(int(r.get("attempts") or 0) for r in results),
                "retries": extraction_retries,
                "reused": stages.reused,
                "latency_ms": sum(float(r.get("latency_ms") or 0) for r in results),
                "usage": usage,
                **({"page_fields": stages.fields} if self.per_page else {}),
            },
        }
        return row


# -- the pipeline ----------------------------------------------------------------------


class ExtractionPipeline:
    """Documents through Datalab OCR and OpenAI extraction, one streamed batch (see the
    module docstring). Reuse one freely; it only remembers `last_summary`."""

    last_summary: PipelineSummary | BatchSummary | None = None

    def __init__(
        self,
        ocr: DocumentConfig,
        extraction: ResponsesRequest,
        *,
        per_page: bool = False,
        limits: KeyLimits | None = None,
        limits_store: str | None = None,
    ) -> None:
        """`limits_store` / `limits`: where both keys' limits live, as for the processors
        (default `$GENAI_COROUTINES_LIMITS_STORE`, else this process's memory)."""
        if not isinstance(ocr, DocumentConfig):
            raise TypeError(f"ocr must be a DocumentConfig, not {type(ocr).__name__}")
        if not isinstance(extraction, ResponsesRequest):
            raise TypeError(
                f"extraction must be a ResponsesRequest, not {type(extraction).__name__}"
            )
        if ocr.page_schema is not None or ocr.schema_id is not None or not ocr.needs_file:
            raise ValueError(
                "ocr: the pipeline's OCR converts (no page_schema, schema_id or "
                "checkpoint_id): extraction is its Responses stage"
            )
        if getattr(extraction, "background", False):
            raise ValueError(
                "extraction: the pipeline sends each request on the synchronous path "
                "(no background mode)"
            )
        kind = text_format(extraction.response_format).get("type")
        if kind not in ("json_schema", "json_object"):
            raise ValueError(
                "extraction.response_format must be a JSON schema (or json_object): the "
                "pipeline parses each answer into fields"
            )
        if per_page and not _paged(ocr):
            raise ValueError(
                "per_page needs the OCR's pages: output_format json or chunks, or "
                "paginate=True with markdown or html"
            )
        self.ocr = ocr
        self.extraction = extraction
        self.per_page = per_page
        self.limits = chosen_limits(limits, limits_store)

    def __repr__(self) -> str:
        return (
            f"ExtractionPipeline(ocr={self.ocr.url!r}, model={self.extraction.model!r}, "
            f"per_page={self.per_page})"
        )

    async def process(self, inputs: Inputs, **options: Any) -> list[Result]:
        """Every document's row, in input order (options as `stream`'s)."""
        check_inputs(inputs, self.ocr)
        return await collect_in_order(self.stream(inputs, **options), itemgetter("index"))

    def process_sync(self, inputs: Inputs, **options: Any) -> list[Result]:
        """`process` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process(inputs, **options))

    async def stream(
        self,
        inputs: Inputs,
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: BatchSummary | None = None,
        resume: Mapping[int, Submission] | None = None,
        ordered: bool = False,
    ) -> AsyncIterator[Result]:
        """Each document's row as soon as it is done (`ordered=True`: in input order, each
        as soon as every earlier one is out).

        `journal` names a file holding both stages (see the module docstring): run the
        same batch with it again and nothing finished is sent again. `progress` shows
        one bar for both stages; `summary` (default a `PipelineSummary`, also kept as
        `last_summary`) totals both. `resume` maps an input index to a Datalab job
        submitted earlier, polled instead of uploaded.
        """
        ocr, request = self.ocr, self.extraction
        await self.limits.ready()  # an unreachable shared store fails here, nothing sent
        documents = DocumentProcessor(ocr, limits=self.limits)
        limiter = self.limits.rate(
            request.base_url,
            request.api_key or "",
            request.model,
            requests_per_minute=request.requests_per_minute,
            tokens_per_minute=request.tokens_per_minute,
            learn=True,
        )
        ocr_slots, extraction_slots = ocr.max_concurrent_requests, request.max_concurrent_requests
        datalab_headers = {"X-Api-Key": ocr.api_key or "", "User-Agent": _user_agent()}
        async with (
            open_session(ocr_slots, datalab_headers) as ocr_session,
            open_session(extraction_slots, request_headers(request)) as extraction_session,
        ):
            adapter = PipelinePath(
                documents.adapter(),
                DirectPath(request, limiter),
                ocr_slots=ocr_slots,
                extraction_slots=extraction_slots,
                per_page=self.per_page,
                ocr_session=ocr_session,
                extraction_session=extraction_session,
            )
            driver = Driver(
                adapter,
                inputs,
                BatchOptions(
                    concurrency=ocr_slots + extraction_slots,
                    headers={"User-Agent": _user_agent()},  # each stage sends its own key
                    journal=journal,
                    progress=progress,
                    summary=summary or PipelineSummary(model=request.model),
                    resume=resume,
                    start_fields={
                        "files": count(inputs, "?"),
                        "endpoint": ocr.endpoint or ocr.url,
                        "model": request.model,
                        "ocr_concurrency": ocr_slots,
                        "extraction_concurrency": extraction_slots,
                        "per_page": self.per_page,
                    },
                ),
            )
            self.last_summary = driver.summary
            note = driver.books.progress.note
            rows = driver.stream()
            if ordered:
                rows = in_input_order(rows)
            async for row in rows:
                adapter.replayed(note, row)
                yield row


async def in_input_order(rows: AsyncIterator[Result]) -> AsyncIterator[Result]:
    """`rows` (each with its `index`, 0, 1, 2... in some order) in input order, each as
    soon as every earlier one has come; holds only the rows that came early."""
    waiting: dict[int, Result] = {}
    expected = 0
    async for row in rows:
        waiting[row["index"]] = row
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1
    for index in sorted(waiting):  # gaps cannot happen with the driver; never lose a row
        yield waiting[index]


# -- helpers ---------------------------------------------------------------------------


def _failure_of(result: Mapping[str, Any]) -> Failure:
    """The failure a stage's failed result reports."""
    kind = cast(ErrorType, result.get("error_type") or "api_error")
    return Failure(str(result.get("error")), kind, bool(result.get("is_retriable")))


def _paged(config: DocumentConfig) -> bool:
    formats = set(config.output_format.split(","))
    return bool(formats & {"json", "chunks"}) or config.paginate


def _payload(result: Mapping[str, Any]) -> dict[str, Any]:
    raw = result.get("json_response")
    if not isinstance(raw, str):
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


_MARKDOWN_PAGE = "-" * 48
"""marker's page separator: `{N}` and 48 dashes, opening each page of paginated markdown."""


def page_texts(result: Mapping[str, Any]) -> list[str]:
    """The text of each page of an OCR result: `json` pages, `chunks` blocks grouped by
    page, paginated HTML (`<div class='page'>`) or markdown (`{N}---...`); else the whole
    text as one page."""
    payload = _payload(result)
    tree = payload.get("json")
    if isinstance(tree, dict) and isinstance(tree.get("children"), list):
        return [_render(page) for page in tree["children"]]
    chunks = payload.get("chunks")
    blocks = chunks.get("blocks") if isinstance(chunks, dict) else None
    if isinstance(blocks, list) and blocks:
        pages: dict[Any, list[str]] = {}
        for block in blocks:
            if isinstance(block, dict):
                pages.setdefault(block.get("page"), []).append(_render(block))
        return ["\n".join(part for part in parts if part) for parts in pages.values()]
    html = payload.get("html")
    if isinstance(html, str) and "<div class='page'" in html:
        parts = re.split(r"<div class='page' data-page-id='\d+'>", html)[1:]
        return [re.sub(r"</div>\s*(</body></html>)?\s*$", "", part).strip() for part in parts]
    markdown = payload.get("markdown")
    if isinstance(markdown, str) and re.search(r"\{\d+\}" + _MARKDOWN_PAGE, markdown):
        parts = re.split(r"\{\d+\}" + _MARKDOWN_PAGE, markdown)
        return [part.strip() for part in parts if part.strip()]
    return [document_text(result)]


def _fields(result: Mapping[str, Any]) -> dict[str, Any] | None:
    text = parse_responses([result])[0]
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def merge_fields(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per-page objects as one: a key takes the first non-empty value, lists concatenate,
    objects merge the same way. None for no parts."""
    if not parts:
        return None
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            have = merged.get(key)
            if key not in merged or _empty(have):
                merged[key] = value
            elif isinstance(have, list) and isinstance(value, list):
                merged[key] = have + value
            elif isinstance(have, dict) and isinstance(value, dict):
                merged[key] = merge_fields([have, value])
    return merged


def _summed_usage(usages: Iterable[Any]) -> dict[str, Any] | None:
    """Token counts of several responses added up, in the Responses `usage` shape."""
    total: dict[str, Any] = {}
    seen = False
    for usage in usages:
        if not isinstance(usage, Mapping):
            continue
        seen = True
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            total[key] = total.get(key, 0) + int(usage.get(key) or 0)
        for details, key in (
            ("input_tokens_details", "cached_tokens"),
            ("output_tokens_details", "reasoning_tokens"),
        ):
            inner = usage.get(details)
            if isinstance(inner, Mapping):
                slot = total.setdefault(details, {})
                slot[key] = slot.get(key, 0) + int(inner.get(key) or 0)
    return total if seen else None


def _response_id(result: Mapping[str, Any]) -> str | None:
    raw = result.get("raw_response")
    if not isinstance(raw, str):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None
