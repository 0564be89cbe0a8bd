"""The pipeline's adapter, `PipelinePath`: one document through both stages, then its row.

It is composed of the Datalab path (`documents.path.DocumentsPath`: upload, poll, pages
in flight, submission rate) and the Responses direct path (`responses.direct.DirectPath`:
RPM/TPM limiter, retries), each stage under its own semaphore and on its own session,
and each finished stage journaled as a stage of the item. Every document ends as one row:

    index, source, success, fields (the parsed extraction), failed_stage ("ocr" or
    "extraction", None on success), error, error_type, request_id / checkpoint_id
    (Datalab's ids), page_count, cost_breakdown (Datalab's, cents), usage (tokens, summed
    over the requests), model, service_tier, response_ids, retries (both stages),
    rate_limited, processing_time_secs, from_journal (the whole row came from the
    journal), and the stages' detail in `ocr` and `extraction` (attempts, timings,
    `from_journal` for a reused stage; `page_fields` with `per_page`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from ..documents.parse import document_text
from ..documents.path import DocumentsPath
from ..documents.sources import Upload
from ..engine import BatchRun, ErrorType, Failure, ItemRun, Result, log_event
from ..engine.journal import request_digest
from ..engine.telemetry import Identity
from ..responses import parse_responses
from ..responses.direct import DirectPath, Prepared
from .fields import _fields, merge_fields
from .pages import _payload, page_texts

logger = logging.getLogger("genai_coroutines.pipeline")  # the package's name: one logger

KIND = "pipeline"
"""The journal kind of a pipeline batch."""
OCR_STAGE = "ocr"
EXTRACTION_STAGE = "extraction"


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
        self.telemetry_identity = Identity(KIND, model=extraction.model)
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
                trace=run.trace,
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
            stage_run = ItemRun(
                run.index, self._batch(run, EXTRACTION_STAGE), time.perf_counter(), trace=run.trace
            )
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


def _failure_of(result: Mapping[str, Any]) -> Failure:
    """The failure a stage's failed result reports."""
    kind = cast(ErrorType, result.get("error_type") or "api_error")
    return Failure(str(result.get("error")), kind, bool(result.get("is_retriable")))


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
