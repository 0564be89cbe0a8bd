"""The Datalab `Adapter` (see `engine.batch`): read a document, run its job, shape its result.

An item is read only when its turn comes (`prepare`), is journaled under a digest of
its content and the batch's form settings, holds its pages on the key's
pages-in-flight capacity while its job runs, and ends as an outcome: `Answered` with the
job's result (`Finished`), or `Failed` with the job's `Failure`. `render` writes it as
the public result dict plus `index`, `request_id`, `page_count`, `attempts`,
`error_type` and `rate_limited`, and for a `/segment` batch `segments` (`parse.segments_of`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from ..engine import (
    Answered,
    Bill,
    ErrorType,
    Failed,
    Failure,
    Ids,
    ItemEnd,
    ItemRun,
    KeyLimits,
    Outcome,
    Result,
    RetryPolicy,
    Submission,
    log_event,
)
from ..engine.budget import Budget
from ..engine.telemetry import DATALAB, Identity
from .config import DocumentConfig
from .form import settings_fields
from .job import Batch, DocumentJob, Finished, logger, page_weight
from .parse import segments_of
from .presigned import References, files_url
from .prices import cents_of, list_cents_per_page, page_budget
from .sources import Source, SourceError, Upload, as_source

CHECKPOINT_UPLOAD = Upload(None, None, None)
"""The "document" of an /extract from a `checkpoint_id`: no file is sent."""


def check_input(item: object, index: int, config: DocumentConfig) -> Source | None:
    """The input's `Source`, or None for the checkpoint's `None`; ValueError naming `index`
    for anything else (a document given with `checkpoint_id`, or None without one)."""
    if not config.needs_file:
        if item is not None:
            raise ValueError(
                f"inputs[{index}]: with checkpoint_id the document is the checkpoint; "
                "pass None for each extraction"
            )
        return None
    return as_source(item, index)


def check_inputs(inputs: object, config: DocumentConfig) -> None:
    """Refuse, before anything is sent, inputs that are not a list of documents (a single
    document, or an item of the wrong type in a list; a lazy input's items are checked
    as their turn comes)."""
    if isinstance(inputs, bytes | bytearray | str):
        raise TypeError("inputs must be a list of documents, not a single document")
    if isinstance(inputs, Sequence):
        for index, item in enumerate(inputs):
            check_input(item, index, config)


class DocumentsAdapter:
    kind = "documents"
    unit = "doc"
    logger = logger

    def __init__(self, batch: Batch, on_submitted: Callable[[int, str, str], None]) -> None:
        self.batch = batch
        self.config: DocumentConfig = batch.config
        self.on_submitted = on_submitted
        self.settings = orjson.dumps(batch.settings)
        self.telemetry_identity = Identity(self.config.endpoint or "convert", DATALAB)

    async def prepare(self, index: int, item: Any) -> Upload | Failure:
        source = check_input(item, index, self.config)  # a bad lazy item: its own error
        if source is None:
            log_event(logger, logging.DEBUG, "task_start", index=index, source="checkpoint")
            return CHECKPOINT_UPLOAD
        log_event(logger, logging.DEBUG, "task_start", index=index, source=source.label)
        try:
            return await source.load()
        except SourceError as exc:
            return Failure(str(exc), "read_error", retriable=False)

    def digest(self, upload: Upload) -> tuple[bytes, ...]:
        if upload.data is None and upload.url is None:  # the checkpoint, named in settings
            return (b"", self.settings)
        return (upload.data or str(upload.url).encode(), self.settings)

    def input_digest(self, item: Any) -> None:
        """None: what a document's request holds is only known once it is read (`prepare`)."""
        return None

    async def execute(self, run: ItemRun, upload: Upload) -> Outcome[Finished]:
        journal = run.on_submitted

        def submitted(submission: Submission) -> None:
            self.on_submitted(run.index, submission.request_id, submission.request_check_url)
            journal(submission)

        run.on_submitted = submitted
        job = DocumentJob(self.batch, run, upload)
        ended = await job.run()
        ids = Ids(job.request_id)
        attempts, rate_limited = job.uploads, job.counts.rate_limited
        if isinstance(ended, Failure):
            return Failed(ended, attempts, rate_limited, ids=ids)
        return Answered(ended, attempts, rate_limited, _bill(ended, upload.pages), ids)

    def render(self, end: ItemEnd[Finished]) -> Result:
        index, outcome = end.index, end.outcome
        elapsed = time.perf_counter() - end.started
        attempts = outcome.attempts
        result: Result = {
            "index": index,
            "success": isinstance(outcome, Answered),
            "json_response": None,
            "cost_breakdown": None,
            "processing_time_secs": elapsed,
            "error": None,
            "error_type": None,
            "request_id": None if outcome.ids is None else outcome.ids.request,
            "page_count": None,
            "attempts": attempts,
            "rate_limited": outcome.rate_limited,
        }
        if self.config.segmentation_schema is not None:
            answered = outcome.value.payload if isinstance(outcome, Answered) else None
            result["segments"] = None if answered is None else segments_of(answered)
        if isinstance(outcome, Answered):
            cost = outcome.value.payload.get("cost_breakdown")
            result["json_response"] = outcome.value.body
            result["cost_breakdown"] = cost if isinstance(cost, dict) else None
            result["page_count"] = None if outcome.bill is None else outcome.bill.pages
            log_event(
                logger,
                logging.INFO,
                "task_success",
                index=index,
                time=f"{elapsed:.2f}s",
                attempts=attempts,
                pages=result["page_count"],
            )
            return result
        failure = outcome.failure
        result["error"] = failure.message
        result["error_type"] = failure.error_type
        log_event(
            logger,
            logging.WARNING,
            "task_failed",
            index=index,
            error_type=failure.error_type,
            time=f"{elapsed:.2f}s",
            attempts=attempts,
            error=failure.message,
        )
        return result

    def revive(self, record: Mapping[str, Any]) -> Outcome[Finished]:
        get = record.get
        attempts, rate_limited = int(get("attempts") or 0), int(get("rate_limited") or 0)
        request_id = get("request_id")
        ids = Ids(request_id if isinstance(request_id, str) else None)
        body = get("json_response")
        if get("success") and isinstance(body, str):
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = None
            if isinstance(payload, dict):
                pages = get("page_count")
                finished = Finished(payload, body)
                bill = _bill(finished, pages if isinstance(pages, int) else None)
                return Answered(finished, attempts, rate_limited, bill, ids)
        kind = cast(ErrorType, get("error_type") or "api_error")
        return Failed(Failure(str(get("error")), kind, False), attempts, rate_limited, ids=ids)


