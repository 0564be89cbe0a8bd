"""`ResponsesProcessor`: a batch of prompts through `POST /responses`, nothing lost.

Per batch: one connection pool sized to `max_concurrent_requests`, one rate limiter
(given limits, or learned from the `x-ratelimit-*` headers), one `BatchStop`. Per
item (`_run_one`): reserve the estimated tokens, send, classify, retry by the policy,
settle the reservation with the real usage. A 429 pauses the whole batch until the
server's reset instead of letting every worker find the limit on its own; a 401 or
`insufficient_quota` ends every item not yet sent with that error (attempts 0).

`stream()` yields each item's result as it finishes (with its `index`);
`process_batch()` collects the same results in input order into the seed's
`{"total_success", "total_errors", "results"}`. With a journal, `_run_one` answers an
item from it when the exact same request body (which never holds the key) already
succeeded at that index, and records every result it produces.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from functools import partial
from operator import itemgetter
from typing import Any

import aiohttp
import orjson

from ..engine import (
    BatchStop,
    Failure,
    RateLimiter,
    Reply,
    RetryPolicy,
    Success,
    collect_in_order,
    log_event,
    open_session,
    retrying,
    run_streaming,
    send,
)
from ..engine.bookkeeping import Bookkeeping
from ..engine.http import BodyReader, read_all
from ..engine.summary import BatchSummary
from ..engine.sync import run_sync
from .errors import bad_body, classify, response_failure, stream_error
from .request import ResponsesRequest
from .sse import is_event_stream, read_final_event
from .wire import check_prompt

logger = logging.getLogger("genai_coroutines.responses")

Outcome = Success[tuple[str, Any]] | Failure
"""A usable answer (raw response JSON, usage) or why there is none."""

USER_AGENT = "genai-coroutines/2 (python)"


class BatchContext:
    """Everything the items of one batch share."""

    @property
    def read_body(self) -> BodyReader:
        """How a reply's body is read; while the limits are being learned, the headers
        are handed to the limiter first, so the batch need not wait for the probe's body
        (a slow model's whole answer) before it starts."""
        return self._observe_then_read if self.limiter.learning else self._read_body

    async def _observe_then_read(self, response: aiohttp.ClientResponse) -> bytes:
        self.limiter.observe(response.headers)
        return await self._read_body(response)

    def __init__(
        self,
        request: ResponsesRequest,
        session: aiohttp.ClientSession,
        books: Bookkeeping,
    ) -> None:
        self.request = request
        self.session = session
        self.books = books
        """Journal lookups and records of each item."""
        self.wait = books.progress.wait
        """How backoffs are slept (the progress bar counts the items sleeping)."""
        self.template = request._template
        self.api_key = request.api_key or ""
        self.url = request.base_url.rstrip("/") + "/responses"
        self.timeout = aiohttp.ClientTimeout(total=request.timeout_secs)
        self._read_body: BodyReader = read_final_event if request.stream else read_all
        self.limiter = RateLimiter(
            request.requests_per_minute, request.tokens_per_minute, learn=True
        )
        self.policy = RetryPolicy(
            max_retries=request.max_retries,
            initial_delay=request.retry_delay_min_ms / 1000.0,
            max_delay=request.retry_delay_max_ms / 1000.0,
            jitter=0.25,
            jitter_down=False,  # the seed's bounds hold: no wait below retry_delay_min_ms
            max_server_wait=request.max_retry_wait_secs,
        )
        self.stop = BatchStop()
        self.retries = self.rate_limited = 0


def request_headers(request: ResponsesRequest) -> dict[str, str]:
    """Bearer auth and JSON, overridden (case-insensitively) by `extra_headers`."""
    extra = dict(request.extra_headers or {})
    ours = {
        "Authorization": f"Bearer {request.api_key}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    overridden = {name.lower() for name in extra}
    return {**{k: v for k, v in ours.items() if k.lower() not in overridden}, **extra}


class ResponsesProcessor:
    """Runs `ResponsesRequest` batches; reuse one freely (it only remembers `last_summary`)."""

    last_summary: BatchSummary | None = None
    """Totals of the latest `stream()`: counts, retries, 429s, tokens and estimated cost."""

    async def process_batch(
        self,
        request: ResponsesRequest,
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: BatchSummary | None = None,
    ) -> dict[str, Any]:
        """Every prompt's result in input order: `{"total_success", "total_errors", "results"}`.

        Never raises for per-item failures; they are result dicts with `success: False`.
        """
        results = await collect_in_order(
            self.stream(request, journal=journal, progress=progress, summary=summary),
            itemgetter("index"),
        )
        ok = sum(1 for result in results if result["success"])
        return {"total_success": ok, "total_errors": len(results) - ok, "results": results}

    def process_batch_sync(self, request: ResponsesRequest, **options: Any) -> dict[str, Any]:
        """`process_batch` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process_batch(request, **options))

    async def stream(
        self,
        request: ResponsesRequest,
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: BatchSummary | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Each item's result dict (carrying its `index`) as soon as it finishes.

        `journal` names a file recording every result as it happens: run the same batch
        with it again and the items that succeeded come back from it (`"from_journal":
        True`) without being sent. `progress` shows a bar; `summary` (also kept as
        `last_summary`) totals counts, retries, 429s, tokens and an estimated cost.
        """
        if not isinstance(request, ResponsesRequest):
            raise TypeError(f"expected a ResponsesRequest, not {type(request).__name__}")
        prompts = request.user_prompts
        books = Bookkeeping(
            prompts,
            summary=summary or BatchSummary(model=request.model),
            progress=progress,
            unit="prompt",
            journal=journal,
            kind="responses",
        )
        books.summary.model = books.summary.model or request.model  # what prices tokens
        self.last_summary = books.summary
        started = time.perf_counter()
        log_event(
            logger,
            logging.INFO,
            "batch_start",
            model=request.model,
            prompts="lazy" if books.total is None else books.total,
            concurrency=request.max_concurrent_requests,
            stream=bool(request.stream),
        )
        concurrency = request.max_concurrent_requests
        ctx: BatchContext | None = None
        try:
            async with open_session(concurrency, request_headers(request)) as session:
                ctx = BatchContext(request, session, books)
                work = partial(self._run_one, ctx)
                async for result in run_streaming(prompts, work, concurrency=concurrency):
                    books.add(result)
                    yield result
        finally:
            if ctx is not None:
                books.summary.rate_limited += ctx.rate_limited
                log_event(
                    logger,
                    logging.INFO,
                    "batch_done",
                    ok=books.succeeded,
                    errors=books.failed,
                    retries=ctx.retries,
                    rate_limited=ctx.rate_limited,
                    secs=f"{time.perf_counter() - started:.2f}",
                )
            books.close()

    async def _run_one(self, ctx: BatchContext, index: int, prompt: Any) -> dict[str, Any]:
        """One prompt, retried until it succeeds or the policy gives up. Never raises."""
        started = time.perf_counter()
        if ctx.stop.failure is not None:
            return _error_result(index, ctx.stop.failure, 0, started)
        problem = check_prompt(prompt)
        if problem is not None:
            failure = Failure(
                f"user_prompts[{index}] {problem}",
                "invalid_request_error",
                retriable=False,
                param="user_prompts",
            )
            return _error_result(index, failure, 0, started)
        body = ctx.template.body(prompt)
        done = ctx.books.replay(index, body)
        if done is not None:
            return done
        estimate = ctx.template.estimate(prompt)
        sent = 0

        async def attempt() -> Outcome:
            nonlocal sent
            if ctx.stop.failure is None:
                await ctx.limiter.acquire(estimate)
            if ctx.stop.failure is not None:
                return ctx.stop.failure
            sent += 1
            reply = await send(
                ctx.session,
                "POST",
                ctx.url,
                timeout=ctx.timeout,
                data=body,
                read_body=ctx.read_body,
            )
            return _judge(ctx, reply, estimate)

        outcome, _ = await retrying(
            attempt, ctx.policy, on_retry=partial(_on_retry, ctx, index), sleep=ctx.wait
        )
        return ctx.books.record(index, _result(index, outcome, sent, started))


def _result(index: int, outcome: Outcome, sent: int, started: float) -> dict[str, Any]:
    """The seed's result dict (plus index, status, latency) for a finished item."""
    if isinstance(outcome, Failure):
        log_event(
            logger,
            logging.WARNING,
            "task_failed",
            index=index,
            error_type=outcome.error_type,
            status=outcome.status,
            code=outcome.code,
            attempts=sent,
        )
        return _error_result(index, outcome, sent, started)
    raw, usage = outcome.value
    latency_ms = round((time.perf_counter() - started) * 1000.0, 1)
    log_event(logger, logging.DEBUG, "task_success", index=index, attempts=sent, ms=latency_ms)
    return {
        "index": index,
        "success": True,
        "raw_response": raw,
        "usage": usage,
        "status": 200,
        "latency_ms": latency_ms,
        "attempts": sent,
    }


def _judge(ctx: BatchContext, reply: Reply | Failure, estimate: int) -> Outcome:
    """What one attempt produced, with the limiter and the batch stop told about it.

    The reservation is settled before the reply's `x-ratelimit-*` headers are
    observed, so where the server counts differently from our estimate (OpenAI
    charges `max_output_tokens` up front), its `remaining` has the last word.
    """
    limiter = ctx.limiter
    if isinstance(reply, Failure):
        limiter.observe(None)
        return reply
    if reply.status == 200:
        outcome = _answer(reply)
        if isinstance(outcome, Success):
            usage = outcome.value[1]
            used = usage.get("total_tokens") if isinstance(usage, dict) else None
            limiter.settle(estimate, used if isinstance(used, int) else estimate)
        limiter.observe(reply.headers)
        return outcome
    limiter.settle(estimate, 0)
    limiter.observe(reply.headers)
    failure = classify(reply.status, reply.headers, reply.body, ctx.api_key)
    if failure.status == 429:
        ctx.rate_limited += 1
        wait = failure.retry_after if failure.retry_after is not None else ctx.policy.initial_delay
        if failure.retriable and wait <= ctx.policy.max_server_wait:
            limiter.pause(wait)  # beyond the ceiling the item ends; the batch must not freeze
    ctx.stop.record(failure)
    return failure


def _answer(reply: Reply) -> Outcome:
    """A 200's response JSON and usage, from a plain body or a stream's final event."""
    body = reply.body
    streamed = is_event_stream(reply.headers.get("Content-Type"))
    if streamed and not body:
        return Failure(
            "Stream ended before the response completed",
            "connection_error",
            retriable=True,
            status=200,
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bad_body(reply.status, len(body))
    if not isinstance(data, dict):
        return bad_body(reply.status, len(body))
    if streamed:
        if data.get("type") == "error":
            error = data.get("error")
            return stream_error(error if isinstance(error, dict) else data, reply.status)
        data = data.get("response")
        if not isinstance(data, dict):
            return bad_body(reply.status, len(body))
    if data.get("status") == "failed":
        return response_failure(data, reply.status)
    raw = orjson.dumps(data).decode() if streamed else body.decode()
    usage = data.get("usage")
    return Success((raw, usage if isinstance(usage, dict) else None))


def _on_retry(
    ctx: BatchContext, index: int, retry_number: int, failure: Failure, delay: float
) -> None:
    ctx.retries += 1
    log_event(
        logger,
        logging.WARNING,
        "rate_limit" if failure.status == 429 else "retry",
        index=index,
        retry=f"{retry_number}/{ctx.policy.max_retries}",
        reason=failure.error_type,
        status=failure.status,
        delay=f"{delay:.3f}s",
    )


def _error_result(index: int, failure: Failure, attempts: int, started: float) -> dict[str, Any]:
    return {
        "index": index,
        "success": False,
        "error": failure.message,
        "error_type": failure.error_type,
        "param": failure.param,
        "code": failure.code,
        "is_retriable": failure.retriable,
        "attempts": attempts,
        "status": failure.status,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 1),
    }
