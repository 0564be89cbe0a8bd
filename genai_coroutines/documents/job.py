"""One document's Datalab job: submit it, poll it to the end, and never pay for it twice.

    SUBMIT --accepted--> POLL --complete--> done
      |                    |
      |                    +-- 5xx, 429, timeout, reset, malformed body: polled again
      |                    |   after the poll policy's backoff; never a new upload; at
      |                    |   most `max_retries` in a row (`engine.poll_until`)
      |                    +-- failed with "Page rate limit exceeded": the key's pages
      |                    |   ceiling is lowered (learned), the pages are given back, and
      |                    |   after backoff the document waits for pages under the new
      |                    |   ceiling and goes back to SUBMIT, as a counted retry (the job
      |                    |   never ran)
      |                    +-- failed, 404 (expired or unknown), 401/403: the item fails
      |                    +-- still processing after `max_poll_attempts`: the item fails
      |
      +-- 429: after exactly its Retry-After (every upload on the key pauses with it),
      |        spending no retry; a wait beyond the ceiling ends the item, pausing nobody
      +-- 5xx, 408, 409, timeout, reset, malformed answer: after backoff, counted
      +-- 400, 401, 403, 404, 413, 422, success=false: the item fails; 401 and 403 end the
          batch, since every other upload would be refused the same way

A file of at least `presigned_upload_min_bytes` is stored once before its first submission
and submitted by reference (`presigned`): a retried SUBMIT sends the reference, not the bytes.

One "round" (upload if needed, then poll to the end) is one attempt of the engine's
`retrying`, so every counted retry of a document, whatever its cause, draws on the
same `max_retries`. Once Datalab has given a request id the document is not uploaded
again, except after the page limit refused it or, when polling resumed from a
journaled request, after that request expired. The pages a job puts in flight are held
on the key's `Capacity` from its first round until it ends, but for the wait between
a page-limit refusal and the resubmission.

Polls carry the key, so they go only to the origin (scheme, host, port) of `api_url`:
a `request_check_url` naming another origin is polled at its path on the API's own
origin (`on_origin`), whoever sent it, the key never leaving for another address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from ..engine import (
    Capacity,
    Failure,
    ItemRun,
    RateLimiter,
    Reply,
    Retried,
    RetryDetails,
    RetryPolicy,
    Submission,
    Success,
    log_event,
    poll_until,
    retrying,
    send,
)
from ..engine.telemetry import DATALAB, POLL_JOB
from ..pdfpages import pages_in_range, parse_page_range
from .config import DocumentConfig
from .errors import json_reply
from .form import Fields, build_form
from .presigned import References, StoredFile
from .sources import Upload

logger = logging.getLogger("genai_coroutines.ocr")

PAGE_LIMIT_ERROR = "page rate limit exceeded"
"""How Datalab words a job refused for too many pages in flight (matched case-insensitively)."""

PAGE_CEILING_SECS = 600.0
"""How long a pages-in-flight ceiling learned from a refusal holds (each refusal renews it).
The refusal says the key's limit, or other clients' share of it, is lower than configured,
neither of which is told; after this long without one the configured bound is tried
again, so a ceiling learned while another job shared the key does not hold for good."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A completed job: its poll payload, parsed and as the raw JSON text."""

    payload: dict[str, Any]
    body: str


@dataclass(frozen=True, slots=True)
class JobFailed:
    """A job Datalab ended as failed (the page limit refused it, or it could not run)."""

    failure: Failure


Ended = Finished | JobFailed


@dataclass(frozen=True)
class Batch:
    """What every job of one batch shares."""

    config: DocumentConfig
    settings: Fields
    policy: RetryPolicy
    """Backoff before an upload is retried."""
    poll_policy: RetryPolicy
    """Backoff before a failed poll is retried: on the poll's own clock, since polls are free
    and the job runs on meanwhile, while uploads are paid for and rate limited."""
    limiter: RateLimiter
    """The key's submission rate (shared by every batch on the key)."""
    pages: Capacity | None
    """The key's pages in flight (None: `max_pages_in_flight` turned off)."""
    references: References
    """Which documents go by presigned upload, and the endpoints that refused references."""


