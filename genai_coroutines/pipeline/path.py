"""The pipeline's adapter, `PipelineAdapter`: one document through both stages, then its row.

It is composed of the Datalab path (`documents.path.DocumentsAdapter`: upload, poll, pages
in flight, submission rate) and the Responses direct path (`responses.direct.DirectAdapter`:
RPM/TPM limiter, retries), each stage under its own semaphore and on its own session,
and each finished stage journaled as a stage of the item. Every document ends as one row:

    index, source, success, fields (the parsed extraction), failed_stage ("ocr" or
    "extraction", None on success), error, error_type, request_id / checkpoint_id
    (Datalab's ids), page_count, cost_breakdown (Datalab's, cents), usage (tokens, summed
    over the requests), model, service_tier, response_ids, retries (both stages),
    rate_limited, processing_time_secs, from_journal (the whole row came from the
    journal), and the stages' detail in `ocr` and `extraction` (attempts, timings,
    `from_journal` for a reused stage; `page_fields` with `per_page`; `duplicate_of` with
    `dedupe`: the documents whose identical requests answered its own, which its `usage`
    leaves out); a failed row adds the failed stage's `status`, `code` and `is_retriable`.

With a budget (`budget.StageBudget`) each stage request is reserved before it is sent and
settled when it ends (`_paid`).

Each stage's adapter returns its typed outcome (`engine.outcome`), so a row's failure is
the stage's real `Failure`, and the extraction's answer is parsed once; the row is the
pipeline's own outcome (`Row`), rendered by `render`.

On the Batch API (`batch`: the Batch API's grouped stage), a document's extraction
requests (one per page with `per_page`, each under `StageKey(index, "extraction", page)`)
are lines of that stage: `execute` returns them as an `engine.Deferred` once the OCR is in,
and the document leaves its driver slot; its row is made when every line is answered
(`then`), from what was kept of its OCR (`_OcrPart`, a few ids and counts, not its text).
Such rows add `batch_id` and `custom_id` after their keys, as the Responses Batch API's
results do (comma-joined when a `per_page` row's lines have several), and `batch_pending`
(True) when a line's batch could not be polled or read: the row fails with that line's
error, its lines stay journaled, and a rerun with the journal collects that batch.

A rerun without `batch_api` of a journal whose extraction requests wait on batches
(`collecting`) collects them instead of paying twice: a request a journaled batch holds is
a line of the collecting stage (`responses.batch.CollectingAdapter.stage`), the others are
sent now, and a row none of the batches answered is the synchronous pipeline's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import orjson

from ..documents.job import Finished
from ..documents.parse import payload_text
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
    GroupedStage,
    Ids,
    ItemEnd,
    ItemRun,
    Line,
    Outcome,
    Pending,
    Result,
    Submission,
    log_event,
)
from ..engine.journal import request_digest
from ..engine.stages import StageKey
from ..engine.telemetry import Identity
from ..responses.direct import DirectAdapter, Prepared
from ..responses.parse import answer_text
from ..responses.prices import usage_tokens
from ..responses.results import Answer
from .budget import StageBudget
from .fields import fields_of, merge_fields
from .pages import payload_pages
from .shared import SharedRequests
from .slots import StageRun, StageSlot

T = TypeVar("T")

logger = logging.getLogger("genai_coroutines.pipeline")  # the package's name: one logger

KIND = "pipeline"
"""The journal kind of a pipeline batch."""
OCR_STAGE = "ocr"
EXTRACTION_STAGE = "extraction"


@dataclass(slots=True)
class Stage(Generic[T]):
    """One request of a document (its OCR, or an extraction): its outcome as the adapter
    gave it, how long it took this run, and whether the journal answered it."""

    outcome: Outcome[T]
    seconds: float
    reused: bool = False
    duplicate_of: int | None = None
    """With `dedupe`: the document whose identical request answered this one (it cost
    nothing here; see `shared`)."""


@dataclass(slots=True)
class _Extractions:
    """What one document's extraction came to."""

    stages: list[Stage[Answer]] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    failure: Failure | None = None


Extracted = tuple[Stage[Answer] | None, dict[str, Any] | None, Failure | None]
"""One extraction request's end: its stage, parsed fields, or why there are none."""


@dataclass(frozen=True, slots=True)
class _Request:
    """An extraction request to send: its stage key, body and journal digest."""

    key: StageKey
    prepared: Prepared
    digest: str