def _bill(finished: Finished, pages: int | None) -> Bill:
    """What a finished job was billed: its pages (as Datalab counted them, else as read from
    the upload) and the cents of its `cost_breakdown`."""
    counted = finished.payload.get("page_count")
    return Bill(
        pages=counted if isinstance(counted, int) else pages,
        cents=cents_of(finished.payload.get("cost_breakdown")),
    )


def documents_path(
    config: DocumentConfig, limits: KeyLimits, on_submitted: Callable[[int, str, str], None]
) -> DocumentsAdapter:
    """The adapter of `config` on its key's limits: the submission rate and pages in flight
    every batch on the key shares, and the retry policies of uploads and polls."""
    origin = _origin(config)
    key = config.api_key or ""
    per_minute = config.requests_per_minute
    # Uploads evenly spaced at `requests_per_minute`, with no burst: how Datalab counts its
    # window is not documented, and an even pace stays under N per minute by any count.
    # Without a rate the limiter bounds nothing, but a 429 still pauses every upload on
    # the key.
    limiter = limits.rate(
        origin,
        key,
        requests_per_minute=per_minute,
        burst_seconds=1.0 if per_minute is None else 60.0 / per_minute,
    )
    batch = Batch(
        config=config,
        settings=settings_fields(config),
        policy=RetryPolicy(
            max_retries=config.max_retries,
            initial_delay=config.base_retry_delay_secs,
            max_delay=config.max_retry_delay_secs,
            jitter=config.jitter_percent / 100.0,
            max_rate_limit_wait=config.max_rate_limit_wait_secs,
        ),
        poll_policy=RetryPolicy(
            max_retries=config.max_retries,
            initial_delay=config.poll_interval_secs,
            max_delay=config.max_retry_delay_secs,
            jitter=0.25,
            jitter_down=False,  # a failed poll is never asked again sooner than the interval
            max_rate_limit_wait=config.max_rate_limit_wait_secs,
        ),
        limiter=limiter,
        references=References(config.presigned_upload_min_bytes, files_url(config.url)),
        pages=(
            None
            if config.max_pages_in_flight is None
            else limits.capacity(origin, key, config.max_pages_in_flight)
        ),
    )
    return DocumentsAdapter(batch, on_submitted)


def pages_budget(
    config: DocumentConfig, max_cost_cents: float, cents_per_page: float | None
) -> Budget[Upload]:
    """`max_cost_cents` for this config's documents: each weighed as its job will be, at
    `cents_per_page` (default: Datalab's list price of what its jobs do, `list_cents_per_page`)."""
    per_page = list_cents_per_page(config) if cents_per_page is None else cents_per_page
    return page_budget(
        max_cost_cents, cents_per_page=per_page, pages=lambda upload: page_weight(upload, config)
    )


def _origin(config: DocumentConfig) -> str:
    """Where the key's limits apply: Datalab counts per key, whichever endpoint is used."""
    parts = urlsplit(config.url)
    return f"datalab:{parts.scheme}://{parts.netloc}"
