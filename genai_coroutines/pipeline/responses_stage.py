"""The OpenAI extraction stage, `ResponsesExtraction` (a `stage.ExtractionStage`).

The OCR text (each page's with `per_page`) goes to `POST /responses`, each request
journaled as `StageKey(index, "extraction", page)` and parsed into fields (`per_page`:
merged). A request is sent now (direct or background, within the budget if any; with
`dedupe`, identical requests of different documents once, `shared`), or, on the Batch API
(`batch`: its grouped stage), becomes a line: `extract` answers `stage.Waiting` with the
document's lines, and `then` parses their outcomes once the batches answered them, keeping
meanwhile only each line's key and digest (`_Sent`, and its estimate held on the budget
before it went into a file, settled in `then`), not its body. A line whose batch could not
be polled or read (`Pending`) makes the extraction `pending`: its row ends `Pending`.

A rerun without `batch_api` of a journal whose extraction requests wait on batches
(`collecting`, `batch` then `responses.batch.CollectingAdapter.stage`) collects them instead
of paying twice: a request a journaled batch holds is a line of that stage, the others are
sent now, and a row none of the batches answered is the synchronous pipeline's.

Identical requests of different documents are not shared on the Batch API: a line answers
the one document whose `Deferred` holds it, and a document waiting on another's line would
hold its driver slot for the batch's window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..documents.job import Finished
from ..documents.parse import payload_text
from ..engine import (
    Answered,
    BatchRun,
    Failure,
    GroupedStage,
    ItemEnd,
    ItemRun,
    Line,
    Outcome,
    Pending,
)
from ..engine.journal import request_digest
from ..engine.stages import StageKey
from ..responses.direct import DirectAdapter, Prepared
from ..responses.parse import answer_text
from ..responses.results import Answer
from .budget import StageBudget
from .fields import fields_of, merge_fields
from .pages import payload_pages
from .path import EXTRACTION_STAGE
from .shared import SharedRequests
from .slots import StageSlot
from .stage import (
    Extracted,
    Reconvert,
    Sessions,
    Stage,
    Waiting,
    within_budget,
)

_Ended = tuple[Stage[Answer] | None, dict[str, Any] | None, Failure | None]
"""One extraction request's end: its stage, parsed fields, or why there are none."""


@dataclass(frozen=True, slots=True)
class _Request:
    """An extraction request to send: its stage key, body and journal digest."""

    key: StageKey
    prepared: Prepared
    digest: str


@dataclass(frozen=True, slots=True)
class _Sent:
    """An extraction request sent as a Batch API line, as its document keeps it (`held`:
    its estimate on the budget, if any)."""

    key: StageKey
    digest: str
    held: float | None = None


