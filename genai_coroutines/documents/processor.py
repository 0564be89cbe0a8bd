"""`DocumentProcessor`: many documents through Datalab at once, results as they finish.

`stream()` is the core: it runs at most `max_concurrent_requests` documents at a
time (upload through last poll), pulls the next input only when a slot frees, and
yields each document's result dict, carrying its `index`, the moment it ends.
`process_multiparts()` (the seed's entry point) and `process()` collect that stream
back into input order. A per-item failure is a result with `success=False`, never an
exception: the batch always finishes.

Two seams exist for a journal: `on_submitted()` is called as soon as Datalab accepts
an upload (override it to persist the request id), and `stream(resume=...)` starts
the listed items from a known `request_check_url`, polling instead of uploading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from operator import itemgetter
from typing import Any

import orjson

from ..engine import (
    BatchStop,
    Capacity,
    Failure,
    RateLimiter,
    RetryPolicy,
    collect_in_order,
    log_event,
    open_session,
    run_streaming,
)
from ..engine.bookkeeping import Bookkeeping
from ..engine.summary import BatchSummary
from ..engine.sync import run_sync
from .config import DocumentConfig
from .form import settings_fields
from .job import Batch, Finished, Job, Submission, SubmittedHook, page_weight
from .sources import DocumentInput, Source, SourceError, Upload, as_source

logger = logging.getLogger("genai_coroutines.ocr")

Result = dict[str, Any]
Inputs = Iterable[DocumentInput] | AsyncIterable[DocumentInput]


def _user_agent() -> str:
    try:
        return f"genai-coroutines/{version('genai-coroutines')}"
    except PackageNotFoundError:
        return "genai-coroutines"


def _submission_limiter(per_minute: float | None) -> RateLimiter:
    """Uploads evenly spaced at `per_minute`, with no burst: how Datalab counts its window
    is not documented, and an even pace stays under N per minute by any count."""
    if per_minute is None:
        return RateLimiter()  # no bound, but a 429 still pauses the whole batch
    return RateLimiter(requests_per_minute=per_minute, burst_seconds=60.0 / per_minute)


class DocumentProcessor:
    """Runs batches of documents through the Datalab Marker API with one `DocumentConfig`."""

    last_summary: BatchSummary | None = None
    """Totals of the latest `stream()`: counts, retries, 429s, pages and Datalab cents."""

    def __init__(self, config: DocumentConfig) -> None:
        if not isinstance(config, DocumentConfig):
            raise ValueError(f"config must be a DocumentConfig, got {type(config).__name__}")
        self.config = config

    def __repr__(self) -> str:
        return f"DocumentProcessor({self.config!r})"

    async def process_multiparts(
        self,
        multiparts: Sequence[bytes],
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: BatchSummary | None = None,
    ) -> list[Result]:
        """The seed's entry point: one result per document's bytes, in input order."""
        if isinstance(multiparts, bytes | bytearray | str) or not isinstance(multiparts, Sequence):
            raise ValueError(f"multiparts must be a list of bytes, got {type(multiparts).__name__}")
        for index, item in enumerate(multiparts):
            if not isinstance(item, bytes | bytearray | memoryview):
                raise ValueError(f"multiparts[{index}] is not bytes (got {type(item).__name__})")
            if not item:
                raise ValueError(f"multiparts[{index}] is empty")
        return await collect_in_order(
            self.stream(multiparts, journal=journal, progress=progress, summary=summary),
            itemgetter("index"),
        )

    def process_multiparts_sync(self, multiparts: Sequence[bytes], **options: Any) -> list[Result]:
        """`process_multiparts` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process_multiparts(multiparts, **options))

    async def process(
        self,
        inputs: Inputs,
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: BatchSummary | None = None,
    ) -> list[Result]:
        """Like `process_multiparts`, for bytes, paths, open binary files and http(s) URLs.

        Files are read only when their turn comes, so a batch of 10,000 paths holds at
        most `max_concurrent_requests` documents in memory.
        """
        if isinstance(inputs, bytes | bytearray | str):
            raise ValueError("inputs must be a list of documents, not a single document")
        if isinstance(inputs, Sequence):
            for index, item in enumerate(inputs):
                as_source(item, index)  # a wrong type fails now, before anything is sent
        return await collect_in_order(
            self.stream(inputs, journal=journal, progress=progress, summary=summary),
            itemgetter("index"),
        )

    def process_sync(self, inputs: Inputs, **options: Any) -> list[Result]:
        """`process` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process(inputs, **options))

    async def stream(
        self,
        inputs: Inputs,
        *,
        resume: Mapping[int, Submission] | None = None,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: BatchSummary | None = None,
    ) -> AsyncIterator[Result]:
        """Yield each document's result as it finishes.

        `resume` maps an input index to a job submitted earlier, which is polled instead
        of uploaded again. `journal` names a file recording every submitted job and
        finished result as it happens: run the same batch with it again and successful
        documents come back from it (`"from_journal": True`), jobs still on Datalab are
        polled rather than uploaded, and only the rest is sent. `progress` shows a bar;
        `summary` (also kept as `last_summary`) totals pages, cents and retries.
        """
        resume = resume or {}
        books = Bookkeeping(
            inputs,
            summary=summary or BatchSummary(),
            progress=progress,
            unit="doc",
            journal=journal,
            kind="documents",
        )
        self.last_summary = books.summary

        def submitted(index: int, request_id: str, request_check_url: str) -> None:
            self.on_submitted(index, request_id, request_check_url)
            if books.journal is not None:
                digest = books.digests[index]
                books.journal.record_submission(index, digest, request_id, request_check_url)

        started = time.monotonic()
        try:
            async with self.open_batch(on_submitted=submitted, wait=books.progress.wait) as batch:
                log_event(
                    logger,
                    logging.INFO,
                    "batch_start",
                    files=books.total or "?",
                    concurrency=self.config.max_concurrent_requests,
                )

                def work(index: int, item: DocumentInput) -> Awaitable[Result]:
                    try:
                        source = as_source(item, index)
                    except ValueError as exc:  # a lazy input's bad item: its own error only
                        return self._refused(index, exc)
                    return self._run_one(batch, index, source, resume.get(index), books)

                async for result in run_streaming(
                    inputs, work, concurrency=self.config.max_concurrent_requests
                ):
                    books.add(result)
                    yield result
        finally:
            books.close()
            log_event(
                logger,
                logging.INFO,
                "batch_done",
                ok=f"{books.succeeded}/{books.succeeded + books.failed}",
                errors=books.failed,
                time=f"{time.monotonic() - started:.2f}s",
            )

    def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
        """Called once Datalab accepts an upload, before the first poll; does nothing here.

        Override it to journal the job, so a restarted batch can poll it via
        `stream(resume=...)` instead of paying for it again. It runs on the event loop,
        so keep it quick; an exception raised here ends the batch.
        """

    @asynccontextmanager
    async def open_batch(
        self,
        *,
        on_submitted: SubmittedHook | None = None,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> AsyncIterator[Batch]:
        """The shared state of one batch: HTTP session, limits, retry policy, batch stop."""
        config = self.config
        assert config.api_key is not None  # DocumentConfig resolved it
        session = open_session(
            config.max_concurrent_requests,
            {"X-Api-Key": config.api_key, "User-Agent": _user_agent()},
        )
        policy = RetryPolicy(
            max_retries=config.max_retries,
            initial_delay=config.base_retry_delay_secs,
            max_delay=config.max_retry_delay_secs,
            jitter=config.jitter_percent / 100.0,
        )
        poll_policy = dataclasses.replace(policy, initial_delay=config.poll_interval_secs)
        pages = None if config.max_pages_in_flight is None else Capacity(config.max_pages_in_flight)
        try:
            yield Batch(
                config=config,
                session=session,
                settings=settings_fields(config),
                policy=policy,
                poll_policy=poll_policy,
                limiter=_submission_limiter(config.requests_per_minute),
                pages=pages,
                stop=BatchStop(),
                on_submitted=on_submitted or self.on_submitted,
                wait=wait,
            )
        finally:
            await session.close()

    async def _refused(self, index: int, problem: ValueError) -> Result:
        failure = Failure(str(problem), "invalid_input", retriable=False)
        return self._result(index, time.monotonic(), failure, None, None)

    async def _run_one(
        self,
        batch: Batch,
        index: int,
        source: Source,
        resume: Submission | None = None,
        books: Bookkeeping | None = None,
    ) -> Result:
        """One document from reading it to its result dict; never raises for its failures.

        With a journal in `books`, the document's digest (content and settings) decides
        whether a journaled success is returned, a journaled job is polled, or it is
        uploaded.
        """
        started = time.monotonic()
        log_event(logger, logging.DEBUG, "task_start", index=index, source=source.label)
        if batch.stop.failure is not None:
            return self._result(index, started, batch.stop.failure, None, None)
        try:
            upload = await source.load()
        except SourceError as exc:
            failure = Failure(str(exc), "read_error", retriable=False)
            return self._result(index, started, failure, None, None)
        if books is not None and books.journal is not None:
            content = upload.data or str(upload.url).encode()
            done = books.replay(index, content, orjson.dumps(batch.settings))
            if done is not None:
                return done
            known = books.journal.submitted(index, books.digests[index])
            if resume is None and known is not None:
                resume = Submission(*known)
        weight = page_weight(upload, self.config)
        if batch.pages is not None:
            await batch.pages.acquire(weight)
        job = Job(batch, index, upload)
        try:
            outcome = await job.run(resume)
        finally:
            if batch.pages is not None:
                batch.pages.release(weight)
        result = self._result(index, started, outcome, job, upload)
        return result if books is None else books.record(index, result)

    def _result(
        self,
        index: int,
        started: float,
        outcome: Finished | Failure,
        job: Job | None,
        upload: Upload | None,
    ) -> Result:
        elapsed = time.monotonic() - started
        attempts = job.attempts if job is not None else 0
        result: Result = {
            "index": index,
            "success": isinstance(outcome, Finished),
            "json_response": None,
            "cost_breakdown": None,
            "processing_time_secs": elapsed,
            "error": None,
            "error_type": None,
            "request_id": job.request_id if job is not None else None,
            "page_count": None,
            "attempts": attempts,
            "rate_limited": job.rate_limited if job is not None else 0,
        }
        if isinstance(outcome, Finished):
            cost = outcome.payload.get("cost_breakdown")
            pages = outcome.payload.get("page_count")
            result["json_response"] = outcome.body
            result["cost_breakdown"] = cost if isinstance(cost, dict) else None
            result["page_count"] = (
                pages if isinstance(pages, int) else (upload.pages if upload is not None else None)
            )
            log_event(
                logger,
                logging.INFO,
                "task_success",
                index=index,
                time=f"{elapsed:.2f}s",
                attempts=attempts,
                pages=result["page_count"],
            )
        else:
            result["error"] = outcome.message
            result["error_type"] = outcome.error_type
            log_event(
                logger,
                logging.WARNING,
                "task_failed",
                index=index,
                error_type=outcome.error_type,
                time=f"{elapsed:.2f}s",
                attempts=attempts,
                error=outcome.message,
            )
        return result
