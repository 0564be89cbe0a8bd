"""Emulation of the Datalab API: submit a document, poll until it is converted or extracted.

    POST /api/v1/marker   (deprecated upstream, still used)      multipart form
    POST /api/v1/convert  (what datalab-python-sdk >= 0.5 uses)   multipart form
    POST /api/v1/extract  (structured extraction: a JSON schema)  multipart form
    POST /api/v1/segment  (sections named by a schema)            multipart form
    GET  /api/v1/{marker,convert,extract,segment}/{request_id}    poll
    POST /api/v1/extraction_schemas, GET .../{schema_id}          saved schemas (`schema_id`)
    POST /api/v1/files/upload, PUT /storage/..., GET .../confirm  presigned (`datalab_files`)

Each endpoint reads its own form fields (`datalab_form.FIELDS`) and ignores the rest.
The content is the upload's own text (`datalab_render.read`), or the bytes a
`file_url=datalab://file-N` reference names; `/extract` and a `/marker` `page_schema` fill
the schema from that text (`schema_fill`), `/segment` cuts it by `segmentation_schema`. A job
submitted with `save_checkpoint` shows a `checkpoint_id` once complete; an `/extract` or
`/segment` naming it needs no file and reads the checkpoint's pages without parsing them
again (`Stats.parses_by_digest`, `Stats.checkpoint_reads_by_digest`). A checkpoint is kept
`datalab_checkpoint_ttl` seconds after its job ends (undocumented upstream: "about an hour").
An unknown or expired one is a 404 at submission, or with `datalab_lost_checkpoint="failed"`
an accepted job that ends failed: both are plausible, neither is documented. Each job is
billed per operation (`datalab_billing`), from `datalab_credits_cents` when set.

Behaviour follows https://documentation.datalab.to: `X-API-Key` auth; 429 with
FastAPI's `detail` when the per-key requests-per-minute or concurrent-request limit
is hit; the pages-in-flight limit is *not* a 429 but a job that ends
`{"success": false, "error": "Page rate limit exceeded. ..."}` (docs/common/limits,
platform/troubleshooting); results are deleted `result_ttl` seconds (an hour
upstream) after the job finishes.

Choices where the docs say nothing: polls are neither rate limited nor counted
against the submission RPM; every 429 carries an integer `Retry-After`; failed jobs
answer `{"status": "failed"}` (what the SDK's tests use); a webhook fires once when
a job ends, complete or failed, with no retries; an unknown `schema_id` is a 404. The four
endpoints share one set of limits and one fault plan (`marker_submit`, `marker_poll`,
`marker_accepted`).

A job is a small record holding when it will be ready and the text of its pages: a
poll compares that with the clock, so nothing runs per job except webhook deliveries.
Uploaded bytes are digested and read at submission, then dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from . import datalab_billing, datalab_form, datalab_render
from .datalab_files import DatalabFiles
from .datalab_form import reply
from .datalab_schemas import SavedSchemas
from .faults import maybe_fault
from .state import RateWindow, digest

if TYPE_CHECKING:
    from .shared import Shared

SUBMIT = "marker_submit"
POLL = "marker_poll"
ACCEPTED = "marker_accepted"
"""Endpoint names for `Stats` counters and `FaultPlan.schedule`. Faults on `ACCEPTED`
strike after a job was accepted: it runs and bills, but the client never learns its
`request_id` (the answer lost on the way back), which is how resubmissions pay twice."""

FAIL_MARKER = b"%%FAIL%%"
"""An upload containing these bytes ends as a failed job."""

FAILED = "Processing failed: the document could not be converted"
NOT_FOUND = "Request not found. Results are deleted some time after processing completes."
SUPPORT = "Please try again later, or reach out to support@datalab.to if you need a higher limit."
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(slots=True)
class EmulatedJob:
    """What a poll needs to answer: its settings, its pages' text and when it is ready."""

    base: str
    """`request_check_url` without the request id: scheme, host and endpoint path."""
    options: datalab_form.Options
    content: datalab_render.Content
    submitted_at: float
    ready_at: float
    error: str | None
    cents: dict[str, float]
    """What it costs, per operation (`datalab_billing.operations`); nothing when it fails."""
    checkpoint_id: str | None = None


@dataclass(slots=True)
class Checkpoint:
    """A parse saved with `save_checkpoint`: usable from `ready_at` for `datalab_checkpoint_ttl`."""

    content: datalab_render.Content
    ready_at: float


