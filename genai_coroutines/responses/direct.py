"""The synchronous execution path: one `POST /responses` per item, answered in the reply.

Per item: reserve the estimated tokens on the key's limiter, send, judge the reply,
retry by the policy (through `engine.retrying`, which also pauses every worker on the
key after a 429), settle the reservation with the real usage. While the key's limits
are being learned, the probe's headers reach the limiter before its body is read, so
the batch need not wait for a slow model's whole answer before it starts.

A request estimated above the key's tokens-per-minute limit is not sent: it could never
pass (OpenAI answers it 429 "Request too large"), so it ends `request_too_large` with no
attempt, and reserves nothing that would hold back the requests behind it.

Flex (`service_tier="flex"`): a 429 "Resource Unavailable" is `capacity_unavailable`, a
counted retry after backoff that pauses nobody (the key's quota is not what ran out);
after `flex_fallback_after` of them the item is sent with `service_tier: "auto"`. An
attempt of a flex request may take 900 s unless `timeout_secs` was given.

`attempt` (one POST, judged) is also the background path's way of sending
(`background.py`), with its own reading of the 200.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson

from ..engine import (
    BodyReader,
    Failed,
    Failure,
    ItemEnd,
    ItemRun,
    KeyLimits,
    Outcome,
    RateLimiter,
    Reply,
    Result,
    Retried,
    RetryDetails,
    RetryPolicy,
    Success,
    log_event,
    retrying,
    send,
)
from ..engine.budget import Budget
from ..engine.headers import count
from ..engine.store import Ticket, in_transit_window
from ..engine.telemetry import CHAT, OPENAI, Identity
from .cache_keys import AUTO, ROUTING_CHARS, CacheKeys, prefix_group, with_key
from .errors import (
    bad_body,
    classify,
    response_failure,
    stream_error,
    tokens_charged,
    too_large,
)
from .prices import DEFAULT_OUTPUT_ALLOWANCE, PriceTable, tier_share, token_budget
from .request import ResponsesRequest
from .results import Answer, answered, logger, rendered, revived
from .sse import is_event_stream, read_final_event
from .wire import prompt_error

Attempted = Success[Answer] | Failure
"""One attempt's usable answer, or why there is none."""


class Read(Protocol):
    """What a 200 reply was read into: an `Answer`, or a background path's `Queued`."""

    @property
    def usage(self) -> dict[str, Any] | None: ...


A = TypeVar("A", bound=Read)


@dataclass(slots=True)
class Tries(Retried):
    """What one item's attempts came to so far (its result's `attempts`, `rate_limited`):
    `retrying`'s counts, and these."""

    sent: int = 0
    """POSTs sent."""
    capacity: int = 0
    """Flex "Resource Unavailable" 429s received (`flex_fallback_after` counts them)."""


@dataclass(slots=True)
class Prepared:
    body: bytes
    estimate: int
    """Tokens reserved on the limiter before sending."""
    cache_group: str | None = None
    """With `prompt_cache_key="auto"`: the prefix whose planned key each send adds to
    `body` (`cache_keys`; not in `body`, so not in the journal's digest)."""


def budget_for(
    request: ResponsesRequest,
    limit_usd: float,
    prices: PriceTable,
    *,
    share: float | None = None,
) -> Budget[Prepared]:
    """`max_cost_usd` for this request's items: each estimated at its input estimate plus
    its `max_output_tokens` (or `DEFAULT_OUTPUT_ALLOWANCE`), at the tier in force: half
    price for flex unless it may fall back to standard (`flex_fallback_after`), or
    `share` when the caller knows better (the Batch API: 0.5)."""
    template = request._template
    if share is None:
        flex = request.service_tier == "flex" and request.flex_fallback_after is None
        share = tier_share("flex", prices.tiers) if flex else 1.0
    return token_budget(
        limit_usd,
        model=request.model,
        prices=prices,
        share=share,
        output_allowance=template.max_output or DEFAULT_OUTPUT_ALLOWANCE,
        input_tokens=lambda prepared: prepared.estimate - template.max_output,
    )


