"""`ExtractionPipeline`, what a caller runs, and `extraction_request`, its extraction
stage's request.

`ExtractionPipeline` checks both stages' settings when it is made; each batch then opens
one HTTP session per API and runs one driver batch over `path.PipelineAdapter`. One row per
document (`stream()` as they finish, or in input order with `ordered=True`; `process()`
returns the list in input order); the row's keys are listed in `path`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import replace
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from .. import validation as check
from ..documents import DocumentConfig, DocumentProcessor
from ..documents.path import check_inputs
from ..documents.processor import datalab_headers
from ..documents.sources import DocumentInput
from ..engine import (
    USER_AGENT,
    BatchOptions,
    ClientOptions,
    Driver,
    Result,
    Submission,
    collect_in_order,
    count,
)
from ..engine.budget import SharedBudget, budget_needs
from ..engine.cutoff import Cutoff
from ..engine.journal import unfinished
from ..engine.summary import Summary
from ..engine.sync import run_sync
from ..responses import ResponsesRequest
from ..responses.background import BackgroundAdapter
from ..responses.batch import BatchAPI, BatchContext, BatchStage, CollectingAdapter, check_rerun
from ..responses.clients import ResponsesClients
from ..responses.direct import DirectAdapter, key_limiter
from ..responses.prices import PricesArg, table_of, warn_unpriced
from ..responses.processor import request_headers
from ..responses.wire import text_format
from .budget import StageBudget, stage_budget
from .datalab_stage import DatalabExtraction, DatalabStage
from .path import EXTRACTION_STAGE, KIND, OCR_STAGE, PipelineAdapter, logger
from .responses_stage import ResponsesExtraction
from .stage import ExtractionStage, Sessions
from .summary import PipelineSummary

if TYPE_CHECKING:
    from typing_extensions import Unpack

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


class ExtractionPipeline(ResponsesClients):
    """Documents through Datalab OCR and OpenAI extraction, one streamed batch (see the
    package docstring). Reuse one freely; it only remembers `last_summary`."""

    last_summary: Summary | None = None

    def __init__(
        self,
        ocr: DocumentConfig,
        extraction: ResponsesRequest | DatalabExtraction,
        *,
        per_page: bool = False,
        prices: PricesArg = None,
        **clients: Unpack[ClientOptions],
    ) -> None:
        """`prices`: the extraction's token prices, as `ResponsesProcessor`'s (the OCR's
        cost is the cents Datalab reports). `limits_store` / `limits`: where both keys'
        limits live; `connector`: a factory of the aiohttp connector each API's session
        sends through; as for the processors (see `engine.ClientOptions`).

        `extraction` a `DatalabExtraction`: each document is converted once with
        `save_checkpoint` (set here) and each schema is an `/extract` from its checkpoint
        (`datalab_stage`); no model, so `per_page` and `prices` do not apply, nor, in
        `stream`, `batch_api` (Datalab has no batch API) or `max_cost_usd`."""
        if not isinstance(ocr, DocumentConfig):
            raise TypeError(f"ocr must be a DocumentConfig, not {type(ocr).__name__}")
        if not isinstance(extraction, ResponsesRequest | DatalabExtraction):
            raise TypeError(
                "extraction must be a ResponsesRequest or a DatalabExtraction, not "
                f"{type(extraction).__name__}"
            )
        check.flag("per_page", per_page)
        if ocr.page_schema is not None or ocr.schema_id is not None or not ocr.needs_file:
            raise ValueError(
                "ocr: the pipeline's OCR converts (no page_schema, schema_id or "
                "checkpoint_id): extraction is its own stage"
            )
        if isinstance(extraction, DatalabExtraction):
            if per_page:
                raise ValueError("per_page: a DatalabExtraction reads the whole checkpoint")
            ocr = replace(ocr, save_checkpoint=True)
            extraction.configs(ocr)  # each schema's /extract config, checked now
        elif text_format(extraction.response_format).get("type") not in (
            "json_schema",
            "json_object",
        ):
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
        self.model = extraction.model if isinstance(extraction, ResponsesRequest) else None
        self.per_page = per_page
        super().__init__(prices, **clients)

    def __repr__(self) -> str:
        return (
            f"ExtractionPipeline(ocr={self.ocr.url!r}, model={self.model!r}, "
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
        summary: Summary | None = None,
        resume: Mapping[int, Submission] | None = None,
        ordered: bool = False,
        dedupe: bool = False,
        max_cost_usd: float | None = None,
        budget_name: str | None = None,
        batch_api: bool | BatchAPI = False,
        deadline: float | datetime | None = None,
    ) -> AsyncGenerator[Result, None]:
        """Each document's row as soon as it is done (`ordered=True`: in input order, each
        as soon as every earlier one is out).

        `journal` names a file holding both stages (see the package docstring): run the
        same batch with it again and nothing finished is sent again. `progress` shows
        one bar for both stages; `summary` (default a `PipelineSummary`, also kept as
        `last_summary`) totals both. `resume` maps an input index to a Datalab job
        submitted earlier, polled instead of uploaded.

        `dedupe`, `max_cost_usd` and `budget_name` as `ResponsesProcessor.stream`'s, over
        both stages: identical documents (same bytes or URL) are converted and extracted
        once, each row with `duplicate_of` naming the index sent, and identical extraction
        requests of different documents are sent once (`shared`); the budget, in US
        dollars, is reserved before each OCR job and each extraction request, Datalab's
        cents as dollars (`budget`).

        `batch_api` (True, or a `BatchAPI` of options): the extraction requests go through
        the OpenAI Batch API at half the price, as lines of batch files written as the
        documents finish their OCR (a file goes out when full, or partly filled after
        `BatchAPI.flush_idle_secs` without a new line or `flush_max_wait_secs` since its
        first); a document waiting on its batch holds no concurrency slot. Each row adds
        the `batch_id` and `custom_id` that answered it, and a rerun with the same journal
        collects the batches an interrupted run left running (without `batch_api` too: the
        requests they hold are collected, the others sent synchronously).

        `deadline`: seconds from this call, or a timezone-aware `datetime`, after which
        nothing more is sent (no upload, no extraction): the jobs and requests in flight
        finish, and every row not done ends `deadline_exceeded` (with its finished OCR, if
        any), journaled, so a rerun with the journal goes on from there (`engine.cutoff`).
        """
        cutoff = Cutoff.of(deadline)
        check.flag("dedupe", dedupe)
        budget_needs(max_cost_usd, budget_name, "max_cost_usd")
        ocr, request, clients = self.ocr, self.extraction, self.clients
        batch = BatchAPI.of(batch_api)
        if isinstance(request, DatalabExtraction):
            if batch is not None:
                raise ValueError(
                    "batch_api: Datalab's /extract has no batch API; batch_api applies to an "
                    "OpenAI extraction (a ResponsesRequest), not a DatalabExtraction"
                )
            if max_cost_usd is not None:  # its /extract jobs are not weighed
                raise ValueError("max_cost_usd cannot be used with a DatalabExtraction")
        elif batch is not None and (request.background or request.stream):
            raise ValueError("background=True and stream=True cannot be used with batch_api")
        collecting = False
        if journal is not None and batch is None and isinstance(request, ResponsesRequest):
            left = unfinished(journal, KIND)
            check_rerun(request, journal, left)  # refused with background or stream
            collecting = bool(left.jobs)
        await clients.ready()  # an unreachable shared store fails here, nothing sent
        summary = summary or PipelineSummary(model=self.model or "", prices=self.prices)
        prices = table_of(summary)
        budget: StageBudget | None = None
        if max_cost_usd is not None and isinstance(request, ResponsesRequest):
            budget = stage_budget(ocr, request, max_cost_usd, prices, batch_api=batch is not None)
        if budget is not None and budget_name is not None:
            budget.shared = SharedBudget(clients.limits.store, budget_name, "usd")
        if self.model is not None:
            warn_unpriced(logger, self.model, prices)
        documents = DocumentProcessor(ocr, limits=clients.limits)
        ocr_slots, extraction_slots = ocr.max_concurrent_requests, self._extraction_slots()
        headers = (
            request_headers(request)
            if isinstance(request, ResponsesRequest)
            else datalab_headers(ocr)  # Datalab's /extract: a second session on its key
        )
        async with (
            clients.session(ocr_slots, datalab_headers(ocr)) as ocr_session,
            clients.session(extraction_slots, headers) as extraction_session,
        ):
            sessions = Sessions({OCR_STAGE: ocr_session, EXTRACTION_STAGE: extraction_session})
            stage = self._stage(sessions, batch, cutoff, budget, dedupe, collecting)
            adapter = PipelineAdapter(
                documents.adapter(),
                stage,
                ocr_slots=ocr_slots,
                sessions=sessions,
                budget=budget,
                dedupe=dedupe,
            )
            driver = Driver(
                adapter,
                inputs,
                BatchOptions(
                    concurrency=ocr_slots + extraction_slots,
                    max_waiting=ocr.max_waiting,  # the OCR jobs are what waits
                    headers={"User-Agent": USER_AGENT},  # each stage sends its own key
                    connector=clients.connector,
                    journal=journal,
                    progress=progress,
                    summary=summary,
                    resume=resume,
                    cutoff=cutoff,
                    dedupe=dedupe,
                    budget=budget,
                    start_fields={
                        "files": count(inputs, "?"),
                        "endpoint": ocr.endpoint or ocr.url,
                        "model": self.model,
                        "ocr_concurrency": ocr_slots,
                        "extraction_concurrency": extraction_slots,
                        "per_page": self.per_page,
                        **({"batch_api": True} if batch is not None else {}),
                    },
                ),
            )
            self.last_summary = driver.summary
            note = driver.books.progress.note
            # `aclosing`: a consumer closing this stream mid-batch (`aclose`, a `break`)
            # ends the batch now, its journal released, not when the GC finalizes it.
            async with aclosing(driver.stream()) as rows:
                async for row in in_input_order(rows) if ordered else rows:
                    adapter.replayed(note, row)
                    yield row

    def _extraction_slots(self) -> int:
        """The extraction's requests in flight at most (its stage's `slots`)."""
        request = self.extraction
        if isinstance(request, DatalabExtraction):
            return request.configs(self.ocr)[0].max_concurrent_requests
        return request.max_concurrent_requests

    def _stage(
        self,
        sessions: Sessions,
        batch: BatchAPI | None,
        cutoff: Cutoff | None,
        budget: StageBudget | None,
        dedupe: bool,
        collecting: bool,
    ) -> ExtractionStage:
        """The extraction stage of one batch, on its key's limits (`batch`: the OpenAI
        extraction's requests as Batch API lines, which give way to the synchronous path
        in time for `cutoff`; `collecting`: without `batch`, the journal's batches are
        collected, see `responses_stage`)."""
        request, limits = self.extraction, self.clients.limits
        if isinstance(request, DatalabExtraction):
            return DatalabStage(request, self.ocr, limits, sessions)
        # background=True: each extraction's response id journaled, then polled
        direct = (BackgroundAdapter if request.background else DirectAdapter)(
            request, key_limiter(request, limits), self.cache_keys
        )
        grouped, session = None, sessions.sessions[EXTRACTION_STAGE]
        if batch is not None:
            context = BatchContext(request, batch, direct, limits, cutoff)
            grouped = BatchStage(context, session=session)
        elif collecting:
            grouped = CollectingAdapter(direct, limits, session).stage
        return ResponsesExtraction(
            direct,
            slots=request.max_concurrent_requests,
            per_page=self.per_page,
            sessions=sessions,
            batch=grouped,
            budget=budget,
            dedupe=dedupe,
            collecting=collecting,
        )


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


def _paged(config: DocumentConfig) -> bool:
    formats = set(config.output_format.split(","))
    return bool(formats & {"json", "chunks"}) or config.paginate
