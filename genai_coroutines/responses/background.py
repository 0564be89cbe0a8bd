"""Background mode: each item POSTed with `background: true`, journaled at once, then polled.

    POST --queued--> journal the response id --> POLL (GET /responses/{id}) every
      |                                           poll_interval_secs
      |                                             |
      |                                             +-- completed, incomplete: the result
      |                                             +-- 5xx, 429, timeout, reset on a poll:
      |                                             |   asked again after the poll policy's
      |                                             |   backoff (`engine.poll_until`), never
      |                                             |   POSTed again; `max_retries` in a row
      |                                             |   end the item
      |                                             +-- failed with a server error: POSTed
      |                                             |   again after backoff (a counted retry)
      |                                             +-- failed otherwise, cancelled: the item
      |                                             |   fails with the API's message
      |                                             +-- still running after max_wait_secs
      |                                             |   (from the item's start): the item ends
      |                                             |   `poll_timeout`, its response id kept in
      |                                             |   its result and, not final, in the
      |                                             |   journal: a rerun polls it again
      |                                             +-- 404 (expired from storage, unknown):
      |                                                 the item fails with the API's message;
      |                                                 a response resumed from the journal is
      |                                                 POSTed afresh instead (its answer is gone)
      +-- answered as the synchronous path's POST (`DirectAdapter.attempt`): 429s, 5xx and
          flex capacity retried, 4xx fail, a bad key or no quota stops the batch

The POST runs in the item's driver slot; the polls do not (`ItemRun.waiting`): with
`max_concurrent_requests` 10, ten POSTs are in flight at most, while the responses
polled may be many more (up to the driver's `max_waiting`).

One round (POST if no response is known, then poll to the end) is one attempt of the
engine's `retrying`, as a Datalab job is, so every counted retry draws on one
`max_retries`. The response id is journaled the moment the POST returns
(`ItemRun.submitted`): a batch killed at any point and rerun with its journal polls
the responses it had started instead of buying them again.

Interrupted (Ctrl-C, a cancelled task), the responses still running are left to finish
at OpenAI, each logged (`left_running`, with its id) so the batch can be resumed from
its journal; with `cancel_on_interrupt` they are cancelled (`POST
/responses/{id}/cancel`) before the batch ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..engine import (
    Failure,
    Ids,
    ItemEnd,
    ItemRun,
    Outcome,
    Pending,
    RateLimiter,
    Reply,
    Result,
    RetryDetails,
    RetryPolicy,
    Submission,
    Success,
    log_event,
    poll_until,
    retrying,
    send,
)
from ..engine.telemetry import OPENAI, POLL_RESPONSE, background_in_flight
from .cache_keys import CacheKeys
from .direct import Attempted, DirectAdapter, Prepared, Tries, answer
from .errors import bad_body, classify, response_failure
from .request import ResponsesRequest
from .results import Answer, logger

RUNNING = ("queued", "in_progress")
POLL_TIMEOUT: Literal["poll_timeout"] = "poll_timeout"
CANCEL_TIMEOUT_SECS = 10.0
"""How long an interrupted batch waits for each cancel before leaving the response be."""


@dataclass(frozen=True, slots=True)
class Queued:
    """A POST the API accepted: the id its response runs under (no usage yet, so the
    limiter keeps the reservation: OpenAI charges the tokens at admission)."""

    response_id: str
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """A response that ended without an answer (`failed`, `cancelled`): why."""

    failure: Failure


class BackgroundAdapter(DirectAdapter):
    """The `Adapter` of background mode: `DirectAdapter`'s prepare, digest and POST, then polls."""

    def __init__(
        self, request: ResponsesRequest, limiter: RateLimiter, cache_keys: CacheKeys | None = None
    ) -> None:
        super().__init__(request, limiter, cache_keys)
        self.responses_url = self.url + "/"
        self.interval = request.poll_interval_secs
        self.max_wait = request.max_wait_secs
        self.poll_timeout = float(request.timeout_secs)
        self.poll_policy = RetryPolicy(
            max_retries=request.max_retries,
            initial_delay=request.poll_interval_secs,
            max_delay=request.retry_delay_max_ms / 1000.0,
            jitter=0.25,
            jitter_down=False,  # a failed poll is never asked again sooner than the interval
            max_server_wait=request.max_retry_wait_secs,
            max_rate_limit_wait=request.max_rate_limit_wait_secs,
        )

    async def execute(self, run: ItemRun, prepared: Prepared) -> Outcome[Answer]:
        tries = Tries()
        until = None if self.max_wait is None else time.monotonic() + self.max_wait

        def one_round() -> Awaitable[Attempted]:
            return self._round(run, prepared, tries, until)

        try:
            outcome = await retrying(
                one_round,
                self.policy,
                on_retry=self.log_retry(run.index),
                sleep=run.batch.wait,
                counts=tries,
                limiter=self.limiter,
            )
        except asyncio.CancelledError:
            await self._interrupted(run)
            raise
        submission = run.submission
        if isinstance(outcome, Failure) and outcome.error_type == POLL_TIMEOUT and submission:
            ids = Ids(request=submission.request_id)  # still running: not final
            failure = dataclasses.replace(outcome, retriable=True)  # a rerun polls it
            return Pending(failure, tries.sent, tries.rate_limited, ids=ids)
        return self.ended(outcome, tries)

    def render(self, end: ItemEnd[Answer]) -> Result:
        """The synchronous path's result dict; one given up on while its response still ran
        (`poll_timeout`) adds that `response_id`, which a rerun with the journal polls."""
        result = super().render(end)
        outcome = end.outcome
        if isinstance(outcome, Pending) and outcome.ids is not None:
            result["response_id"] = outcome.ids.request
        return result

    async def _round(
        self, run: ItemRun, prepared: Prepared, tries: Tries, until: float | None
    ) -> Attempted:
        """POST unless a response is known (this run's or the journal's), then poll it."""
        resumed = run.submission
        while True:
            submission = run.submission
            if submission is None:
                posted = await self.attempt(run, prepared, tries, self._queued)
                if isinstance(posted, Failure):
                    return posted
                response_id = posted.value.response_id
                submission = Submission(response_id, self.responses_url + response_id)
                run.submitted(submission)
                log_event(
                    logger, logging.DEBUG, "submitted", index=run.index, response_id=response_id
                )
            background_in_flight(1)
            try:
                async with run.waiting():  # polled without a driver slot
                    ended = await self._poll(run, submission, until)
            finally:
                background_in_flight(-1)
            if isinstance(ended, Success) or ended.error_type == POLL_TIMEOUT:
                return ended  # a response given up on stays `run.submission`
            if ended.error_type == "not_found_error" and submission is resumed:
                log_event(
                    logger,
                    logging.WARNING,
                    "resume_expired",
                    index=run.index,
                    response_id=submission.request_id,
                )
                run.submission = resumed = None  # its answer is gone: sent afresh, no retry
                continue
            run.submission = None  # retried (a server error) means POSTed again
            return ended

    def _queued(self, reply: Reply) -> Success[Queued] | Failure:
        """The POST's 200: the response it created, by id."""
        data = _json(reply.body)
        if data is None:
            return bad_body(reply.status, len(reply.body))
        response_id = data.get("id")
        if data.get("object") != "response" or not isinstance(response_id, str) or not response_id:
            error = data.get("error")
            if isinstance(error, dict):
                return response_failure(data, reply.status)
            return bad_body(reply.status, len(reply.body))
        if "/" in response_id or "?" in response_id:
            return Failure(
                f"the API named its response {response_id[:80]!r}, which is no response id",
                "invalid_response",
                retriable=False,
                status=reply.status,
            )
        return Success(Queued(response_id))

    async def _poll(self, run: ItemRun, submission: Submission, until: float | None) -> Attempted:
        """Poll the response until it ends (its answer, or why there is none), or until
        `until` (`time.monotonic()`), then `poll_timeout`."""
        record = run.batch.stop.record

        async def check() -> Success[Answer | Ended | None] | Failure:
            span = (
                None if run.trace is None else run.trace.attempt(OPENAI, POLL_RESPONSE, self.model)
            )
            reply = await send(
                run.batch.session, "GET", submission.request_check_url, timeout=self.poll_timeout
            )
            polled = self._polled(reply, submission)
            if span is not None:
                span.end(reply, polled, submission.request_id)
            if isinstance(polled, Failure):
                record(polled)
            return polled

        ended = await poll_until(
            check,
            interval=self.interval,
            max_polls=None,
            policy=self.poll_policy,
            wait=run.batch.wait,
            on_retry=self._log_poll_retry(run.index, submission),
            what=f"response {submission.request_id}",
            until=until,
        )
        if ended is None:
            return Failure(
                f"response {submission.request_id} still running after max_wait_secs "
                f"({self.max_wait}s): rerun with the same journal to poll it again",
                POLL_TIMEOUT,
                retriable=False,  # ends this run's rounds; `execute` makes it Pending
            )
        if isinstance(ended, Failure):
            return ended
        value = ended.value
        if isinstance(value, Ended):
            return value.failure
        assert value is not None  # `poll_until` returns only ended work
        return Success(value)

    def _polled(
        self, reply: Reply | Failure, submission: Submission
    ) -> Success[Answer | Ended | None] | Failure:
        """One poll's answer: the finished response, why it ended without one, None while
        it runs, or the failure of the poll itself."""
        if isinstance(reply, Failure):
            return reply
        if reply.status != 200:
            failure = classify(reply.status, reply.headers, reply.body, self.api_key)
            if reply.status == 404:
                failure = dataclasses.replace(
                    failure,
                    message=f"{failure.message} (background responses are kept for polling "
                    "only for a limited time)",
                )
            return failure
        data = _json(reply.body)
        if data is None:
            return bad_body(reply.status, len(reply.body))
        state = data.get("status")
        if state in RUNNING:
            return Success(None)
        if state == "failed":
            return Success(Ended(response_failure(data, reply.status)))
        if state == "cancelled":
            return Success(
                Ended(
                    Failure(
                        f"response {submission.request_id} was cancelled",
                        "response_failed",
                        retriable=False,
                        status=reply.status,
                    )
                )
            )
        if state not in ("completed", "incomplete"):
            return Success(None)  # a state this client does not know yet: ask again
        done = answer(reply)
        return done if isinstance(done, Failure) else Success(done.value)

    async def _interrupted(self, run: ItemRun) -> None:
        """The batch is being cancelled: cancel this item's response, or say it runs on."""
        submission = run.submission
        if submission is None:
            return
        if not self.request.cancel_on_interrupt:
            log_event(
                logger,
                logging.WARNING,
                "left_running",
                index=run.index,
                response_id=submission.request_id,
                resume="run the batch again with its journal to collect it",
            )
            return
        reply = await send(
            run.batch.session,
            "POST",
            submission.request_check_url + "/cancel",
            timeout=CANCEL_TIMEOUT_SECS,
        )
        status = reply.status if isinstance(reply, Reply) else None
        log_event(
            logger,
            logging.INFO if status == 200 else logging.WARNING,
            "cancelled" if status == 200 else "cancel_failed",
            index=run.index,
            response_id=submission.request_id,
            status=status,
        )

    def _log_poll_retry(self, index: int, submission: Submission) -> Callable[[RetryDetails], None]:
        def on_retry(details: RetryDetails) -> None:
            log_event(
                logger,
                logging.WARNING,
                "poll_retry",
                index=index,
                response_id=submission.request_id,
                failures=f"{details.retry_number}/{self.poll_policy.max_retries}",
                delay=f"{details.wait:.2f}s",
                error=details.failure.message,
            )

        return on_retry


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
