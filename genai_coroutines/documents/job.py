"""One document's Datalab job: submit it, poll it to the end, and never pay for it twice.

    SUBMIT --accepted--> POLL --complete--> done
      |                    |
      |                    +-- 5xx, 429, timeout, reset, malformed body: poll again after
      |                    |   backoff from `poll_interval_secs`; not a poll attempt, never
      |                    |   a new upload; at most `max_retries` in a row
      |                    +-- failed with "Page rate limit exceeded": back to SUBMIT after
      |                    |   backoff, as a counted retry (the job never ran)
      |                    +-- failed, 404 (expired or unknown), 401/403: the item fails
      |                    +-- still processing after `max_poll_attempts` polls: it fails,
      |                        naming the request id (the result stays fetchable for an hour)
      +-- 429 (waits exactly its Retry-After, and pauses the whole batch), 5xx, timeout,
      |   connection error, malformed body: SUBMIT again after backoff, a counted retry
      +-- 400, 401, 403, 404, 413, 422, success=false: the item fails; 401 and 403 end the
          batch, since every other upload would be refused the same way

Once Datalab has given a request id the document is not uploaded again, except after
the page limit refused it or, when polling resumed from a journaled request, after
that request expired. Every counted retry of a document, whatever its cause, draws on
the same `max_retries`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urljoin, urlsplit

import aiohttp

from ..engine import (
    BatchStop,
    Capacity,
    Failure,
    RateLimiter,
    Reply,
    RetryPolicy,
    log_event,
    send,
)
from ..pdfpages import pages_in_range, parse_page_range
from .config import DocumentConfig
from .errors import http_failure, json_object
from .form import Fields, build_form
from .sources import Upload

logger = logging.getLogger("genai_coroutines.ocr")

PAGE_LIMIT_ERROR = "page rate limit exceeded"
"""How Datalab words a job refused for too many pages in flight (matched case-insensitively)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """An accepted job: enough to poll it, now or after a restart."""

    request_id: str
    request_check_url: str


@dataclass(frozen=True, slots=True)
class Finished:
    """A completed job: its poll payload, parsed and as the raw JSON text."""

    payload: dict[str, Any]
    body: str


SubmittedHook = Callable[[int, str, str], None]


@dataclass(frozen=True)
class Batch:
    """What every job of one batch shares."""

    config: DocumentConfig
    session: aiohttp.ClientSession
    settings: Fields
    policy: RetryPolicy
    """Backoff before an upload is retried."""
    poll_policy: RetryPolicy
    """Backoff before a failed poll is retried: on the poll's own clock, since polls are free
    and the job runs on meanwhile, while uploads are paid for and rate limited."""
    limiter: RateLimiter
    pages: Capacity | None
    stop: BatchStop
    on_submitted: SubmittedHook
    wait: Callable[[float], Awaitable[None]] = asyncio.sleep
    """How a backoff is slept (a progress bar counts the items waiting in it)."""


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