class ResponsesExtraction:
    """The OpenAI extraction stage (see the module docstring) of one pipeline batch."""

    def __init__(
        self,
        adapter: DirectAdapter,
        *,
        slots: int,
        per_page: bool,
        sessions: Sessions,
        batch: GroupedStage | None = None,
        budget: StageBudget | None = None,
        dedupe: bool = False,
        collecting: bool = False,
    ) -> None:
        self.adapter = adapter
        self.model: str | None = adapter.model
        self.slots = slots
        self.semaphore = asyncio.Semaphore(slots)
        self.per_page = per_page
        self.sessions = sessions
        self.batch = batch
        """The Batch API's stage the requests go to as lines (None: sent now)."""
        self.collecting = collecting
        """`batch` only collects: only the requests a journaled batch holds go to it."""
        self.budget = budget
        self.shared = SharedRequests() if dedupe else None
        self.identity = orjson.dumps(
            {"extraction": adapter.template.body("").decode(), "per_page": per_page}
        )

    async def extract(
        self, run: ItemRun, ocr: Finished, reconvert: Reconvert
    ) -> Extracted | Waiting:
        if self.per_page:
            texts = payload_pages(ocr.payload, ocr.body)
        else:
            texts = [payload_text(ocr.payload, ocr.body)]
        if self.batch is not None:
            return await self._in_batch(run, self.batch, texts)
        parts = await asyncio.gather(
            *(self._extract_one(run, page, text) for page, text in enumerate(texts))
        )
        return self._done(parts)

    def _done(self, parts: Iterable[_Ended]) -> Extracted:
        """The document's extraction once each of its requests ended."""
        done = Extracted()
        found: list[dict[str, Any]] = []
        for stage, fields, failure in parts:
            if stage is not None:
                done.stages.append(stage)
            if failure is not None and not done.pending:  # a pending line's failure first
                done.pending = stage is not None and isinstance(stage.outcome, Pending)
                if done.pending or done.failure is None:
                    done.failure = failure
            if fields is not None:
                found.append(fields)
        answers = [s.outcome for s in done.stages if isinstance(s.outcome, Answered)]
        billed = [s.outcome for s in done.stages if s.duplicate_of is None]
        done.usage = _summed_usage([a.value.usage for a in billed if isinstance(a, Answered)])
        done.service_tier = next(
            (a.value.service_tier for a in answers if a.value.service_tier), None
        )
        done.response_ids = [answer.value.response_id for answer in answers]
        done.fields = merge_fields(found)
        if self.per_page:
            done.detail["page_fields"] = found
        twins = [s.duplicate_of for s in done.stages if s.duplicate_of is not None]
        if twins:
            done.detail["duplicate_of"] = twins
        if self.batch is not None:
            ids = _batch_ids(done.stages)
            # collecting: a row no batch answered is the synchronous pipeline's
            done.batch = None if self.collecting and ids == (None, None) else ids
        return done

    async def _extract_one(self, run: ItemRun, page: int, text: str) -> _Ended:
        """One extraction request (a page's, with `per_page`), sent now."""
        planned = await self._plan(run, page, text)
        if not isinstance(planned, _Request):
            return planned
        return await self._send_now(run, planned)

    async def _send_now(self, run: ItemRun, planned: _Request) -> _Ended:
        """An extraction request sent now (once, with `dedupe`, for identical ones)."""
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
        return self._parsed(run.batch, key, digest, outcome, seconds, started, sender)

    async def _in_batch(
        self, run: ItemRun, stage: GroupedStage, texts: list[str]
    ) -> Extracted | Waiting:
        """The document's extraction requests as lines of the Batch API's stage; its
        extraction is made once they are all answered (those the journal or the text
        settle need none)."""
        planned = [await self._plan(run, page, text) for page, text in enumerate(texts)]
        if self.collecting:
            planned = list(await asyncio.gather(*(self._collected(run, p) for p in planned)))
        kept: list[_Sent | _Ended] = []
        lines: list[Line] = []
        for each in planned:
            if not isinstance(each, _Request):
                kept.append(each)
                continue
            held = await self._hold(run, each)
            if isinstance(held, Failure):  # the budget is reached: not sent
                kept.append((None, None, held))
                continue
            lines.append(Line(each.key, each.prepared, each.digest))
            kept.append(_Sent(each.key, each.digest, held))
        if not lines:
            return self._done(each for each in kept if not isinstance(each, _Sent))
        return Waiting(stage, lines, self._then(run.batch, kept))

    async def _collected(self, run: ItemRun, planned: _Request | _Ended) -> _Request | _Ended:
        """On a collecting rerun: a request a journaled batch holds stays a line (to be
        collected), any other is sent now."""
        if not isinstance(planned, _Request) or _in_journaled_batch(run, planned):
            return planned
        return await self._send_now(run, planned)

    async def _hold(self, run: ItemRun, planned: _Request) -> float | Failure | None:
        """A line's estimate held on the budget, if any, before it goes into a file (at the
        Batch API's share: `stage_budget`). One a journaled batch holds is admitted whatever
        the budget, being accepted already: it is paid for when this run collects it."""
        if self.budget is None:
            return None
        estimate, _ = self.budget.weigh(planned.prepared)
        return await self.budget.hold(estimate, paid=_in_journaled_batch(run, planned))

    def _settle(self, held: float | None, outcome: Outcome[Any]) -> None:
        """A line's estimate replaced by what its answer cost (the tier that served it);
        released for a line that ended unanswered (the Batch API bills only the lines it
        answers; a pending one is paid for by the rerun that collects it)."""
        budget = self.budget
        if budget is None or held is None:
            return
        if isinstance(outcome, Answered):
            budget.spend(held, budget.pricing.extraction.cost(outcome))
        else:
            budget.release(held)

    def _then(
        self, batch: BatchRun, kept: list[_Sent | _Ended]
    ) -> Callable[[list[Outcome[Any]]], Extracted]:
        """The extraction of a document whose lines are answered (in `kept`'s order). Its
        own function: the closure keeps `kept`, not the requests' bodies."""
        sent = time.perf_counter()

        def then(outcomes: list[Outcome[Any]]) -> Extracted:
            seconds = time.perf_counter() - sent
            answers = iter(outcomes)
            ended: list[_Ended] = []
            for each in kept:
                if isinstance(each, _Sent):
                    outcome = next(answers)
                    self._settle(each.held, outcome)
                    each = self._parsed(batch, each.key, each.digest, outcome, seconds, sent)
                ended.append(each)
            return self._done(ended)

        return then

    async def _plan(self, run: ItemRun, page: int, text: str) -> _Request | _Ended:
        """The request of one page's extraction, or its end without one: the journal's
        answer, an empty text, a request that cannot be made."""
        if not text.strip():
            return None, None, Failure("the OCR text is empty", "invalid_input", False)
        prepared = await self.adapter.prepare(run.index, text)
        if isinstance(prepared, Failure):
            return None, None, prepared
        key = StageKey(run.index, EXTRACTION_STAGE, page)
        digest = request_digest(*self.adapter.digest(prepared))
        journal = run.batch.journal
        if journal is not None:
            done = journal.stage_result(key, digest)
            if done is not None:
                revived = self.adapter.revive(done)
                if isinstance(revived, Answered):
                    twin = done.get("duplicate_of")
                    reused = Stage(revived, 0.0, True, twin)
                    if twin is None and self.budget is not None:  # paid for by its run
                        self.budget.charge(ItemEnd(run.index, revived, 0.0))
                    if twin is None and self.shared is not None:
                        self.shared.answered(digest, run.index, revived)
                    return reused, fields_of(answer_text(revived.value.raw)), None
        return _Request(key, prepared, digest)

    def _parsed(
        self,
        batch: BatchRun,
        key: StageKey,
        digest: str,
        outcome: Outcome[Answer],
        seconds: float,
        started: float,
        sender: int | None = None,
    ) -> _Ended:
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
        record = self.adapter.render(ItemEnd(key.index, outcome, started))
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
        async with StageSlot(self.semaphore) as slot:
            stage_run = self.sessions.stage_run(
                run, EXTRACTION_STAGE, key, digest, started, accepted, slot
            )
            return await within_budget(
                self.budget,
                prepared,
                accepted is not None,
                lambda: self.adapter.execute(stage_run, prepared),
            )


def _in_journaled_batch(run: ItemRun, planned: _Request) -> bool:
    """Whether a batch an earlier run created holds this request as a line (a rerun
    collects it: it is neither sent nor paid for again)."""
    journal = run.batch.journal
    known = None if journal is None else journal.group_line(planned.key, planned.digest)
    return known is not None and known.job_id is not None


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
