"""Emulation of the Datalab Marker API: submit a document, poll until it is converted.

    POST /api/v1/marker   (deprecated upstream, still used)    multipart form
    POST /api/v1/convert  (what datalab-python-sdk >= 0.5 uses) multipart form
    GET  /api/v1/{marker,convert}/{request_id}                  poll

Behaviour follows https://documentation.datalab.to: `X-API-Key` auth; 429 with
FastAPI's `detail` when the per-key requests-per-minute or concurrent-request limit
is hit; the pages-in-flight limit is *not* a 429 but a job that ends
`{"success": false, "error": "Page rate limit exceeded. ..."}` (docs/common/limits,
platform/troubleshooting); results are deleted `result_ttl` seconds (an hour
upstream) after the job finishes.

Choices where the docs say nothing: polls are neither rate limited nor counted
against the submission RPM; every 429 carries an integer `Retry-After`; failed jobs
answer `{"status": "failed"}` (what the SDK's tests use); a webhook fires once when
a job ends, complete or failed, with no retries.

A job is a small record holding when it will be ready: a poll compares that with
the clock, so nothing runs per job except webhook deliveries. Uploaded bytes are
digested and counted at submission, then dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from ..pdfpages import count_pdf_pages, pages_in_range
from . import datalab_form, datalab_render
from .faults import maybe_fault
from .state import RateWindow, digest

if TYPE_CHECKING:
    from .server import Emulator

SUBMIT = "marker_submit"
POLL = "marker_poll"
ACCEPTED = "marker_accepted"
"""Endpoint names for `Stats` counters and `FaultPlan.schedule`. Faults on `ACCEPTED`
strike after a job was accepted: it runs and bills, but the client never learns its
`request_id` (the answer lost on the way back), which is how resubmissions pay twice."""

FAIL_MARKER = b"%%FAIL%%"
"""An upload containing these bytes ends as a failed job."""

FAILED = "Processing failed: the document could not be converted"
UNAUTHORIZED = "Invalid API key provided. Set the X-API-Key header to your API key."
NOT_FOUND = "Request not found. Results are deleted some time after processing completes."
SUPPORT = "Please try again later, or reach out to support@datalab.to if you need a higher limit."
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(slots=True)
class Job:
    """What a poll needs to answer; a few hundred bytes, whatever the upload weighed."""

    base: str
    """`request_check_url` without the request id: scheme, host and endpoint path."""
    options: datalab_form.Options
    filename: str
    digest: str
    total_pages: int
    submitted_at: float
    ready_at: float
    error: str | None


class DatalabEmulation:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.jobs: dict[str, Job] = {}
        self._expiry: list[tuple[float, str]] = []
        """Heap of (ready_at, request_id): the oldest results are purged first."""
        self._running: list[tuple[float, int]] = []
        """Heap of (ready_at, pages) of jobs still processing."""
        self._pages_in_flight = 0
        self._rpm: RateWindow | None = None
        self._webhooks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._bases: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/{endpoint:marker|convert}", self.submit)
        app.router.add_get("/api/v1/{endpoint:marker|convert}/{request_id}", self.poll)

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
        stats = self.emulator.stats
        faulted = await maybe_fault(SUBMIT, request, self.emulator.faults, stats)
        if faulted is not None:
            return faulted
        response = await self._submit(request)
        stats.count(SUBMIT, response.status)
        if response.status == 200:
            lost = await maybe_fault(ACCEPTED, request, self.emulator.faults, stats)
            if lost is not None:
                return lost
        return response

    async def poll(self, request: web.Request) -> web.StreamResponse:
        stats = self.emulator.stats
        faulted = await maybe_fault(POLL, request, self.emulator.faults, stats)
        if faulted is not None:
            return faulted
        response = self._poll(request)
        stats.count(POLL, response.status)
        return response

    # -- submission ---------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"detail": UNAUTHORIZED})
        path = f"/api/v1/{request.match_info['endpoint']}"
        config = self.emulator.config
        wait = self._rpm_wait()
        if wait:
            detail = (
                f"Rate limit exceeded for endpoint {path}. You can make {config.datalab_rpm} "
                f"requests every 60 seconds. {SUPPORT}"
            )
            return _too_many(detail, wait)

        form = await request.post()
        seen: dict[str, Any] = {
            "endpoint": SUBMIT,
            "path": path,
            "form": datalab_form.wire_fields(form),
        }
        self.emulator.stats.remember(seen)
        try:
            options, upload = datalab_form.parse(form)
        except datalab_form.FormError as error:
            seen["status"] = error.status
            return _json(error.status, {"detail": error.detail})
        key = (
            digest(upload.data)
            if upload.data is not None
            else digest(str(upload.file_url).encode())
        )
        seen.update(filename=upload.filename, content_type=upload.content_type, digest=key)

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
            return _too_many(detail, self._running[0][0] - now)

        request_id, job = self._accept(request, path, options, upload, key, now)
        seen["status"] = 200
        self.emulator.stats.submissions_by_digest[key] += 1
        return _json(
            200,
            {
                "success": True,
                "error": None,
                "request_id": request_id,
                "request_check_url": f"{job.base}/{request_id}",
                "versions": {},
            },
        )

    def _accept(
        self,
        request: web.Request,
        path: str,
        options: datalab_form.Options,
        upload: datalab_form.Upload,
        key: str,
        now: float,
    ) -> tuple[str, Job]:
        """Create the job record and decide, now, how and when it ends."""
        data = upload.data or b""
        total = count_pdf_pages(data) or 1  # images, office files and URLs count as one page
        if options.page_range is not None:
            pages = pages_in_range(options.page_range, total)
        else:
            pages = total if options.max_pages is None else min(total, options.max_pages)
        error = self._refusal(options, total, pages)
        ready_at = now
        if error is None:  # it gets processed, even if only to fail
            error = self._failure(data)
            ready_at = now + self.emulator.config.seconds_per_page * pages
            heapq.heappush(self._running, (ready_at, pages))
            self._pages_in_flight += pages

        request_id = secrets.token_urlsafe(16)
        job = Job(
            base=self._base(f"{request.scheme}://{request.host}{path}"),
            options=options,
            filename=upload.filename or upload.file_url or "document",
            digest=key,
            total_pages=total,
            submitted_at=now,
            ready_at=ready_at,
            error=error,
        )
        self.jobs[request_id] = job
        heapq.heappush(self._expiry, (ready_at, request_id))
        if options.webhook_url is not None and self.emulator.config.webhooks:
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
        limit = self.emulator.config.datalab_max_pages_in_flight
        if limit is not None and self._pages_in_flight + pages > limit:
            return (
                f"Page rate limit exceeded. Your team has {self._pages_in_flight} pages in flight "
                f"and this request adds {pages} more ({self._pages_in_flight + pages} total, "
                f"limit: {limit:,}). Please wait for some requests to complete before submitting "
                "more, or contact support@datalab.to for a higher limit."
            )
        return None

    def _failure(self, data: bytes) -> str | None:
        """Why processing fails: the upload asks for it, or the seeded dice say so."""
        if FAIL_MARKER in data:
            return f"{FAILED} (emulated: %%FAIL%% in the upload)."
        rate = self.emulator.config.failed_job_rate
        if rate > 0 and self.emulator.rng.random() < rate:
            return f"{FAILED} (emulated: failed_job_rate)."
        return None

    def _base(self, url: str) -> str:
        """One shared string per endpoint URL, so 100k jobs don't hold 100k copies."""
        return self._bases.setdefault(url, url)

    # -- polling ------------------------------------------------------------------

    def _poll(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"detail": UNAUTHORIZED})
        now = asyncio.get_running_loop().time()
        self._purge(now)
        job = self.jobs.get(request.match_info["request_id"])
        if job is None:
            return _json(404, {"detail": NOT_FOUND})
        if now < job.ready_at:
            return _json(200, {"status": "processing"})
        if job.error is not None:
            return _json(200, datalab_render.failed_payload(job.error))
        payload = datalab_render.complete_payload(
            job.options,
            filename=job.filename,
            digest=job.digest,
            total_pages=job.total_pages,
            runtime=job.ready_at - job.submitted_at,
        )
        return _json(200, payload)

    # -- bookkeeping --------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-API-Key") == self.emulator.config.datalab_api_key

    def _rpm_wait(self) -> float:
        """Seconds until the submission RPM allows one more request; 0 takes it now."""
        config = self.emulator.config
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
        """Drop results older than `result_ttl`; lazily, on each request."""
        ttl = self.emulator.config.result_ttl
        while self._expiry and self._expiry[0][0] + ttl < now:
            _, request_id = heapq.heappop(self._expiry)
            self.jobs.pop(request_id, None)

    async def _notify(self, request_id: str, job: Job, url: str) -> None:
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
        self.emulator.stats.webhooks_sent += 1


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _too_many(detail: str, wait: float) -> web.Response:
    return _json(429, {"detail": detail}, {"Retry-After": str(max(1, math.ceil(wait)))})