class Job:
    """The state machine above, for one document of a batch."""

    def __init__(self, batch: Batch, index: int, upload: Upload) -> None:
        self.batch = batch
        self.config = batch.config
        self.index = index
        self.upload = upload
        self.timeout = aiohttp.ClientTimeout(total=self.config.timeout_secs)
        self.attempts = 0
        """Uploads sent."""
        self.retries = 0
        """Counted retries so far, whatever their cause."""
        self.rate_limited = 0
        """429 answers received."""
        self.request_id: str | None = None

    async def run(self, resume: Submission | None = None) -> Finished | Failure:
        submission = resume
        while True:
            if submission is None:
                submitted = await self._submit()
                if isinstance(submitted, Failure):
                    return submitted
                submission = submitted
            self.request_id = submission.request_id
            ended = await self._poll(submission)
            if isinstance(ended, Finished):
                return ended
            if submission is resume and ended.error_type == "not_found":
                log_event(
                    logger,
                    logging.WARNING,
                    "resume_expired",
                    index=self.index,
                    request_id=submission.request_id,
                )
                submission = None
                continue
            if ended.error_type != "page_limit":
                return ended
            delay = self._counted_retry(ended, submission.request_id)
            if delay is None:
                return ended
            await self.batch.wait(delay)
            submission = None

    # -- submission ---------------------------------------------------------------

    async def _submit(self) -> Submission | Failure:
        batch = self.batch
        while True:
            if batch.stop.failure is not None:
                return batch.stop.failure
            await batch.limiter.acquire()
            self.attempts += 1
            form = build_form(self.upload, batch.settings)
            reply = await send(
                batch.session, "POST", self.config.api_url, timeout=self.timeout, data=form
            )
            outcome = self._accepted(reply)
            if isinstance(outcome, Submission):
                log_event(
                    logger,
                    logging.DEBUG,
                    "submitted",
                    index=self.index,
                    request_id=outcome.request_id,
                    attempt=self.attempts,
                )
                batch.on_submitted(self.index, outcome.request_id, outcome.request_check_url)
                return outcome
            batch.stop.record(outcome)
            if outcome.status == 429:
                self.rate_limited += 1
                if outcome.retry_after is not None:
                    batch.limiter.pause(outcome.retry_after)
            delay = self._counted_retry(outcome, None)
            if delay is None:
                return outcome
            await batch.wait(delay)

    def _accepted(self, reply: Reply | Failure) -> Submission | Failure:
        body = _json_reply(reply, "upload answer")
        if isinstance(body, Failure):
            return body
        if body.get("success") is False:
            return Failure(
                f"Datalab refused the document: {body.get('error') or 'no reason given'}",
                "invalid_request",
                retriable=False,
                status=reply.status,
            )
        check_url = body.get("request_check_url")
        if not isinstance(check_url, str) or not check_url:
            return Failure(
                "Datalab accepted the upload without a request_check_url",
                "malformed_response",
                retriable=True,
                status=reply.status,
            )
        check_url = urljoin(self.config.api_url, check_url)
        request_id = (
            body.get("request_id") or urlsplit(check_url).path.rstrip("/").rsplit("/", 1)[-1]
        )
        return Submission(str(request_id), check_url)

    # -- polling ------------------------------------------------------------------

    async def _poll(self, submission: Submission) -> Finished | Failure:
        config = self.config
        polls = 0
        troubles = 0
        wait = config.poll_interval_secs
        while True:
            await (self.batch.wait if troubles else asyncio.sleep)(wait)
            reply = await send(
                self.batch.session, "GET", submission.request_check_url, timeout=self.timeout
            )
            outcome = self._polled(reply, submission)
            if _transient(outcome):
                troubles += 1
                if outcome.status == 429:
                    self.rate_limited += 1
                delay = self.batch.poll_policy.delay_for(troubles, outcome)
                if delay is None:
                    return Failure(
                        f"polling request {submission.request_id} failed {troubles} times in a "
                        f"row, last: {outcome.message}",
                        outcome.error_type,
                        retriable=False,
                        status=outcome.status,
                    )
                log_event(
                    logger,
                    logging.WARNING,
                    "poll_retry",
                    index=self.index,
                    request_id=submission.request_id,
                    failures=f"{troubles}/{config.max_retries}",
                    delay=f"{delay:.2f}s",
                    error=outcome.message,
                )
                wait = delay
                continue
            troubles = 0
            wait = config.poll_interval_secs
            if outcome is not None:
                if isinstance(outcome, Failure):
                    self.batch.stop.record(outcome)
                return outcome
            polls += 1
            if polls >= config.max_poll_attempts:
                return Failure(
                    f"request {submission.request_id} still processing after {polls} polls "
                    f"({polls * config.poll_interval_secs:g}s); its result stays at "
                    f"{submission.request_check_url} for an hour",
                    "poll_timeout",
                    retriable=False,
                )

    def _polled(self, reply: Reply | Failure, submission: Submission) -> Finished | Failure | None:
        """A poll's answer: the finished job, why it failed, or None while processing."""
        if isinstance(reply, Failure):
            return reply
        if reply.status == 404:
            return Failure(
                f"request {submission.request_id} not found (404): its result expired (Datalab "
                "keeps results for an hour) or the id is unknown",
                "not_found",
                retriable=False,
                status=404,
            )
        payload = _json_reply(reply, "poll answer")
        if isinstance(payload, Failure):
            return payload
        status = payload.get("status")
        if status == "complete" and payload.get("success") is not False:
            return Finished(payload, reply.body.decode("utf-8", "replace"))
        if status not in ("complete", "failed") and payload.get("success") is not False:
            return None  # "processing", or a state this client does not know yet
        error = str(payload.get("error") or f"job ended with status {status!r}")
        if PAGE_LIMIT_ERROR in error.lower():
            return Failure(
                f"request {submission.request_id}: {error}", "page_limit", retriable=True
            )
        return Failure(
            f"Datalab could not process the document (request {submission.request_id}): {error}",
            "job_failed",
            retriable=False,
        )

    def _counted_retry(self, failure: Failure, request_id: str | None) -> float | None:
        """Seconds to wait before the next upload, or None when the item should end."""
        self.retries += 1
        delay = self.batch.policy.delay_for(self.retries, failure)
        if delay is None:
            return None
        event = "rate_limit" if failure.status == 429 else "retry"
        log_event(
            logger,
            logging.WARNING,
            event,
            index=self.index,
            attempt=f"{self.retries}/{self.config.max_retries}",
            delay=f"{delay:.2f}s",
            error=failure.message,
            **({"request_id": request_id} if request_id else {}),
        )
        return delay


def _json_reply(reply: Reply | Failure, what: str) -> dict[str, Any] | Failure:
    """A 2xx reply's JSON object, or the failure to retry or report instead."""
    if isinstance(reply, Failure):
        return reply
    if not 200 <= reply.status < 300:
        return http_failure(reply)
    body = json_object(reply.body)
    if body is None:
        return Failure(
            f"Datalab's {what} is not a JSON object", "malformed_response", True, reply.status
        )
    return body


def _transient(outcome: Finished | Failure | None) -> TypeGuard[Failure]:
    """A poll that failed on the way (network, 5xx, 429, bad body), not a job that ended."""
    return isinstance(outcome, Failure) and outcome.retriable and outcome.error_type != "page_limit"