@dataclass(frozen=True, slots=True)
class _Sent:
    """An extraction request sent as a Batch API line, as its document keeps it."""

    key: StageKey
    digest: str


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
    batch: tuple[str | None, str | None] | None = None
    """On the Batch API: the `batch_id` and `custom_id` its row ends with (None: not)."""


class PipelineAdapter:
    """The pipeline's `Adapter` (see `engine.batch`): the Datalab path, then the Responses
    direct path, each under its own bound and on its own session."""

    kind = KIND
    unit = "doc"
    logger = logger

    def __init__(
        self,
        ocr: DocumentsAdapter,
        extraction: DirectAdapter,
        *,
        ocr_slots: int,
        extraction_slots: int,
        per_page: bool = False,
        ocr_session: Any = None,
        extraction_session: Any = None,
        batch: GroupedStage | None = None,
        budget: StageBudget | None = None,
        dedupe: bool = False,
        collecting: bool = False,
    ) -> None:
        self.ocr = ocr
        self.extraction = extraction
        self.budget = budget
        self.shared = SharedRequests() if dedupe else None
        self.sources: dict[int, str | None] | None = {} if dedupe else None
        """With `dedupe`: each document's own `source` until its row is out (a twin's row
        is its original's but for that)."""
        self.telemetry_identity = Identity(KIND, model=extraction.model)
        self.per_page = per_page
        self.ocr_slots = asyncio.Semaphore(ocr_slots)
        self.extraction_slots = asyncio.Semaphore(extraction_slots)
        self.sessions = {OCR_STAGE: ocr_session, EXTRACTION_STAGE: extraction_session}
        self.batch = batch
        """The Batch API's stage the extraction requests go to as lines (None: sent now)."""
        self.collecting = collecting
        """`batch` only collects: only the requests a journaled batch holds go to it."""
        self._batches: dict[str, tuple[BatchRun, BatchRun]] = {}
        self.identity = orjson.dumps(
            {"extraction": extraction.template.body("").decode(), "per_page": per_page}
        )
        """What besides the document and OCR settings decides a row (its journal digest)."""
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

    async def execute(self, run: ItemRun, upload: Upload) -> Outcome[Row] | Deferred:
        ocr = await self._ocr(run, upload)
        part = _ocr_part(upload, ocr)
        if not isinstance(ocr.outcome, Answered):
            failure = ocr.outcome.failure
            return self._row(run.started, part, _Extractions(), OCR_STAGE, failure)
        self.ocred += 1
        run.batch.note(ocred=self.ocred)
        texts = self._texts(ocr.outcome.value)
        if self.batch is not None:
            return await self._extract_in_batch(run, part, texts)
        parts = await asyncio.gather(
            *(self._extract_one(run, page, text) for page, text in enumerate(texts))
        )
        return self._ended(run.batch, run.index, run.started, part, parts)

    def _ended(
        self,
        batch: BatchRun,
        index: int,
        started: float,
        part: _OcrPart,
        parts: Iterable[Extracted],
    ) -> Outcome[Row]:
        """A document's row once its extraction requests ended. A line whose batch may
        still answer it (`Pending`) makes the row `Pending` with that line's failure: the
        journal keeps its line, and a rerun collects that batch rather than paying again."""
        done = _Extractions()
        waiting = False
        for stage, fields, failure in parts:
            if stage is not None:
                done.stages.append(stage)
            if failure is not None and not waiting:
                waiting = stage is not None and isinstance(stage.outcome, Pending)
                if waiting or done.failure is None:
                    done.failure = failure
            if fields is not None:
                done.fields.append(fields)
        if done.failure is not None:
            failure = done.failure
            if failure.error_type == "invalid_response":  # the others' paths logged theirs
                _log_failed(index, EXTRACTION_STAGE, failure)
            return self._row(started, part, done, EXTRACTION_STAGE, failure, pending=waiting)
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

    # The stages.

    def _batch(self, run: ItemRun, stage: str) -> BatchRun:
        """The batch's shared state with this stage's session (its API's key)."""
        cached = self._batches.get(stage)
        if cached is None or cached[0] is not run.batch:
            session = self.sessions[stage] or run.batch.session
            cached = (run.batch, dataclasses.replace(run.batch, session=session))
            self._batches[stage] = cached
        return cached[1]

    async def _ocr(self, run: ItemRun, upload: Upload) -> Stage[Finished]:
        """The document's OCR (`StageKey(index, "ocr")`): journaled earlier, or run now
        (polling the job the journal holds under its key, if any: the extraction's settings
        do not enter its digest), and journaled at once as the item's "ocr" stage."""
        key = StageKey(run.index, OCR_STAGE)
        journal = run.batch.journal
        digest = request_digest(*self.ocr.digest(upload))
        # `run.submission`: a job `resume=` names, or one a journal written before stages
        # holds under the item (see `engine.journal`).
        known = run.submission
        if journal is not None:
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
                self._batch(run, OCR_STAGE),
                started,
                known,
                on_submitted=_journal_submission(run, key, digest),
                trace=run.trace,
            )
            outcome = await self._paid(
                upload, known is not None, lambda: self.ocr.execute(stage_run, upload)
            )
        if isinstance(outcome, Answered):
            record = self.ocr.render(ItemEnd(run.index, outcome, started))
            run.batch.journaled(lambda j: j.record_stage(key, digest, record))
        return Stage(outcome, time.perf_counter() - started)

    def _texts(self, ocr: Finished) -> list[str]:
        """The texts to extract from: each page's with `per_page`, else the whole text."""
        if self.per_page:
            return payload_pages(ocr.payload, ocr.body)
        return [payload_text(ocr.payload, ocr.body)]

    async def _extract_one(self, run: ItemRun, page: int, text: str) -> Extracted:
        """One extraction request (a page's, with `per_page`), sent now."""
        planned = await self._plan(run, page, text)
        if not isinstance(planned, _Request):
            return planned
        return await self._send_now(run, planned)

    async def _send_now(self, run: ItemRun, planned: _Request) -> Extracted:
        key, digest, started = planned.key, planned.digest, time.perf_counter()

        def send() -> Awaitable[Outcome[Answer]]:
            return self._send(run, planned.prepared, started, key, digest)

        shared, sender = self.shared, None
        if shared is None:
            outcome = await send()
        else:
            outcome, sender = await shared.run(digest, run.index, send)
            if sender is not None:  # another document's identical request: no cost here
                outcome = dataclasses.replace(outcome, attempts=0, rate_limited=0)
        seconds = time.perf_counter() - started
        return self._extracted(run.batch, key, digest, outcome, seconds, started, sender)

    async def _extract_in_batch(
        self, run: ItemRun, part: _OcrPart, texts: list[str]
    ) -> Outcome[Row] | Deferred:
        """The document's extraction requests as lines of the Batch API's stage; its row is
        made once they are all answered (those the journal or the text settle need none)."""
        assert self.batch is not None
        planned = [await self._plan(run, page, text) for page, text in enumerate(texts)]
        if self.collecting:
            planned = list(await asyncio.gather(*(self._collected(run, p) for p in planned)))
        lines = [Line(p.key, p.prepared, p.digest) for p in planned if isinstance(p, _Request)]
        if not lines:
            ended = [p for p in planned if not isinstance(p, _Request)]
            return self._ended(run.batch, run.index, run.started, part, ended)
        kept = [_Sent(p.key, p.digest) if isinstance(p, _Request) else p for p in planned]
        return Deferred(self.batch, lines, self._then(run, part, kept))

    async def _collected(self, run: ItemRun, planned: _Request | Extracted) -> _Request | Extracted:
        """On a collecting rerun: a request a journaled batch holds stays a line (to collect),
        any other is sent now."""
        if not isinstance(planned, _Request):
            return planned
        journal = run.batch.journal
        known = None if journal is None else journal.group_line(planned.key, planned.digest)
        if known is not None and known.job_id is not None:
            return planned
        return await self._send_now(run, planned)

    def _then(
        self, run: ItemRun, part: _OcrPart, kept: list[_Sent | Extracted]
    ) -> Callable[[list[Outcome[Any]]], Outcome[Row]]:
        """The row of a document whose lines are answered (in `kept`'s order). Its own
        function: the closure keeps `kept` and the OCR's part, not the requests' bodies."""
        batch, index, started, sent = run.batch, run.index, run.started, time.perf_counter()

        def then(outcomes: list[Outcome[Any]]) -> Outcome[Row]:
            seconds = time.perf_counter() - sent
            answers = iter(outcomes)
            parts = [
                self._extracted(batch, each.key, each.digest, next(answers), seconds, sent)
                if isinstance(each, _Sent)
                else each
                for each in kept
            ]
            return self._ended(batch, index, started, part, parts)

        return then

    async def _plan(self, run: ItemRun, page: int, text: str) -> _Request | Extracted:
        """The request of one page's extraction, or its end without one: the journal's
        answer, an empty text, a request that cannot be made."""
        if not text.strip():
            return None, None, Failure("the OCR text is empty", "invalid_input", False)
        prepared = await self.extraction.prepare(run.index, text)
        if isinstance(prepared, Failure):
            return None, None, prepared
        key = StageKey(run.index, EXTRACTION_STAGE, page)
        digest = request_digest(*self.extraction.digest(prepared))
        journal = run.batch.journal
        if journal is not None:
            done = journal.stage_result(key, digest)
            if done is not None:
                revived = self.extraction.revive(done)
                if isinstance(revived, Answered):
                    twin = done.get("duplicate_of")
                    reused = Stage(revived, 0.0, True, twin)
                    if twin is None and self.budget is not None:  # paid for by its run
                        self.budget.charge(ItemEnd(run.index, revived, 0.0))
                    if twin is None and self.shared is not None:
                        self.shared.answered(digest, run.index, revived)
                    return reused, fields_of(answer_text(revived.value.raw)), None
        return _Request(key, prepared, digest)

    def _extracted(
        self,
        batch: BatchRun,
        key: StageKey,
        digest: str,
        outcome: Outcome[Answer],
        seconds: float,
        started: float,
        sender: int | None = None,
    ) -> Extracted:
        """An extraction request's outcome parsed into fields, journaled as its stage
        (`sender`: the document whose identical request answered it, with `dedupe`)."""
        stage = Stage(outcome, seconds, duplicate_of=sender)
        if not isinstance(outcome, Answered):
            unsent = outcome.failure.error_type == "budget_exceeded"  # no request to count
            return None if unsent else stage, None, outcome.failure
        text_out = answer_text(outcome.value.raw)
        fields = fields_of(text_out)
        if fields is None:
            failure = Failure(
                f"the extraction is not a JSON object: {text_out[:200]!r}",
                "invalid_response",
                False,
            )
            return stage, None, failure
        record = self.extraction.render(ItemEnd(key.index, outcome, started))
        if sender is not None:
            record["duplicate_of"] = sender
        batch.journaled(lambda j: j.record_stage(key, digest, record))
        return stage, fields, None

    async def _send(
        self, run: ItemRun, prepared: Prepared, started: float, key: StageKey, digest: str
    ) -> Outcome[Answer]:
        """One extraction request. In background mode (`BackgroundAdapter`) its response id
        is journaled under `key` when the POST returns, and a rerun polls the response the
        journal holds instead of POSTing it again; the poll leaves the extraction's slot."""
        journal = run.batch.journal
        accepted = None if journal is None else journal.submitted(key, digest)
        async with StageSlot(self.extraction_slots) as slot:
            stage_run = StageRun(
                run.index,
                self._batch(run, EXTRACTION_STAGE),
                started,
                None if accepted is None else Submission(*accepted),
                on_submitted=_journal_submission(run, key, digest),
                trace=run.trace,
                slot=slot,
            )
            return await self._paid(
                prepared, accepted is not None, lambda: self.extraction.execute(stage_run, prepared)
            )

    async def _paid(
        self, request: Upload | Prepared, paid: bool, send: Callable[[], Awaitable[Outcome[T]]]
    ) -> Outcome[T]:
        """`send()` a stage request within the budget, if any: its estimate held before it
        is sent (`paid`: the API accepted it earlier, so it is polled whatever the budget),
        what it cost spent when it ends; unsent, `budget_exceeded`, once the budget could
        be passed."""
        budget = self.budget
        if budget is None:
            return await send()
        estimate, cost = budget.weigh(request)
        held = await budget.hold(estimate, paid=paid)
        if isinstance(held, Failure):
            return Failed(held, 0)
        try:
            outcome = await send()
        except BaseException:
            budget.release(held)
            raise
        budget.spend(held, cost(outcome))
        return outcome

    # The row.

    def _row(
        self,
        started: float,
        ocr: _OcrPart,
        done: _Extractions,
        failed_stage: str | None,
        failure: Failure | None,
        *,
        pending: bool = False,
    ) -> Outcome[Row]:
        """The document's outcome, its row rendered from its stages' outcomes (`pending`:
        a batch may still answer its extraction, see `_ended`)."""
        ocr_done = failed_stage != OCR_STAGE
        ocr_bill = ocr.bill
        ocr_attempts = ocr.attempts
        ocr_rate_limited = ocr.rate_limited
        ocr_reused = ocr.reused
        ocr_retries = max(0, ocr_attempts - 1)
        request_id = ocr.request_id
        page_count = None if ocr_bill is None else ocr_bill.pages
        cost = ocr.cost
        checkpoint = ocr.checkpoint
        stages = done.stages
        answers = [s.outcome for s in stages if isinstance(s.outcome, Answered)]
        twins = [s.duplicate_of for s in stages if s.duplicate_of is not None]
        billed = [s.outcome for s in stages if s.duplicate_of is None]
        usage = _summed_usage([a.value.usage for a in billed if isinstance(a, Answered)])
        extraction_retries = sum(max(0, s.outcome.attempts - 1) for s in stages if not s.reused)
        tier = next((a.value.service_tier for a in answers if a.value.service_tier), None)
        fields = merge_fields(done.fields) if failed_stage is None else None
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
            "checkpoint_id": checkpoint,
            "page_count": page_count if ocr_done else None,
            "cost_breakdown": cost if ocr_done else None,
            "usage": usage,
            "model": self.extraction.model,
            "service_tier": tier,
            "response_ids": [answer.value.response_id for answer in answers],
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
                **({"page_fields": done.fields} if self.per_page else {}),
                **({"duplicate_of": twins} if twins else {}),
            },
        }
        if failure is not None:
            keys.update(status=failure.status, code=failure.code, is_retriable=failure.retriable)
        row = Row(
            keys,
            failed_stage,
            ocr_reused,
            ocr_retries,
            len(stages) - len(twins),
            sum(s.reused for s in stages),
            extraction_retries,
            time.perf_counter() - started,
            self._batch_of(stages),
        )
        bill = Bill(
            self.extraction.model,
            tier,
            *_tokens(usage),
            tokens=usage is not None,
            pages=page_count if ocr_done else None,
            cents=None if not ocr_done or ocr_bill is None else ocr_bill.cents,
        )
        attempts = 1 + retries if ocr.ran else 0
        # Tokens a batch answered are reported by the batch (`Summary.report_group`).
        ids = None if row.batch is None or row.batch[0] is None else Ids(group=row.batch[0])
        if failure is None:
            return Answered(row, attempts, rate_limited, bill, ids)
        if pending:
            return Pending(failure, attempts, rate_limited, bill, ids, value=row)
        return Failed(failure, attempts, rate_limited, bill, ids, value=row)

    def _batch_of(self, stages: Iterable[Stage[Answer]]) -> tuple[str | None, str | None] | None:
        """A row's `Row.batch`: None off the Batch API, and on a collecting rerun for a row
        no batch answered (it is the synchronous pipeline's)."""
        if self.batch is None:
            return None
        ids = _batch_ids(stages)
        return None if self.collecting and ids == (None, None) else ids

    def render(self, end: ItemEnd[Row]) -> Result:
        outcome = end.outcome
        row = outcome.value
        if row is None:  # never ran: unreadable, or the batch was stopped
            assert not isinstance(outcome, Answered)
            failure = outcome.failure
            _log_failed(end.index, OCR_STAGE, failure)
            failed = self._row(end.started, _OcrPart(), _Extractions(), OCR_STAGE, failure)
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
        row = Row(
            keys,
            get("failed_stage"),
            True,
            int(ocr.get("retries") or 0),
            reused,
            reused,
            int(extraction.get("retries") or 0),
            float(get("processing_time_secs") or 0.0),
            (get("batch_id"), get("custom_id")) if "batch_id" in record else None,
        )
        usage = get("usage")
        pages = get("page_count")
        bill = Bill(
            self.extraction.model,
            get("service_tier"),
            *_tokens(usage),
            tokens=isinstance(usage, dict),
            pages=pages if isinstance(pages, int) else None,
            cents=cents_of(get("cost_breakdown")),
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


def _batch_ids(stages: Iterable[Stage[Answer]]) -> tuple[str | None, str | None]:
    """A Batch API row's `batch_id` and `custom_id`: those of the lines that answered it
    this run, comma-joined when several (None: none did)."""
    groups: dict[str, None] = {}
    lines = []
    for stage in stages:
        ids = stage.outcome.ids
        if not stage.reused and ids is not None and ids.line is not None:
            lines.append(ids.line)
            if ids.group is not None:
                groups[ids.group] = None
    return (",".join(groups) or None, ",".join(lines) or None)


def _journal_submission(run: ItemRun, key: StageKey, digest: str) -> Callable[[Submission], bool]:
    """A stage's `ItemRun.on_submitted`: journal the work the API accepted under the stage's
    key, so a rerun polls it instead of buying it again."""

    def journal(submission: Submission) -> bool:
        return run.batch.journaled(
            lambda j: j.record_submission(
                key, digest, submission.request_id, submission.request_check_url
            )
        )

    return journal


def _tokens(usage: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    return (0, 0, 0, 0) if usage is None else usage_tokens(usage)


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