def key_limiter(request: ResponsesRequest, limits: KeyLimits) -> RateLimiter:
    """The rate limiter of the request's key and model in `limits`, which every batch on
    them shares (the processor's and the pipeline's alike); its RPM/TPM learned from
    headers, under the request's own `requests_per_minute`/`tokens_per_minute`."""
    return limits.rate(
        request.base_url,
        request.api_key or "",
        request.model,
        requests_per_minute=request.requests_per_minute,
        tokens_per_minute=request.tokens_per_minute,
        learn=True,
    )


def retry_policy(request: ResponsesRequest) -> RetryPolicy:
    return RetryPolicy(
        max_retries=request.max_retries,
        initial_delay=request.retry_delay_min_ms / 1000.0,
        max_delay=request.retry_delay_max_ms / 1000.0,
        jitter=0.25,
        jitter_down=False,  # the documented bounds hold: no wait below retry_delay_min_ms
        max_server_wait=request.max_retry_wait_secs,
        max_rate_limit_wait=request.max_rate_limit_wait_secs,
    )


class DirectAdapter:
    """The `Adapter` of the synchronous path (see `engine.batch`)."""

    kind = "responses"
    unit = "prompt"
    logger = logger

    def __init__(
        self, request: ResponsesRequest, limiter: RateLimiter, cache_keys: CacheKeys | None = None
    ) -> None:
        """`cache_keys`: the planner of `prompt_cache_key="auto"` (the processor's, shared
        by its batches; a new one when not given)."""
        self.request = request
        self.model = request.model
        self.template = request._template
        self.api_key = request.api_key or ""
        self.url = request.base_url.rstrip("/") + "/responses"
        self.timeout = request.attempt_timeout_secs
        self.limiter = limiter
        self.telemetry_identity = Identity(CHAT, OPENAI, self.model)
        self.shape = "output given" if request.max_output_tokens else "output unbounded"
        """What the server's surcharge depends on: an output allowance of its own is
        reserved only for requests without `max_output_tokens`."""
        self.policy = retry_policy(request)
        self._read_body: BodyReader | None = read_final_event if request.stream else None
        self._may_fall_back = (
            request.service_tier == "flex" and request.flex_fallback_after is not None
        )
        self.cache_keys = (cache_keys or CacheKeys()) if request.prompt_cache_key == AUTO else None
        self._one_group = (  # instructions long enough to name the prefix on their own
            prefix_group(self.model, request.system_prompt, "")
            if len(request.system_prompt) >= ROUTING_CHARS
            else None
        )

    async def prepare(self, index: int, prompt: Any) -> Prepared | Failure:
        problem: Exception | None = prompt_error(prompt)
        if problem is None:
            try:
                template = self.template
                prepared = Prepared(template.body(prompt), template.estimate(prompt))
                if self.cache_keys is not None:
                    prepared.cache_group = self._one_group or prefix_group(
                        self.model, self.request.system_prompt, template.input_for(prompt)
                    )
                return prepared
            except (TypeError, ValueError) as exc:  # orjson: surrogates, bytes, big ints...
                problem = ValueError(f"cannot be sent as JSON: {exc}")
        return Failure(
            f"user_prompts[{index}] {problem}", "invalid_input", False, param="user_prompts"
        )

    def digest(self, prepared: Prepared) -> tuple[bytes, ...]:
        return (prepared.body,)

    def input_digest(self, prompt: Any) -> bytes | None:
        """`BodyTemplate.input_digest` of a prompt `prepare` would take (None for one it
        refuses: it gets its error there)."""
        if not (type(prompt) is str and prompt.isascii()) and prompt_error(prompt) is not None:
            return None
        try:
            return self.template.input_digest(prompt)
        except (TypeError, ValueError):  # orjson: what `prepare` refuses too
            return None

    def wire_body(self, prepared: Prepared) -> bytes:
        """The body sent now: with `prompt_cache_key="auto"`, its planned key added."""
        if prepared.cache_group is None or self.cache_keys is None:
            return prepared.body
        return with_key(prepared.body, self.cache_keys.key(prepared.cache_group))

    def render(self, end: ItemEnd[Answer]) -> Result:
        return rendered(end, self.model)

    def revive(self, record: Mapping[str, Any]) -> Outcome[Answer]:
        return revived(record, self.model)

    async def execute(self, run: ItemRun, prepared: Prepared) -> Outcome[Answer]:
        tries = Tries()
        outcome = await self.attempt(run, prepared, tries, answer)
        if isinstance(outcome, Failure):
            outcome = await self._retry(run, prepared, tries, outcome)
        else:
            tries.attempts += 1
        return self.ended(outcome, tries)

    async def _retry(
        self, run: ItemRun, prepared: Prepared, tries: Tries, first: Failure
    ) -> Attempted:
        """The attempts after a `first` that failed, as the policy allows. (Its own function:
        the closure in `execute` would cost every item its cells.)"""

        def attempt() -> Awaitable[Attempted]:
            return self.attempt(run, prepared, tries, answer)

        return await retrying(
            attempt,
            self.policy,
            on_retry=self.log_retry(run.index),
            sleep=run.batch.wait,
            counts=tries,
            limiter=self.limiter,
            first=first,
        )

    async def attempt(
        self,
        run: ItemRun,
        prepared: Prepared,
        tries: Tries,
        accept: Callable[[Reply], Success[A] | Failure],
    ) -> Success[A] | Failure:
        """One `POST /responses` of the item: reserve, send, judge (`accept` reads a 200)."""
        stop, limiter = run.batch.stop, self.limiter
        surcharge = limiter.known_surcharge(self.shape)
        if surcharge is None:
            surcharge = await limiter.surcharge(self.shape)
        reserved = prepared.estimate + surcharge
        if stop.failure is not None:
            return stop.failure
        number = await limiter.acquire(reserved)
        taken_at = time.monotonic()
        if number is None:
            return too_large(reserved, limiter.max_tokens)
        if stop.failure is not None:
            return stop.failure
        tries.sent += 1
        if self._may_fall_back:
            body = self._body(run.index, prepared, tries)
        elif prepared.cache_group is None:  # `wire_body`'s answer, without a call
            body = prepared.body
        else:
            body = self.wire_body(prepared)
        span = (
            None
            if run.trace is None
            else run.trace.attempt(OPENAI, CHAT, self.model, tries.sent - 1)
        )
        reply = await send(
            run.batch.session,
            "POST",
            self.url,
            timeout=self.timeout,
            data=body,
            read_body=self._observe_then_read if limiter.learning else self._read_body,
        )
        # The reservation is settled (`refund`) before the reply's `x-ratelimit-*` headers
        # lower the buckets, so where the server counts differently from our estimate (OpenAI
        # charges `max_output_tokens` up front), its `remaining` has the last word.
        outcome: Success[A] | Failure
        if isinstance(reply, Failure) or reply.status != 200:
            outcome = await self._failed(
                reply, reserved, number, prepared.estimate, stop.record, taken_at
            )
        else:  # here, not in a coroutine of its own: this is every answer's path
            outcome = accept(reply)
            refund = 0
            if isinstance(outcome, Success):
                usage = outcome.value.usage
                used = usage.get("total_tokens") if usage is not None else None
                refund = reserved - used if isinstance(used, int) else 0
            window = _window(reply, taken_at)
            await limiter.observe(reply.headers, refund=refund, number=number, window=window)
        if span is not None:
            span.end(reply, outcome)
        if isinstance(outcome, Failure) and outcome.error_type == "capacity_unavailable":
            tries.capacity += 1
        return outcome

    def _body(self, index: int, prepared: Prepared, tries: Tries) -> bytes:
        """The item's body, or after `flex_fallback_after` capacity 429s the same body with
        `service_tier: "auto"` (OpenAI's other remedy; billed at the tier that serves it)."""
        after = self.request.flex_fallback_after
        assert after is not None
        if tries.capacity < after:
            return self.wire_body(prepared)
        if tries.capacity == after:
            log_event(logger, logging.INFO, "flex_fallback", index=index, capacity_429s=after)
        body = orjson.loads(self.wire_body(prepared))
        body["service_tier"] = "auto"
        return orjson.dumps(body)

    def ended(self, last: Attempted, tries: Tries) -> Outcome[Answer]:
        """The item's outcome from its last attempt's."""
        if isinstance(last, Failure):
            return Failed(last, tries.sent, tries.rate_limited)
        return answered(last.value, self.model, tries.sent, tries.rate_limited)

    def log_retry(self, index: int) -> Callable[[RetryDetails], None]:
        def on_retry(details: RetryDetails) -> None:
            _log_retry(index, details, self.policy.max_retries)

        return on_retry

    async def _observe_then_read(self, response: aiohttp.ClientResponse) -> bytes:
        """While the limits are learned: a 200's headers end the first request's solo flight
        before its body (a stream) is read. An error's do not: the others wait until it is
        judged (`_failed`), so a bad key or no quota stops them before they are sent."""
        if response.status == 200:
            await self.limiter.observe(response.headers)
        return await (response.read() if self._read_body is None else self._read_body(response))

    async def _failed(
        self,
        reply: Reply | Failure,
        reserved: int,
        number: Ticket,
        estimate: int,
        record: Callable[[Failure], None],
        taken_at: float,
    ) -> Failure:
        """An attempt without a 200 (no reply, or an error status), with the batch stop and
        the limiter told about it: the stop first, so that no request the limiter lets go
        on (the first one's wait ends here) is sent once it dooms the batch; the whole
        reservation goes back before the headers lower the buckets, and a 429 that says
        what the request counted teaches the surcharge."""
        limiter = self.limiter
        if isinstance(reply, Failure):
            await limiter.observe(None)
            return reply
        failure = classify(reply.status, reply.headers, reply.body, self.api_key)
        record(failure)
        window = _window(reply, taken_at)
        await limiter.observe(reply.headers, refund=reserved, number=number, window=window)
        charged = tokens_charged(failure)
        if charged is not None:
            await limiter.charged(charged, estimate, self.shape)
        return failure


