"""Background mode and stored responses: `background: true`, `GET /v1/responses/{id}`, `/cancel`.

A `POST /v1/responses` with `background: true` (and not `stream: true`) passes every gate of
a normal request (`openai_api`: validation, which refuses `store: false`; quota; flex; the
buckets), then answers at once with the Response in `status: "queued"`. It stays queued
for `background_queue_seconds`, goes `in_progress` for the model's usual latency
(`EmulatorConfig.latency`), then ends `completed` (or `incomplete` when `max_output_tokens`
cuts it, as a normal answer would) with the output `OpenAIEmulation.produce` gives any
request; at `background_failure_rate` (seeded) it ends `failed` with a `server_error`.

Every stored response (`store` not false, background or not) is kept for `GET
/v1/responses/{id}` for `stored_response_ttl` seconds, the last `RETRIEVABLE_LIMIT` of them;
then the GET answers 404. Choices where the real API is not observable from outside:

- `background: true` with `stream: true` is answered as a normal stream (then retrievable).
  Resuming a stream with `GET ...?stream=true&starting_after=N` is not emulated: the GET
  always answers the JSON Response.
- `POST /v1/responses/{id}/cancel` of a queued or in-progress background response ends it
  `cancelled` (its token charge is refunded under "settle" accounting); of a cancelled one it
  answers it again (idempotent, as the guide says). Of a non-background response, or of one
  already `completed`/`failed`/`incomplete`, it answers 400 (wording is the emulator's own).
- GET polls count under the `responses_poll` endpoint of `Stats.requests` (faults too),
  cancels under `responses_cancel`; only POSTs count in `responses_by_digest`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .openai_output import STREAM_FAILURE, new_id, response_object, unfinished
from .openai_validate import ApiError
from .state import digest

if TYPE_CHECKING:
    from .openai_host import ResponsesHost

POLL_ENDPOINT = "responses_poll"
CANCEL_ENDPOINT = "responses_cancel"
RETRIEVABLE_LIMIT = 20_000
"""Stored responses kept for `GET /v1/responses/{id}` (oldest forgotten first)."""
PENDING = ("queued", "in_progress")


@dataclass
class Stored:
    """One retrievable response: its current body and, for a running background one, its task."""

    body: dict[str, Any]
    created: float
    """`time.monotonic()` when it was first stored (its TTL counts from here)."""
    task: asyncio.Task[None] | None = None
    cost: int = 0
    """Tokens charged at admission (refunded on cancel under "settle" accounting)."""


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.")


class BackgroundResponses:
    """The stored responses of one emulator and the tasks that finish background ones."""

    def __init__(self, api: ResponsesHost) -> None:
        self.api = api
        self._kept: OrderedDict[str, Stored] = OrderedDict()
        self._rng = random.Random(f"background-{api.shared.config.seed}")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/responses/{response_id}", self.retrieve)
        app.router.add_post("/v1/responses/{response_id}/cancel", self.cancel)

    async def close(self) -> None:
        tasks = [kept.task for kept in self._kept.values() if kept.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def keep(self, response: dict[str, Any]) -> None:
        """Store (or update) a response for retrieval."""
        kept = self._kept.get(response["id"])
        if kept is not None:
            kept.body = response
            return
        self._kept[response["id"]] = Stored(response, time.monotonic())
        while len(self._kept) > RETRIEVABLE_LIMIT:
            _, oldest = self._kept.popitem(last=False)
            if oldest.task is not None:
                oldest.task.cancel()

    def lookup(self, response_id: str) -> Stored | None:
        """The stored response, or None when unknown or older than `stored_response_ttl`."""
        kept = self._kept.get(response_id)
        if kept is None:
            return None
        if time.monotonic() - kept.created > self.api.shared.config.stored_response_ttl:
            del self._kept[response_id]
            if kept.task is not None:
                kept.task.cancel()
            return None
        return kept

    def submit(self, body: dict[str, Any], cost: int) -> dict[str, Any]:
        """Queue an admitted background request; returns its `queued` Response."""
        response_id = new_id("resp")
        queued = unfinished(response_object(body, response_id, [], {}, None), "queued")
        self.keep(queued)
        kept = self._kept[response_id]
        kept.cost = cost
        kept.task = asyncio.get_running_loop().create_task(self._run(body, kept))
        return queued

    async def _run(self, body: dict[str, Any], kept: Stored) -> None:
        config = self.api.shared.config
        await asyncio.sleep(config.background_queue_seconds)
        kept.body = {**kept.body, "status": "in_progress"}
        await self.api.think()
        response_id = kept.body["id"]
        if self._rng.random() < config.background_failure_rate:
            kept.body = {
                **unfinished(kept.body, "failed"),
                "error": {"code": "server_error", "message": STREAM_FAILURE},
            }
            self.api.settle(kept.cost, None)
        else:
            result = self.api.produce(body, response_id)
            self.api.settle(kept.cost, result)
            stats = self.api.shared.stats
            stats.completed_by_digest[digest(orjson.dumps(body.get("input")))] += 1
            stats.bill(result["usage"])
        kept.task = None

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            response_id = request.match_info["response_id"]
            kept = self.lookup(response_id)
            if kept is None:
                raise not_found(response_id)
            return self.api.plain_json(200, kept.body, started)

        return await self.api.guarded(POLL_ENDPOINT, request, handler)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            response_id = request.match_info["response_id"]
            kept = self.lookup(response_id)
            if kept is None:
                raise not_found(response_id)
            status = kept.body["status"]
            if not kept.body.get("background"):
                raise ApiError(400, "Only responses created with background=true can be cancelled.")
            if status in PENDING:
                if kept.task is not None:
                    kept.task.cancel()
                    kept.task = None
                kept.body = unfinished(kept.body, "cancelled")
                self.api.settle(kept.cost, None)
            elif status != "cancelled":
                raise ApiError(400, f"Cannot cancel a response with status '{status}'.")
            return self.api.plain_json(200, kept.body, started)

        return await self.api.guarded(CANCEL_ENDPOINT, request, handler)