def page_weight(upload: Upload, config: DocumentConfig) -> int:
    """Pages this job will put in flight, as Datalab counts them (`page_range` wins over
    `max_pages`). A document of unknown length (Office files, URLs) counts `max_pages`, or
    one page, and no more than its `page_range` spans: a range bounds the pages, it does
    not say they exist, and an underestimate is caught by the page-limit resubmission."""
    known = upload.pages
    page_range = config.page_range
    if known is None:
        guess = config.max_pages or 1
        if page_range is not None:
            guess = min(guess, sum(end - start + 1 for start, end in parse_page_range(page_range)))
        return guess
    if page_range is not None:
        return pages_in_range(page_range, known)
    return known if config.max_pages is None else min(known, config.max_pages)


class DocumentJob:
    """The state machine above, for one document of a batch."""

    def __init__(self, batch: Batch, run: ItemRun, upload: Upload) -> None:
        self.batch = batch
        self.config = batch.config
        self.run_ = run
        self.upload = upload
        self.timeout = self.config.timeout_secs
        self.counts = Retried()
        self.uploads = 0
        """Uploads sent (the result's `attempts`)."""
        self.weight = page_weight(upload, self.config)
        self.lease: str | None = None
        """The job's hold on the key's pages in flight, while it has one."""
        self.stored = (
            StoredFile(
                batch.references,
                upload,
                run,
                timeout=self.timeout,
                api_key=self.config.api_key or "",
            )
            if batch.references.wanted(upload, self.config.url)
            else None
        )
        """The document's presigned upload, when it is large enough for one."""

    @property
    def request_id(self) -> str | None:
        submission = self.run_.submission
        return submission.request_id if submission is not None else None

    async def run(self) -> Finished | Failure:
        try:
            outcome = await retrying(
                self._round,
                self.batch.policy,
                on_retry=self._log_retry,
                sleep=self.run_.batch.wait,
                counts=self.counts,
                limiter=self.batch.limiter,
            )
        finally:
            pages, lease = self.batch.pages, self.lease
            if pages is not None and lease is not None:
                await pages.release(lease)
        return outcome.value if isinstance(outcome, Success) else outcome

    async def _round(self) -> Success[Finished] | Failure:
        """Upload unless a submission is known, then poll the job to its end."""
        run = self.run_
        resumed = run.submission
        pages = self.batch.pages
        if pages is not None and self.lease is None:
            self.lease = await pages.acquire(self.weight)
        while True:
            submission = run.submission
            if submission is None:
                submitted = await self._submit()
                if isinstance(submitted, Failure):
                    return submitted
                run.submitted(submission := submitted)
            ended = await self._poll(submission)
            if isinstance(ended, Finished):
                return Success(ended)
            if ended.error_type == "not_found_error" and submission is resumed:
                log_event(
                    logger,
                    logging.WARNING,
                    "resume_expired",
                    index=run.index,
                    request_id=submission.request_id,
                )
                run.submission = resumed = None  # uploaded afresh, not a retry
                continue
            if ended.error_type == "page_limit":
                run.submission = None
                await self._refused()
            return ended

    async def _refused(self) -> None:
        """Datalab refused the job for pages in flight: learn the lower ceiling from the
        pages the key's other jobs hold, and give this job's pages back, so that it
        waits its turn again under that ceiling instead of being refused again."""
        pages, lease = self.batch.pages, self.lease
        if pages is None or lease is None:
            return
        self.lease = None
        ceiling = await pages.refused(lease, PAGE_CEILING_SECS)
        if ceiling is not None:
            log_event(
                logger,
                logging.WARNING,
                "pages_ceiling",
                index=self.run_.index,
                pages_in_flight=ceiling,
                for_secs=f"{PAGE_CEILING_SECS:g}",
            )

    async def _submit(self) -> Submission | Failure:
        """Submit the document: by reference when it is stored (`presigned`), else its bytes;
        a reference refused by the endpoint (or, journaled, no longer known) is not a retry:
        the document goes again at once, multipart (or stored afresh)."""
        while True:
            upload = await self._as_sent()
            if isinstance(upload, Failure):
                return upload
            outcome = await self._send(upload)
            stored = self.stored
            if isinstance(outcome, Failure) and stored is not None and upload is not self.upload:
                if self.batch.references.refuses(self.config.url, outcome):
                    self.stored = None
                    continue
                if stored.forget(outcome):
                    continue
            return outcome

    async def _as_sent(self) -> Upload | Failure:
        """The document as this submission sends it: its stored reference, or itself."""
        stored, run = self.stored, self.run_
        if stored is None or not self.batch.references.wanted(self.upload, self.config.url):
            return self.upload
        if run.batch.stop.failure is not None:
            return run.batch.stop.failure
        reference = await stored.reference_of(run.batch.session)
        if isinstance(reference, Failure):
            return reference
        return replace(self.upload, data=None, url=reference)

    async def _send(self, upload: Upload) -> Submission | Failure:
        batch, stop = self.batch, self.run_.batch.stop
        if stop.failure is None:
            await batch.limiter.acquire()
        if stop.failure is not None:
            return stop.failure
        self.uploads += 1
        form = build_form(upload, batch.settings)
        trace = self.run_.trace
        span = (
            None
            if trace is None
            else trace.attempt(DATALAB, self.config.endpoint or "convert", None, self.uploads - 1)
        )
        reply = await send(
            self.run_.batch.session, "POST", self.config.url, timeout=self.timeout, data=form
        )
        outcome = self._accepted(reply)
        if span is not None:
            span.end(reply, outcome, None if isinstance(outcome, Failure) else outcome.request_id)
        if isinstance(outcome, Failure):
            stop.record(outcome)
            return outcome
        log_event(
            logger,
            logging.DEBUG,
            "submitted",
            index=self.run_.index,
            request_id=outcome.request_id,
            attempt=self.uploads,
        )
        return outcome

    def _accepted(self, reply: Reply | Failure) -> Submission | Failure:
        body = json_reply(reply, "upload answer", self.config.api_key or "")
        if isinstance(body, Failure):
            return body
        if body.get("success") is False:
            return Failure(
                f"Datalab refused the document: {body.get('error') or 'no reason given'}",
                "invalid_request_error",
                retriable=False,
                status=reply.status if isinstance(reply, Reply) else None,
            )
        check_url = body.get("request_check_url")
        if not isinstance(check_url, str) or not check_url:
            return Failure(
                "Datalab accepted the upload without a request_check_url",
                "invalid_response",
                retriable=True,
                status=reply.status if isinstance(reply, Reply) else None,
            )
        try:
            check_url = urljoin(self.config.url, check_url)
            parts = urlsplit(check_url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname)
            polled = on_origin(check_url, self.config.url) if usable else check_url
        except ValueError:  # e.g. an unclosed IPv6 bracket, a port above 65535
            usable = False
        if not usable:
            return Failure(
                f"Datalab's request_check_url is not an http(s) URL: {check_url[:200]!r}",
                "invalid_response",
                retriable=False,
            )
        request_id = body.get("request_id") or parts.path.rstrip("/").rsplit("/", 1)[-1]
        if polled != check_url:
            log_event(
                logger,
                logging.WARNING,
                "check_url_elsewhere",
                index=self.run_.index,
                request_id=request_id,
                named=_origin_text(parts),
                polled=_origin_text(urlsplit(polled)),
            )
        return Submission(str(request_id), polled)

    async def _poll(self, submission: Submission) -> Finished | Failure:
        config = self.config
        try:
            url = on_origin(submission.request_check_url, config.url)  # a journaled one too
        except ValueError as exc:
            return Failure(f"Unusable request_check_url: {exc}", "invalid_response", False)

        async def check() -> Success[Finished | JobFailed | None] | Failure:
            span = None if self.run_.trace is None else self.run_.trace.attempt(DATALAB, POLL_JOB)
            reply = await send(self.run_.batch.session, "GET", url, timeout=self.timeout)
            polled = self._polled(reply, submission)
            if span is not None:
                span.end(reply, polled, submission.request_id)
            if isinstance(polled, Failure):
                self.run_.batch.stop.record(polled)
                return polled
            return Success(polled)

        def on_retry(details: RetryDetails) -> None:
            log_event(
                logger,
                logging.WARNING,
                "poll_retry",
                index=self.run_.index,
                request_id=submission.request_id,
                failures=f"{details.retry_number}/{config.max_retries}",
                delay=f"{details.wait:.2f}s",
                error=details.failure.message,
            )

        # Polled without a driver slot (another document is uploaded meanwhile); the pages
        # in flight stay leased: they are Datalab's capacity, not the driver's.
        async with self.run_.waiting():
            ended = await poll_until(
                check,
                interval=config.poll_interval_secs,
                max_polls=config.max_poll_attempts,
                policy=self.batch.poll_policy,
                wait=self.run_.batch.wait,
                on_retry=on_retry,
                what=f"request {submission.request_id}",
            )
        if ended is None:
            polls = config.max_poll_attempts
            return Failure(
                f"request {submission.request_id} still processing after {polls} polls "
                f"({polls * config.poll_interval_secs:g}s); its result stays at "
                f"{submission.request_check_url} for an hour",
                "poll_timeout",
                retriable=False,
            )
        if isinstance(ended, Failure):
            return ended
        assert ended.value is not None  # poll_until returns only ended work
        return ended.value if isinstance(ended.value, Finished) else ended.value.failure

    def _polled(self, reply: Reply | Failure, submission: Submission) -> Ended | Failure | None:
        """A poll's answer: the finished job, why it failed, or None while processing."""
        if isinstance(reply, Failure):
            return reply
        if reply.status == 404:
            return Failure(
                f"request {submission.request_id} not found (404): its result expired (Datalab "
                "keeps results for an hour) or the id is unknown",
                "not_found_error",
                retriable=False,
                status=404,
            )
        payload = json_reply(reply, "poll answer", self.config.api_key or "")
        if isinstance(payload, Failure):
            return payload
        status = payload.get("status")
        if status == "complete" and payload.get("success") is not False:
            return Finished(payload, reply.body.decode("utf-8", "replace"))
        if status not in ("complete", "failed") and payload.get("success") is not False:
            return None  # "processing", or a state this client does not know yet
        error = str(payload.get("error") or f"job ended with status {status!r}")
        if PAGE_LIMIT_ERROR in error.lower():
            return JobFailed(
                Failure(f"request {submission.request_id}: {error}", "page_limit", retriable=True)
            )
        return JobFailed(
            Failure(
                f"Datalab could not process the document (request {submission.request_id}): "
                f"{error}",
                "job_failed",
                retriable=False,
            )
        )

    def _log_retry(self, details: RetryDetails) -> None:
        failure = details.failure
        log_event(
            logger,
            logging.WARNING,
            "rate_limit" if failure.status == 429 else "retry",
            index=self.run_.index,
            attempt=f"{details.retry_number}/{self.config.max_retries}",
            delay=f"{details.wait:.2f}s",
            error=failure.message,
            **({"request_id": self.request_id} if self.request_id else {}),
        )


DEFAULT_PORTS = {"http": 80, "https": 443}


def on_origin(url: str, api_url: str) -> str:
    """`url` if it is on `api_url`'s origin (scheme, host and port), else its path and
    query on that origin: what a poll, which carries the key, may be sent to. A check URL
    elsewhere is polled where the upload went rather than refused, since the upload is
    paid for and a gateway in front of the API may well answer with the API's own URLs.
    Raises ValueError for a URL whose port is not a number below 65536."""
    parts, api = urlsplit(url), urlsplit(api_url)
    if _origin_of(parts) == _origin_of(api):
        return url
    return urlunsplit((api.scheme, api.netloc, parts.path, parts.query, ""))


def _origin_of(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(scheme)


def _origin_text(parts: SplitResult) -> str:
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