class DatalabEmulation:
    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.jobs: dict[str, EmulatedJob] = {}
        self._expiry: list[tuple[float, str]] = []
        """Heap of (ready_at, request_id): the oldest results are purged first."""
        self._running: list[tuple[float, int]] = []
        """Heap of (ready_at, pages) of jobs still processing."""
        self._pages_in_flight = 0
        self._rpm: RateWindow | None = None
        self._webhooks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._bases: dict[str, str] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self._checkpoint_expiry: list[tuple[float, str]] = []
        """Heap of (ready_at, checkpoint_id)."""
        self.saved_schemas = SavedSchemas(shared)
        self.files = DatalabFiles(shared)
        self.credits = datalab_billing.Credits(shared.config)

    def add_routes(self, app: web.Application) -> None:
        endpoints = "|".join(datalab_form.ENDPOINTS)
        app.router.add_post(f"/api/v1/{{endpoint:{endpoints}}}", self.submit)
        app.router.add_get(f"/api/v1/{{endpoint:{endpoints}}}/{{request_id}}", self.poll)
        self.saved_schemas.add_routes(app)
        self.files.add_routes(app)

    def save_schema(
        self, schema_json: Any, name: str = "schema", description: str | None = None
    ) -> str:
        """Save an extraction schema as `POST /api/v1/extraction_schemas` does; its id."""
        return self.saved_schemas.save(schema_json, name, description)

    def reset_limits(self) -> None:
        """Refill the RPM bucket; jobs in flight keep counting, as they would upstream."""
        self._rpm = None

    async def close(self) -> None:
        """Cancel webhook deliveries still waiting for their job, then drop the session."""
        pending = list(self._webhooks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pages_in_flight(self) -> int:
        """Pages of the jobs still processing: what `datalab_max_pages_in_flight` limits."""
        self._settle(asyncio.get_running_loop().time())
        return self._pages_in_flight

    # -- handlers -----------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        stats = self.shared.stats
        endpoint = request.match_info["endpoint"]
        faulted = await maybe_fault(SUBMIT, request, self.shared.faults, stats)
        if faulted is not None:
            stats.log(endpoint, f"submit fault {faulted.status}")
            return faulted
        response, request_id = await self._submit(request)
        stats.count(SUBMIT, response.status)
        if request_id is None:
            stats.log(endpoint, f"submit refused {response.status}")
        else:
            stats.log(endpoint, f"submitted {request_id}")
            lost = await maybe_fault(ACCEPTED, request, self.shared.faults, stats)
            if lost is not None:
                stats.log(endpoint, f"answer lost {request_id}")
                return lost
        return response

    async def poll(self, request: web.Request) -> web.StreamResponse:
        stats = self.shared.stats
        endpoint = request.match_info["endpoint"]
        request_id = request.match_info["request_id"]
        faulted = await maybe_fault(POLL, request, self.shared.faults, stats)
        if faulted is not None:
            stats.log(endpoint, f"poll fault {faulted.status} {request_id}")
            return faulted
        response, state = self._poll(request)
        stats.count(POLL, response.status)
        stats.log(endpoint, f"poll {state} {request_id}")
        return response

    # -- submission ---------------------------------------------------------------

    async def _submit(self, request: web.Request) -> tuple[web.Response, str | None]:
        """The answer to a submission, and the request id when a job was accepted."""
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused, None
        endpoint = request.match_info["endpoint"]
        path = f"/api/v1/{endpoint}"
        config = self.shared.config
        wait = self._rpm_wait()
        if wait:
            detail = (
                f"Rate limit exceeded for endpoint {path}. You can make {config.datalab_rpm} "
                f"requests every 60 seconds. {SUPPORT}"
            )
            return _too_many(detail, wait), None

        form = await request.post()
        seen: dict[str, Any] = {
            "endpoint": SUBMIT,
            "path": path,
            "form": datalab_form.wire_fields(form),
            "ignored": datalab_form.ignored_fields(form, endpoint),
        }
        self.shared.stats.remember(seen)
        lost: str | None = None
        try:
            options, upload = datalab_form.parse(form, endpoint)
            options = self.saved_schemas.resolve(options)
            if upload is None:
                key, content, lost = self._from_checkpoint(options)
            else:
                upload = self._resolve(upload, endpoint)
                key = (
                    digest(upload.data)
                    if upload.data is not None
                    else digest(str(upload.file_url).encode())
                )
                content = await asyncio.to_thread(datalab_render.read, upload, options, key)
        except datalab_form.FormError as error:
            seen["status"] = error.status
            return reply(error.status, {"detail": error.detail}), None
        if upload is not None:
            seen.update(filename=upload.filename, content_type=upload.content_type)
        seen["digest"] = key

        cents = datalab_billing.operations(options, len(content.pages), parses=upload is not None)
        if not self.credits.covers(sum(cents.values())):
            seen["status"] = 403
            return reply(403, {"detail": datalab_billing.NO_CREDITS}), None
        now = asyncio.get_running_loop().time()
        self._settle(now)
        self._purge(now)
        limit = config.datalab_max_concurrent
        if limit is not None and len(self._running) >= limit:
            seen["status"] = 429
            detail = (
                f"Concurrency exceeded for endpoint {path}. You can have {limit} concurrent "
                f"requests running at once. {SUPPORT}"
            )
            return _too_many(detail, self._running[0][0] - now), None

        request_id, job = self._accept(request, path, options, content, upload, now, lost, cents)
        seen["status"] = 200
        stats = self.shared.stats
        stats.submissions_by_digest[key] += 1
        stats.submissions_by_endpoint.setdefault(endpoint, Counter())[key] += 1
        if upload is not None and upload.file_url is not None and upload.data is not None:
            stats.references_used[upload.file_url] += 1
        answer: dict[str, Any] = {
            "success": True,
            "error": None,
            "request_id": request_id,
            "request_check_url": f"{job.base}/{request_id}",
            "versions": {},
        }
        return reply(200, answer), request_id

    def _resolve(
        self, upload: datalab_form.ReceivedUpload, endpoint: str
    ) -> datalab_form.ReceivedUpload:
        """The stored file a `datalab://` reference names (an endpoint set to refuse
        references answers as for any URL it cannot fetch); other uploads as they are."""
        if not datalab_form.is_reference(upload.file_url):
            return upload
        if endpoint in self.shared.config.datalab_refuse_references:
            raise datalab_form.FormError(400, datalab_form.NOT_HTTP)
        return self.files.resolve(str(upload.file_url))

    def _from_checkpoint(
        self, options: datalab_form.Options
    ) -> tuple[str, datalab_render.Content, str | None]:
        """The counter key and the pages of the checkpoint a job names, and why it fails
        when the checkpoint is gone and `datalab_lost_checkpoint` is "failed" (else a 404)."""
        checkpoint_id = str(options.checkpoint_id)
        key = f"checkpoint:{checkpoint_id}"
        now = asyncio.get_running_loop().time()
        self._purge(now)
        checkpoint = self.checkpoints.get(checkpoint_id)
        if checkpoint is not None and checkpoint.ready_at <= now:
            return key, checkpoint.content.select(options), None
        lost = (
            f"Checkpoint {checkpoint_id!r} not found. Checkpoints are deleted some time after "
            "they are saved; convert the document again with save_checkpoint=true."
        )
        if self.shared.config.datalab_lost_checkpoint != "failed":
            raise datalab_form.FormError(404, lost)
        nothing = datalab_render.Content(checkpoint_id, key, 0, (), ())
        return key, nothing, lost

    def _accept(
        self,
        request: web.Request,
        path: str,
        options: datalab_form.Options,
        content: datalab_render.Content,
        upload: datalab_form.ReceivedUpload | None,
        now: float,
        lost: str | None,
        cents: dict[str, float],
    ) -> tuple[str, EmulatedJob]:
        """Create the job record and decide, now, how and when it ends (`lost`: why a job
        from a checkpoint that is gone fails); a job that will complete pays `cents`."""
        pages = len(content.pages)
        error = lost or self._refusal(options, content.total_pages, pages)
        ready_at = now
        stats = self.shared.stats
        if error is None:  # it gets processed, even if only to fail
            error = self._failure(upload.data if upload is not None else None)
            ready_at = now + self.shared.config.seconds_per_page * pages
            heapq.heappush(self._running, (ready_at, pages))
            self._pages_in_flight += pages
            stats.pages_processed += pages
            reads = (
                stats.parses_by_digest if upload is not None else stats.checkpoint_reads_by_digest
            )
            reads[content.digest] += 1
        if error is None:
            self.credits.spend(sum(cents.values()))
            stats.cents_billed[options.endpoint] += sum(cents.values())

        request_id = secrets.token_urlsafe(16)
        origin = self.shared.config.datalab_check_origin or f"{request.scheme}://{request.host}"
        job = EmulatedJob(
            base=self._base(f"{origin}{path}"),
            options=options,
            content=content,
            submitted_at=now,
            ready_at=ready_at,
            error=error,
            cents=cents if error is None else {},
        )
        if options.save_checkpoint and error is None:
            job.checkpoint_id = f"ckpt_{secrets.token_hex(8)}"
            self.checkpoints[job.checkpoint_id] = Checkpoint(content, ready_at)
            heapq.heappush(self._checkpoint_expiry, (ready_at, job.checkpoint_id))
        self.jobs[request_id] = job
        heapq.heappush(self._expiry, (ready_at, request_id))
        if options.webhook_url is not None and self.shared.config.webhooks:
            task = asyncio.create_task(self._notify(request_id, job, options.webhook_url))
            self._webhooks.add(task)
            task.add_done_callback(self._webhooks.discard)
        return request_id, job

    def _refusal(self, options: datalab_form.Options, total: int, pages: int) -> str | None:
        """Why a job ends at once, before any processing: no pages, or too many in flight."""
        if pages == 0:
            return (
                f"page_range {options.page_range!r} selects none of the document's {total} pages."
            )
        limit = self.shared.config.datalab_max_pages_in_flight
        if limit is not None and self._pages_in_flight + pages > limit:
            return (
                f"Page rate limit exceeded. Your team has {self._pages_in_flight} pages in flight "
                f"and this request adds {pages} more ({self._pages_in_flight + pages} total, "
                f"limit: {limit:,}). Please wait for some requests to complete before submitting "
                "more, or contact support@datalab.to for a higher limit."
            )
        return None

    def _failure(self, data: bytes | None) -> str | None:
        """Why processing fails: the upload asks for it, or the seeded dice say so."""
        if data is not None and FAIL_MARKER in data:
            return f"{FAILED} (emulated: %%FAIL%% in the upload)."
        rate = self.shared.config.failed_job_rate
        if rate > 0 and self.shared.rng.random() < rate:
            return f"{FAILED} (emulated: failed_job_rate)."
        return None

    def _base(self, url: str) -> str:
        """One shared string per endpoint URL, so 100k jobs don't hold 100k copies."""
        return self._bases.setdefault(url, url)

    # -- polling ------------------------------------------------------------------

    def _poll(self, request: web.Request) -> tuple[web.Response, str]:
        """The answer to a poll, and what it said (for `Stats.events`)."""
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused, "401"
        if self.shared.config.datalab_polls_need_credits and self.credits.exhausted:
            return reply(403, {"detail": datalab_billing.NO_CREDITS}), "403"
        now = asyncio.get_running_loop().time()
        self._purge(now)
        job = self.jobs.get(request.match_info["request_id"])
        if job is None:
            return reply(404, {"detail": NOT_FOUND}), "404"
        if now < job.ready_at:
            return reply(200, {"status": "processing"}), "processing"
        if job.error is not None:
            return reply(200, datalab_render.failed_payload(job.error)), "failed"
        payload = datalab_render.complete_payload(
            job.options,
            job.content,
            runtime=job.ready_at - job.submitted_at,
            cost_breakdown=datalab_billing.cost_breakdown(job.cents),
            segment_pages=self.shared.config.datalab_segment_pages,
            checkpoint_id=job.checkpoint_id,
        )
        return reply(200, payload), "complete"

    # -- bookkeeping --------------------------------------------------------------

    def _rpm_wait(self) -> float:
        """Seconds until the submission RPM allows one more request; 0 takes it now."""
        config = self.shared.config
        if config.datalab_rpm is None:
            self._rpm = None
            return 0.0
        window = self._rpm
        if window is None or window.per_minute != config.datalab_rpm:
            window = self._rpm = RateWindow(config.datalab_rpm, config.burst_seconds)
        return window.take(1)

    def _settle(self, now: float) -> None:
        """Forget jobs that finished processing: they no longer count against limits."""
        while self._running and self._running[0][0] <= now:
            _, pages = heapq.heappop(self._running)
            self._pages_in_flight -= pages

    def _purge(self, now: float) -> None:
        """Drop results older than `result_ttl`, checkpoints older than
        `datalab_checkpoint_ttl`; lazily, on each request."""
        ttl = self.shared.config.result_ttl
        while self._expiry and self._expiry[0][0] + ttl < now:
            _, request_id = heapq.heappop(self._expiry)
            self.jobs.pop(request_id, None)
        ttl = self.shared.config.datalab_checkpoint_ttl
        while self._checkpoint_expiry and self._checkpoint_expiry[0][0] + ttl < now:
            _, checkpoint_id = heapq.heappop(self._checkpoint_expiry)
            self.checkpoints.pop(checkpoint_id, None)

    async def _notify(self, request_id: str, job: EmulatedJob, url: str) -> None:
        """POST Datalab's webhook body when the job ends; one attempt, failures ignored."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, job.ready_at - loop.time()))
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=WEBHOOK_TIMEOUT)
        check_url = f"{job.base}/{request_id}"
        body = {"request_id": request_id, "request_check_url": check_url, "webhook_secret": None}
        try:
            async with self._session.post(
                url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return
        self.shared.stats.webhooks_sent += 1


def _too_many(detail: str, wait: float) -> web.Response:
    return reply(429, {"detail": detail}, {"Retry-After": str(max(1, math.ceil(wait)))})