def _window(reply: Reply, taken_at: float) -> float:
    """How far back the reply's `remaining` may have been counted: the time since the
    request was taken from the buckets (`taken_at`) less the server's own time on it
    (`store.in_transit_window`)."""
    server_ms = count(reply.headers.get("openai-processing-ms"))
    round_trip = time.monotonic() - taken_at
    return in_transit_window(round_trip, None if server_ms is None else server_ms / 1000)


def answer(reply: Reply) -> Attempted:
    """A 200's response JSON and usage, from a plain body or a stream's final event."""
    body = reply.body
    streamed = is_event_stream(reply.headers.get("Content-Type"))
    if streamed and not body:
        return Failure(
            "Stream ended before the response completed", "connection_error", True, status=200
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
    problem = unusable(data, reply.status)
    if problem is not None:
        return problem
    raw = orjson.dumps(data).decode() if streamed else body.decode()
    usage, tier, response_id = data.get("usage"), data.get("service_tier"), data.get("id")
    return Success(
        Answer(
            raw,
            usage if isinstance(usage, dict) else None,
            tier if isinstance(tier, str) else None,
            response_id if isinstance(response_id, str) else None,
        )
    )


def unusable(data: dict[str, Any], status: int) -> Failure | None:
    """Why a 200's JSON is not a finished response: an `error` object in place of one, a
    failed response, or one still queued or running (with no output to read)."""
    if data.get("object") != "response" and isinstance(data.get("error"), dict):
        return stream_error(data["error"], status)
    state = data.get("status")
    if state == "failed":
        return response_failure(data, status)
    if state in ("queued", "in_progress") and not data.get("output"):
        return Failure(
            f"{status} OK but response {data.get('id')} is still {state}, with no output yet",
            "invalid_response",
            retriable=False,
            status=status,
        )
    return None


def _log_retry(index: int, details: RetryDetails, max_retries: int) -> None:
    failure = details.failure
    log_event(
        logger,
        logging.WARNING,
        "rate_limit" if failure.rate_limited else "retry",
        index=index,
        retry=f"{details.retry_number}/{max_retries}",
        reason=failure.error_type,
        status=failure.status,
        delay=f"{details.wait:.3f}s",
    )
