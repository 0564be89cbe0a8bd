"""Emulation of `POST /v1/responses`: auth, validation, rate limits, latency, answers, SSE.

A request goes through the same gates, in this order, as it would at api.openai.com
behind a proxy: fault injection (the proxy), bearer auth (401), body validation (400,
see `openai_validate`), unknown `previous_response_id` (400), quota (429
insufficient_quota), flex capacity (429 Resource Unavailable), then the request and
token buckets (429). Only then does the "model" take its lognormal latency and answer
(see `openai_output` for what it says).

The asynchronous paths live in their own modules and share this one's gates and answers:
`openai_background` (`background: true`, `GET /v1/responses/{id}`, `/cancel`),
`openai_files` (`/v1/files`) and `openai_batch` (`/v1/batches`, whose lines are answered by
`check` and `produce` below, the same code as a `POST /v1/responses`).

Choices where the real API is not observable from outside:

- Requests refused before the buckets (401, 400, flex 429) cost no quota; every answer
  except 401 and injected faults carries the six `x-ratelimit-*` headers.
- A request's token cost for the TPM bucket is its estimated input tokens plus
  `max_output_tokens`, or `default_output_tokens` (16) when that is unset. A cost above the
  TPM limit can never pass and is refused as "Request too large"; one within it but above
  what the bucket banks (`burst_seconds` below 60) waits for a full bucket and borrows. With
  `token_accounting="settle"` (the default) the charge is corrected to the answer's real
  `total_tokens` once it exists; with "provider" it is never refunded, and a request the
  buckets refuse still takes one from the RPM bucket.
- Without `openai_rpm`/`openai_tpm` nothing is limited, and the headers report
  `UNLIMITED_RPM` / `UNLIMITED_TPM` with full buckets: figures no client reaches, since a
  client that follows the headers (as this library does, for the life of the process)
  would otherwise pace itself to a limit that is never enforced.
- `previous_response_id` must name one of the last `STORED_LIMIT` responses issued
  with `store` not false. Its context (input + output tokens) is added to this
  request's `input_tokens` and reported as `cached_tokens`.
- With `prompt_caching` on, `cached_tokens` also counts the prompt's prefix the cache served
  (`prompt_cache`); every path that answers (synchronous, background, Batch API lines) asks it.
- `service_tier: "flex"` is refused at `flex_unavailable_rate` (seeded) with `FLEX_UNAVAILABLE`.
  The flex guide documents only "429 Resource Unavailable" and "You will not be charged";
  the body's `type` and `code` ("resource_unavailable") are the emulator's guess.
- `openai_transit_seconds` is slept as a `POST /v1/responses` arrives, before anything else
  and outside `openai-processing-ms`: the network between client and server, which
  loopback does not have. A reply's `remaining` then misses the requests any client sent
  in the last that long (still "on the wire"), as the real API's does; the reply itself
  comes back at once.
- `openai_split_body_seconds` sends a non-streamed reply (an answer or an error) in two
  parts, its headers and first body byte, then the rest: a client that acts on the headers
  alone acts before it has read what the reply says.
- Latency is slept before the first byte, also for streams. An answer counts in
  `completed_by_digest` once produced, before it is sent: like billing, a client that
  timed out or hung up mid-stream has still "paid" for it. A stream broken by a fault
  (`stream-error`, `stream-failed`, `stream-cut`) does not count: the server failed,
  so the client's retry is not paying twice.
- Each request is remembered in `Stats.received` with its `peer` (the client's
  address and port), which tells which kept-alive connection carried it.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .fault_kinds import BROKEN_STREAMS
from .faults import inject
from .openai_background import BackgroundResponses
from .openai_batch import BatchEmulation
from .openai_files import FilesEmulation
from .openai_output import (
    Answer,
    broken_events,
    input_tokens,
    new_id,
    response_object,
    sse_frame,
    stream_events,
)
from .openai_validate import JSON_BODY_ERROR, ApiError, message_texts, validate
from .prompt_cache import PromptCache
from .state import RateWindow, digest, go_duration

if TYPE_CHECKING:
    from .shared import Shared

__all__ = ["OpenAIEmulation", "mask_key", "new_id", "response_object"]

ENDPOINT = "responses"
ORGANIZATION = "org-emulator"
UNLIMITED_RPM = 1_000_000
UNLIMITED_TPM = 1_000_000_000
STORED_LIMIT = 100_000
REFRAMED_WRITE = 7
"""Bytes per write of a `stream-reframed` answer, so events arrive split across chunks."""
KEEP_ALIVE = b": keep-alive\r\n\r\n"
LATENCY_SIGMA = 0.25
RATE_LIMIT_DOCS = "Visit https://platform.openai.com/account/rate-limits to learn more."
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
FLEX_UNAVAILABLE = (
    "Resource unavailable. Please try again later. You will not be charged for this request."
)
"""Message of the flex capacity 429 (documented: "429 Resource Unavailable", "You will not be
charged"); the exact wording, `type` and `code` of the real body are not documented."""


def mask_key(key: str) -> str:
    """Show a key the way OpenAI's 401 does: a prefix, stars, and the last four of long keys."""
    if len(key) >= 24:
        return key[:8] + "*" * (len(key) - 12) + key[-4:]
    return key[: min(5, len(key) // 2)] + "***"


class OpenAIEmulation:
    """The OpenAI side of one `Emulator`: `/v1/responses` with its rate windows and stored ids,
    and the asynchronous paths (background responses, files, batches) built on it."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._windows: dict[str, tuple[tuple[int, float], RateWindow]] = {}
        self._stored: OrderedDict[str, int] = OrderedDict()
        """Response id -> its context tokens (input + output), oldest first."""
        self._flex_rng = random.Random(f"flex-{shared.config.seed}")
        self.background = BackgroundResponses(self)
        self.files = FilesEmulation(self)
        self.batches = BatchEmulation(self, self.files)
        self.prompt_cache = PromptCache(shared)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self.create_response)
        self.background.add_routes(app)
        self.files.add_routes(app)
        self.batches.add_routes(app)

    def reset_limits(self) -> None:
        """Forget the rate windows and the prompt cache (its machines' per-minute shares)."""
        self._windows.clear()
        self.prompt_cache.clear()

    async def close(self) -> None:
        """Stop the background responses and batches still running."""
        await self.background.close()
        await self.batches.close()

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        transit = self.shared.config.openai_transit_seconds
        if transit > 0:
            await asyncio.sleep(transit)
        started = time.monotonic()
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        stats = self.shared.stats
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        seen = body if body is not None else raw.decode(errors="replace")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        stats.remember({"endpoint": ENDPOINT, "body": seen, "headers": headers, "peer": peer})
        fields = body if isinstance(body, dict) else {}
        stats.log(ENDPOINT, f"request {digest(orjson.dumps(fields.get('input')))}")
        fault = self.shared.faults.pick(
            ENDPOINT,
            streaming=fields.get("stream") is True,
            text="\n".join(message_texts(fields.get("input"))),
        )
        faulted = await inject(fault, ENDPOINT, request, self.shared.config, stats)
        if faulted is not None:
            return faulted
        try:
            response = await self._answer(request, body, started, fault)
        except ApiError as error:
            response = self._json(error.status, error.body(), started, error)
        stats.count(ENDPOINT, response.status)
        split = self.shared.config.openai_split_body_seconds
        if split > 0 and isinstance(response, web.Response):
            return await _split(request, response, split)
        return response

    async def _answer(
        self, request: web.Request, body: Any, started: float, fault: str | None
    ) -> web.StreamResponse:
        self.authenticate(request.headers.get("Authorization", ""))
        if body is None:
            raise ApiError(400, JSON_BODY_ERROR)
        if isinstance(body, dict):
            self.shared.stats.responses_by_digest[digest(orjson.dumps(body.get("input")))] += 1
        self.check(body)
        config = self.shared.config
        if config.insufficient_quota:
            raise ApiError(429, QUOTA, type="insufficient_quota", code="insufficient_quota")
        self._check_flex(body)
        cost = self.token_cost(body)
        self._admit(body["model"], cost)
        if body.get("background") and not body.get("stream"):
            return self._json(200, self.background.submit(body, cost), started)
        await self.think()
        result = self.produce(body)
        self.settle(cost, result)
        if fault not in BROKEN_STREAMS:
            self.shared.stats.completed_by_digest[digest(orjson.dumps(body.get("input")))] += 1
            self.shared.stats.bill(result["usage"])
        if body.get("stream"):
            return await self._stream(request, result, started, fault)
        return self._json(200, result, started)

    def check(self, body: Any) -> None:
        """The checks every path runs on a request body: validation, then `previous_response_id`.
        Raises the `ApiError` the real API answers."""
        validate(body)
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self._stored:
            raise ApiError(
                400,
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )

    def produce(
        self, body: dict[str, Any], response_id: str | None = None, *, keep: bool = True
    ) -> dict[str, Any]:
        """The full Response to a checked body, its prompt served by the prompt cache. Unless
        `keep` is false or `store` is, it is remembered for `previous_response_id` and for
        `GET /v1/responses/{id}`."""
        previous = body.get("previous_response_id")
        context_tokens = self._stored.get(previous, 0) if previous else 0
        cached = self.prompt_cache.cached_tokens(body)
        output, usage, incomplete = Answer(body, new_id, context_tokens, cached).build()
        response = response_object(body, response_id or new_id("resp"), output, usage, incomplete)
        if keep and body.get("store") is not False:
            self._stored[response["id"]] = usage["total_tokens"]
            if len(self._stored) > STORED_LIMIT:
                self._stored.popitem(last=False)
            self.background.keep(response)
        return response

    async def think(self) -> None:
        """The model's lognormal latency around `EmulatorConfig.latency` (nothing when 0)."""
        latency = self.shared.config.latency
        if latency > 0:
            await asyncio.sleep(self.shared.rng.lognormvariate(math.log(latency), LATENCY_SIGMA))

    def settle(self, cost: int, result: dict[str, Any] | None) -> None:
        """Correct an admission charge of `cost` tokens to what `result` used (None: nothing),
        under `token_accounting="settle"`; "provider" accounting never corrects."""
        tokens = self._window("tokens")
        if tokens is None or self.shared.config.token_accounting == "provider":
            return
        used = 0 if result is None else (result.get("usage") or {}).get("total_tokens", 0)
        tokens.give_back(cost - used)
        self.shared.stats.tokens_charged -= cost - used

    def authenticate(self, authorization: str) -> None:
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, NO_KEY, param=None, code=None)
        if not secrets.compare_digest(key, self.shared.config.openai_api_key):
            raise ApiError(
                401,
                f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    async def guarded(
        self,
        endpoint: str,
        request: web.Request,
        handler: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Answer a request to one of the asynchronous paths: fault injection, bearer auth,
        then `handler`; an `ApiError` it raises is sent in OpenAI's envelope. Counted under
        `endpoint` in `Stats.requests`."""
        started = time.monotonic()
        stats = self.shared.stats
        fault = self.shared.faults.pick(endpoint)
        faulted = await inject(fault, endpoint, request, self.shared.config, stats)
        if faulted is not None:
            return faulted
        try:
            self.authenticate(request.headers.get("Authorization", ""))
            response = await handler()
        except ApiError as error:
            response = self.plain_json(error.status, error.body(), started)
        stats.count(endpoint, response.status)
        return response

    def plain_json(self, status: int, payload: Any, started: float) -> web.Response:
        """A JSON answer with the headers every OpenAI answer has, but no rate-limit ones."""
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=self._base_headers(started),
        )

    def token_cost(self, body: dict[str, Any]) -> int:
        """What the TPM bucket is charged: estimated input plus the output allowance."""
        allowance = body.get("max_output_tokens")
        default = self.shared.config.default_output_tokens
        return input_tokens(body) + (default if allowance is None else allowance)

    def _check_flex(self, body: dict[str, Any]) -> None:
        """Refuse a flex request for lack of capacity at `flex_unavailable_rate` (no quota used)."""
        if body.get("service_tier") != "flex":
            return
        if self._flex_rng.random() < self.shared.config.flex_unavailable_rate:
            self.shared.stats.flex_unavailable += 1
            raise ApiError(
                429, FLEX_UNAVAILABLE, type="resource_unavailable", code="resource_unavailable"
            )

    def _window(self, kind: str) -> RateWindow | None:
        """The bucket for "requests" or "tokens", rebuilt whenever the config changed."""
        config = self.shared.config
        per_minute = config.openai_rpm if kind == "requests" else config.openai_tpm
        if per_minute is None:
            self._windows.pop(kind, None)
            return None
        key = (per_minute, config.burst_seconds)
        held = self._windows.get(kind)
        if held is None or held[0] != key:
            held = (key, RateWindow(per_minute, config.burst_seconds))
            self._windows[kind] = held
        return held[1]

    def _admit(self, model: str, cost: int) -> None:
        """Take one request and `cost` tokens, or raise the 429 OpenAI would send. Under
        "provider" accounting a refused request still takes its one from the RPM bucket."""
        requests, tokens = self._window("requests"), self._window("tokens")
        provider = self.shared.config.token_accounting == "provider"
        where = f"for {model} in organization {ORGANIZATION}"
        if tokens is not None and cost > tokens.per_minute:
            if provider and requests is not None:
                requests.give_back(-1)
            raise ApiError(
                429,
                f"Request too large {where} on tokens per min (TPM): Limit {tokens.per_minute}, "
                f"Requested {cost}. The input or output tokens must be reduced in order to run "
                f"successfully. {RATE_LIMIT_DOCS}",
                type="tokens",
                code="rate_limit_exceeded",
            )
        for kind, window, amount in (("requests", requests, 1), ("tokens", tokens, cost)):
            if window is None:
                continue
            used = max(0, window.per_minute - window.remaining)
            wait = window.take(amount)
            if wait > 0:
                if requests is not None and provider == (kind == "requests"):
                    # settle: refund the request taken before the tokens refused it;
                    # provider: charge the request the RPM bucket refused
                    requests.give_back(1 if kind == "tokens" else -1)
                unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
                raise ApiError(
                    429,
                    f"Rate limit reached {where} on {unit}: Limit {window.per_minute}, "
                    f"Used {used}, Requested {amount}. Please try again in {go_duration(wait)}. "
                    f"{RATE_LIMIT_DOCS}",
                    type=kind,
                    code="rate_limit_exceeded",
                    retry_after=wait,
                )

        self.shared.stats.tokens_charged += cost

    def _base_headers(self, started: float) -> dict[str, str]:
        return {
            "x-request-id": f"req_{secrets.token_hex(16)}",
            "openai-organization": ORGANIZATION,
            "openai-version": "2020-10-01",
            "openai-processing-ms": str(round((time.monotonic() - started) * 1000)),
        }

    def _headers(self, started: float, error: ApiError | None = None) -> dict[str, str]:
        headers = self._base_headers(started)
        if error is not None and error.status == 401:
            return headers
        for kind, unlimited in (("requests", UNLIMITED_RPM), ("tokens", UNLIMITED_TPM)):
            window = self._window(kind)
            limit, remaining, reset = (
                (unlimited, unlimited, 0.0)
                if window is None
                else (window.per_minute, window.remaining, window.reset_seconds)
            )
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
            headers[f"x-ratelimit-reset-{kind}"] = go_duration(reset)
        if error is not None and error.retry_after is not None:
            headers["retry-after-ms"] = str(math.ceil(error.retry_after * 1000))
            headers["retry-after"] = str(math.ceil(error.retry_after))
        return headers

    def _json(
        self, status: int, payload: dict[str, Any], started: float, error: ApiError | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=self._headers(started, error),
        )

    async def _stream(
        self, request: web.Request, response: dict[str, Any], started: float, fault: str | None
    ) -> web.StreamResponse:
        """Send `response` as the real SSE sequence, pausing `stream_chunk_delay` after deltas,
        or as a stream `fault` (see `fault_kinds.FAULT_KINDS`) breaks or reframes it."""
        stream = web.StreamResponse(status=200, headers=self._headers(started))
        stream.content_type = "text/event-stream"
        stream.headers["Cache-Control"] = "no-cache"
        await stream.prepare(request)
        config = self.shared.config
        reframed = fault == "stream-reframed"
        events = (
            broken_events(response, fault, config.fault_error_code)
            if fault in BROKEN_STREAMS
            else stream_events(response)
        )
        try:
            if reframed:
                await stream.write(KEEP_ALIVE)
            for event in events:
                frame = sse_frame(event, reframed)
                step = REFRAMED_WRITE if reframed else len(frame)
                for start in range(0, len(frame), step):
                    await stream.write(frame[start : start + step])
                if config.stream_chunk_delay > 0 and event["type"].endswith(".delta"):
                    await asyncio.sleep(config.stream_chunk_delay)
            await stream.write_eof()
        except ConnectionResetError:
            pass  # the client hung up mid-stream, as clients do; the answer was still "paid"
        return stream


async def _split(
    request: web.Request, response: web.Response, seconds: float
) -> web.StreamResponse:
    """`response` sent in two parts: its headers and first body byte, then after `seconds`
    the rest (`openai_split_body_seconds`)."""
    body = response.body
    assert isinstance(body, bytes)
    headers = {k: v for k, v in response.headers.items() if k != "Content-Length"}
    split = web.StreamResponse(status=response.status, headers=headers)
    split.content_length = len(body)
    await split.prepare(request)
    await split.write(body[:1])
    await asyncio.sleep(seconds)
    await split.write(body[1:])
    await split.write_eof()
    return split
