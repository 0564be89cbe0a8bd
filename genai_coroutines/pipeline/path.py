"""The pipeline's adapter, `PipelineAdapter`: one document through both stages, then its row.

It is composed of the Datalab path (`documents.path.DocumentsAdapter`: upload, poll, pages
in flight, submission rate) and an extraction stage (`stage.ExtractionStage`): the Responses
path (`responses_stage.ResponsesExtraction` over `responses.direct.DirectAdapter`: RPM/TPM
limiter, retries; or as Batch API lines) or Datalab's `/extract` per schema from the
conversion's checkpoint (`datalab_stage`), each stage under its own semaphore and on its own
session, and each finished stage journaled as a stage of the item. Every document ends as
one row:

    index, source, success, fields (the parsed extraction), failed_stage ("ocr" or
    "extraction", None on success), error, error_type, request_id / checkpoint_id
    (Datalab's ids), page_count, cost_breakdown (Datalab's, cents), usage (tokens, summed
    over the requests), model, service_tier, response_ids, retries (both stages),
    rate_limited, processing_time_secs, from_journal (the whole row came from the
    journal), and the stages' detail in `ocr` and `extraction` (attempts, timings,
    `from_journal` for a reused stage; `page_fields` with `per_page`; `duplicate_of` with
    `dedupe`: the documents whose identical requests answered its own, which its `usage`
    leaves out; `schemas` and `cost_cents` per stage with Datalab's extraction); a failed
    row adds the failed stage's `status`, `code` and `is_retriable`.

With a budget (`budget.StageBudget`) each stage request is reserved before it is sent and
settled when it ends (`stage.within_budget`).

Each stage's adapter returns its typed outcome (`engine.outcome`), so a row's failure is
the stage's real `Failure`, and the extraction's answer is parsed once; the row is the
pipeline's own outcome (`Row`), rendered by `render`.

On the Batch API the extraction stage answers `stage.Waiting` (its requests as lines of
the Batch API's grouped stage): `execute` hands them to the driver as an `engine.Deferred`
and the document leaves its driver slot; its row is made when every line is answered, from
what was kept of its OCR (`_OcrPart`, a few ids and counts, not its text). Such rows add
`batch_id` and `custom_id` after their keys, as the Responses Batch API's results do
(comma-joined when a `per_page` row's lines have several), and `batch_pending` (True) when a
line's batch could not be polled or read (`Extracted.pending`): the row ends `Pending` with
that line's error, its lines stay journaled, and a rerun with the journal collects that batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ..documents.job import Finished
from ..documents.path import DocumentsAdapter
from ..documents.prices import cents_of
from ..documents.sources import Upload
from ..engine import (
    Answered,
    BatchRun,
    Bill,
    Deferred,
    ErrorType,
    Failed,
    Failure,
    Ids,
    ItemEnd,
    ItemRun,
    Outcome,
    Pending,
    Result,
    Submission,
    log_event,
)
from ..engine.journal import request_digest
from ..engine.stages import StageKey
from ..engine.telemetry import Identity
from ..responses.prices import usage_tokens
from .budget import StageBudget
from .stage import (
    Extracted,
    ExtractionStage,
    Sessions,
    Stage,
    Waiting,
    journal_submission,
    within_budget,
)

logger = logging.getLogger("genai_coroutines.pipeline")  # the package's name: one logger

KIND = "pipeline"
"""The journal kind of a pipeline batch."""
OCR_STAGE = "ocr"
EXTRACTION_STAGE = "extraction"


@dataclass(frozen=True, slots=True)
class _OcrPart:
    """What a row needs of its document's OCR (what a document waiting on the Batch API
    keeps of it: not its text). `ran`: False for a document whose OCR never ran."""

    source: str | None = None
    ran: bool = False
    answered: bool = False
    bill: Bill | None = None
    attempts: int = 0
    rate_limited: int = 0
    request_id: str | None = None
    cost: dict[str, Any] | None = None
    checkpoint: str | None = None
    seconds: float | None = None
    reused: bool = False


def _ocr_part(upload: Upload, ocr: Stage[Finished]) -> _OcrPart:
    outcome = ocr.outcome
    payload = outcome.value.payload if isinstance(outcome, Answered) else {}
    cost, checkpoint = payload.get("cost_breakdown"), payload.get("checkpoint_id")
    return _OcrPart(
        upload.url or upload.filename,
        True,
        isinstance(outcome, Answered),
        outcome.bill,
        outcome.attempts,
        outcome.rate_limited,
        None if outcome.ids is None else outcome.ids.request,
        cost if isinstance(cost, dict) else None,
        checkpoint if isinstance(checkpoint, str) else None,
        ocr.seconds,
        ocr.reused,
    )


@dataclass(frozen=True, slots=True)
class Row:
    """A document's row (the pipeline's outcome value): its keys but `index` and
    `processing_time_secs`, rendered from the stages' outcomes, and the stage counts
    `PipelineSummary` reads."""

    keys: Mapping[str, Any]
    failed_stage: str | None
    ocr_reused: bool
    ocr_retries: int
    extraction_requests: int
    extraction_reused: int
    extraction_retries: int
    seconds: float
    stage_cents: Mapping[str, float] = field(default_factory=dict)
    """Datalab cents per stage ("ocr", "extract:<schema>"): what `PipelineSummary` splits."""
    batch: tuple[str | None, str | None] | None = None
    """On the Batch API: the `batch_id` and `custom_id` its row ends with (None: not)."""


class PipelineAdapter:
    """The pipeline's `Adapter` (see `engine.batch`): the Datalab path, then the extraction
    stage (`stage.ExtractionStage`: OpenAI's or Datalab's), each under its own bound and on
    its own session."""

    kind = KIND
    unit = "doc"
    logger = logger

    def __init__(
        self,
        ocr: DocumentsAdapter,
        extraction: ExtractionStage,
        *,
        ocr_slots: int,
        sessions: Sessions,
        budget: StageBudget | None = None,
        dedupe: bool = False,
    ) -> None:
        self.ocr = ocr
        self.extraction = extraction
        self.budget = budget
        self.sources: dict[int, str | None] | None = {} if dedupe else None
        """With `dedupe`: each document's own `source` until its row is out (a twin's row
        is its original's but for that)."""
        self.telemetry_identity = Identity(KIND, model=extraction.model)
        self.ocr_slots = asyncio.Semaphore(ocr_slots)
        self.sessions = sessions
        self.identity = extraction.identity
        self.ocred = 0
        self.extracted = 0

    # The driver's side.

    async def prepare(self, index: int, item: Any) -> Upload | Failure:
        upload = await self.ocr.prepare(index, item)
        if self.sources is not None and isinstance(upload, Upload):
            self.sources[index] = upload.url or upload.filename
        return upload

    def digest(self, upload: Upload) -> tuple[bytes, ...]:
        return (*self.ocr.digest(upload), self.identity)

    def input_digest(self, item: Any) -> None:
        """None: a document's request is only known once it is read (`prepare`)."""
        return None

    async def execute(self, run: ItemRun, upload: Upload) -> Outcome[Row] | Deferred:
        ocr = await self._ocr(run, upload)
        part = _ocr_part(upload, ocr)
        if not isinstance(ocr.outcome, Answered):
            failure = ocr.outcome.failure
            return self._row(run.started, part, Extracted(), OCR_STAGE, failure)
        self.ocred += 1
        run.batch.note(ocred=self.ocred)

        async def reconvert() -> Stage[Finished]:
            return await self._ocr(run, upload, again=True)

        done = await self.extraction.extract(run, ocr.outcome.value, reconvert)
        if isinstance(done, Waiting):
            return Deferred(done.stage, done.lines, self._then(run, part, done.then))
        if done.ocr is not None:
            part = _ocr_part(upload, done.ocr)
        return self._ended(run.batch, run.index, run.started, part, done)

    def _then(
        self, run: ItemRun, part: _OcrPart, then: Callable[[list[Outcome[Any]]], Extracted]
    ) -> Callable[[list[Outcome[Any]]], Outcome[Row]]:
        """The row of a document whose lines are answered. Its own function: the closure
        keeps the OCR's part and the stage's `then`, not the OCR's text."""
        batch, index, started = run.batch, run.index, run.started

        def row(outcomes: list[Outcome[Any]]) -> Outcome[Row]:
            return self._ended(batch, index, started, part, then(outcomes))

        return row

    def _ended(
        self, batch: BatchRun, index: int, started: float, part: _OcrPart, done: Extracted
    ) -> Outcome[Row]:
        """A document's row once its extraction ended (`Pending` when a batch may still
        answer it: the journal keeps its lines, and a rerun collects them)."""
        if done.failure is not None:
            failure = done.failure
            if failure.error_type == "invalid_response":  # the others' paths logged theirs
                _log_failed(index, EXTRACTION_STAGE, failure)
            return self._row(started, part, done, EXTRACTION_STAGE, failure)
        self.extracted += 1
        batch.note(extracted=self.extracted)
        return self._row(started, part, done, None, None)

    def replayed(self, run_note: Any, row: Mapping[str, Any]) -> None:
        """Count a row the journal answered in the bar's stage counts."""
        if self.sources is not None:
            self.sources.pop(row["index"], None)
        if row.get("from_journal") and row.get("success"):
            self.ocred += 1
            self.extracted += 1
            run_note(ocred=self.ocred, extracted=self.extracted)

    # The OCR.

    async def _ocr(self, run: ItemRun, upload: Upload, *, again: bool = False) -> Stage[Finished]:
        """The document's OCR (`StageKey(index, "ocr")`): journaled earlier, or run now
        (polling the job the journal holds under its key, if any: the extraction's settings
        do not enter its digest), and journaled at once as the item's "ocr" stage. `again`:
        converted afresh whatever the journal holds (its checkpoint is gone)."""
        key = StageKey(run.index, OCR_STAGE)
        journal = run.batch.journal
        digest = request_digest(*self.ocr.digest(upload))
        # `run.submission`: a job `resume=` names, or one a journal written before stages
        # holds under the item (see `engine.journal`).
        known = None if again else run.submission
        if journal is not None and not again:
            done = journal.stage_result(key, digest)
            if done is not None:
                revived = self.ocr.revive(done)
                if isinstance(revived, Answered):
                    if self.budget is not None:  # paid for by the run that journaled it
                        self.budget.charge(ItemEnd(run.index, revived, 0.0))
                    return Stage(revived, 0.0, reused=True)
            accepted = journal.submitted(key, digest)
            if known is None and accepted is not None:
                known = Submission(*accepted)
        started = time.perf_counter()
        async with self.ocr_slots:
            stage_run = ItemRun(
                run.index,
                self.sessions.batch(run, OCR_STAGE),
                started,
                known,
                on_submitted=journal_submission(run, key, digest),
                trace=run.trace,
            )
            outcome = await within_budget(
                self.budget, upload, known is not None, lambda: self.ocr.execute(stage_run, upload)
            )
        if isinstance(outcome, Answered):
            record = self.ocr.render(ItemEnd(run.index, outcome, started))
            run.batch.journaled(lambda j: j.record_stage(key, digest, record))
        return Stage(outcome, time.perf_counter() - started)

    # The row.

    def _row(
        self,
        started: float,
        ocr: _OcrPart,
        done: Extracted,
        failed_stage: str | None,
        failure: Failure | None,
    ) -> Outcome[Row]:
        """The document's outcome, its row rendered from its stages' outcomes."""
        ocr_done = failed_stage != OCR_STAGE
        ocr_bill = ocr.bill
        ocr_attempts = ocr.attempts
        ocr_rate_limited = ocr.rate_limited
        ocr_reused = ocr.reused
        ocr_retries = max(0, ocr_attempts - 1)
        request_id = ocr.request_id
        page_count = None if ocr_bill is None else ocr_bill.pages
        cost = ocr.cost
        stages = done.stages
        twins = sum(s.duplicate_of is not None for s in stages)
        usage, tier = done.usage, done.service_tier
        extraction_retries = sum(max(0, s.outcome.attempts - 1) for s in stages if not s.reused)
        fields = done.fields if failed_stage is None else None
        ocr_cents = None if ocr_bill is None else ocr_bill.cents
        stage_cents = {**done.cents, OCR_STAGE: (ocr_cents or 0.0) + done.cents.get(OCR_STAGE, 0.0)}
        retries = (0 if ocr_reused else ocr_retries) + extraction_retries
        rate_limited = ocr_rate_limited + sum(s.outcome.rate_limited for s in stages)
        keys: dict[str, Any] = {
            "source": ocr.source,
            "success": failed_stage is None,
            "fields": fields,
            "failed_stage": failed_stage,
            "error": None if failure is None else failure.message,
            "error_type": None if failure is None else failure.error_type,
            "request_id": request_id,
            "checkpoint_id": ocr.checkpoint,
            "page_count": page_count if ocr_done else None,
            "cost_breakdown": cost if ocr_done else None,
            "usage": usage,
            "model": self.extraction.model,
            "service_tier": tier,
            "response_ids": done.response_ids,
            "retries": retries,
            "rate_limited": rate_limited,
            "ocr": {
                "success": ocr.answered,
                "request_id": request_id,
                "page_count": page_count,
                "cost_breakdown": cost,
                "attempts": ocr_attempts,
                "retries": ocr_retries,
                "rate_limited": ocr_rate_limited,
                "processing_time_secs": ocr.seconds,
                "from_journal": ocr_reused,
            },
            "extraction": None
            if not ocr_done
            else {
                "requests": len(stages),
                "attempts": sum(s.outcome.attempts for s in stages),
                "retries": extraction_retries,
                "reused": sum(s.reused for s in stages),
                "latency_ms": sum(s.seconds for s in stages) * 1000.0,
                "usage": usage,
                **done.detail,
                **({"cost_cents": stage_cents} if done.cents else {}),
            },
        }
        if failure is not None:
            keys.update(status=failure.status, code=failure.code, is_retriable=failure.retriable)
        row = Row(
            keys,
            failed_stage,
            ocr_reused,
            ocr_retries,
            len(stages) - twins,
            sum(s.reused for s in stages),
            extraction_retries,
            time.perf_counter() - started,
            stage_cents=stage_cents if ocr_done and ocr_cents is not None else {},
            batch=done.batch,
        )
        bill = Bill(
            self.extraction.model or "",
            tier,
            *_tokens(usage),
            tokens=usage is not None,
            pages=page_count if ocr_done else None,
            cents=None if not ocr_done or ocr_cents is None else sum(stage_cents.values()),
        )
        attempts = 1 + retries if ocr.ran else 0
        # Tokens a batch answered are reported by the batch (`Summary.report_group`).
        ids = None if row.batch is None or row.batch[0] is None else Ids(group=row.batch[0])
        if failure is None:
            return Answered(row, attempts, rate_limited, bill, ids)
        if done.pending:
            return Pending(failure, attempts, rate_limited, bill, ids, value=row)
        return Failed(failure, attempts, rate_limited, bill, ids, value=row)

    def render(self, end: ItemEnd[Row]) -> Result:
        outcome = end.outcome
        row = outcome.value
        if row is None:  # never ran: unreadable, or the batch was stopped
            assert not isinstance(outcome, Answered)
            failure = outcome.failure
            _log_failed(end.index, OCR_STAGE, failure)
            failed = self._row(end.started, _OcrPart(), Extracted(), OCR_STAGE, failure)
            assert isinstance(failed, Failed) and failed.value is not None
            row = failed.value
        result = {"index": end.index, **row.keys, "processing_time_secs": row.seconds}
        if row.batch is not None:
            result["batch_id"], result["custom_id"] = row.batch
        if isinstance(outcome, Pending):  # as the Responses Batch API path marks its own
            result["batch_pending"] = True
        if self.sources is not None:
            source = self.sources.pop(end.index, None)
            if end.duplicate_of is not None:
                result["source"] = source
        return result

    def revive(self, record: Mapping[str, Any]) -> Outcome[Row]:
        get = record.get
        ocr, extraction = get("ocr") or {}, get("extraction") or {}
        keys = {k: v for k, v in record.items() if k not in _RENDERED}
        reused = int(extraction.get("requests") or 0) - len(extraction.get("duplicate_of") or ())
        cents = cents_of(get("cost_breakdown"))
        by_stage = extraction.get("cost_cents")
        if not isinstance(by_stage, dict):
            by_stage = {} if cents is None else {OCR_STAGE: cents}
        row = Row(
            keys,
            get("failed_stage"),
            True,
            int(ocr.get("retries") or 0),
            reused,
            reused,
            int(extraction.get("retries") or 0),
            float(get("processing_time_secs") or 0.0),
            stage_cents=by_stage,
            batch=(get("batch_id"), get("custom_id")) if "batch_id" in record else None,
        )
        usage = get("usage")
        pages = get("page_count")
        bill = Bill(
            self.extraction.model or "",
            get("service_tier"),
            *_tokens(usage),
            tokens=isinstance(usage, dict),
            pages=pages if isinstance(pages, int) else None,
            cents=sum(by_stage.values()) if by_stage else cents,
        )
        attempts = 1 + int(get("retries") or 0)
        rate_limited = int(get("rate_limited") or 0)
        if get("success"):
            return Answered(row, attempts, rate_limited, bill)
        kind = cast(ErrorType, get("error_type") or "api_error")
        failure = Failure(str(get("error")), kind, bool(get("is_retriable")), get("status"))
        return Failed(failure, attempts, rate_limited, bill, value=row)


_RENDERED = frozenset({"index", "processing_time_secs", "batch_id", "custom_id", "batch_pending"})
"""A row's keys `render` writes besides `Row.keys`."""


def _tokens(usage: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0) if usage is None else usage_tokens(usage)


def _log_failed(index: int, stage: str, failure: Failure) -> None:
    log_event(
        logger,
        logging.WARNING,
        "task_failed",
        index=index,
        stage=stage,
        error_type=failure.error_type,
        error=failure.message,
    )
