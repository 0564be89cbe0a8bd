"""Emulation of the Datalab API: submit a document, poll until it is converted or extracted.

    POST /api/v1/marker   (deprecated upstream, still used)      multipart form
    POST /api/v1/convert  (what datalab-python-sdk >= 0.5 uses)   multipart form
    POST /api/v1/extract  (structured extraction: a JSON schema)  multipart form
    GET  /api/v1/{marker,convert,extract}/{request_id}            poll
    POST /api/v1/extraction_schemas, GET .../{schema_id}          saved schemas (`schema_id`)

Each endpoint reads its own form fields (`datalab_form.FIELDS`) and ignores the rest.
The content is the upload's own text (`datalab_render.read`); `/extract` and a
`/marker` `page_schema` fill the schema from that text (`schema_fill`). A job
submitted with `save_checkpoint` shows a `checkpoint_id` once complete; an `/extract`
naming it needs no file and reads the checkpoint's pages. Checkpoints live as long as
their job's result (`result_ttl`).

Behaviour follows https://documentation.datalab.to: `X-API-Key` auth; 429 with
FastAPI's `detail` when the per-key requests-per-minute or concurrent-request limit
is hit; the pages-in-flight limit is *not* a 429 but a job that ends
`{"success": false, "error": "Page rate limit exceeded. ..."}` (docs/common/limits,
platform/troubleshooting); results are deleted `result_ttl` seconds (an hour
upstream) after the job finishes.

Choices where the docs say nothing: polls are neither rate limited nor counted
against the submission RPM; every 429 carries an integer `Retry-After`; failed jobs
answer `{"status": "failed"}` (what the SDK's tests use); a webhook fires once when
a job ends, complete or failed, with no retries; an unknown `checkpoint_id` or
`schema_id` is a 404. The three endpoints share one set of limits and one fault plan
(`marker_submit`, `marker_poll`, `marker_accepted`).

A job is a small record holding when it will be ready and the text of its pages: a
poll compares that with the clock, so nothing runs per job except webhook deliveries.
Uploaded bytes are digested and read at submission, then dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

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
    """What a poll needs to answer: its settings, its pages' text and when it is ready."""

    base: str
    """`request_check_url` without the request id: scheme, host and endpoint path."""
    options: datalab_form.Options
    content: datalab_render.Content
    submitted_at: float
    ready_at: float
    error: str | None
    checkpoint_id: str | None = None


@dataclass(slots=True)
class SavedSchema:
    """An extraction schema saved with `POST /api/v1/extraction_schemas`; versions from 1."""

    schema_id: str
    name: str
    description: str | None
    versions: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""

    def body(self, number: int) -> dict[str, Any]:
        return {
            "id": number,
            "schema_id": self.schema_id,
            "name": self.name,
            "description": self.description,
            "schema_json": self.versions[-1],
            "version": len(self.versions),
            "version_history": [],
            "archived": False,
            "created": self.created,
            "updated": self.created,
        }


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
        self.checkpoints: dict[str, str] = {}
        """checkpoint_id -> request_id of the job whose pages it holds."""
        self.schemas: dict[str, SavedSchema] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/{endpoint:marker|convert|extract}", self.submit)
        app.router.add_get("/api/v1/{endpoint:marker|convert|extract}/{request_id}", self.poll)
        app.router.add_post("/api/v1/extraction_schemas", self.create_schema)
        app.router.add_get("/api/v1/extraction_schemas/{schema_id}", self.get_schema)

    def save_schema(
        self, schema_json: Any, name: str = "schema", description: str | None = None
    ) -> str:
        """Save an extraction schema as `POST /api/v1/extraction_schemas` does; its id."""
        datalab_form.check_schema_json("schema_json", schema_json)
        saved = SavedSchema(
            schema_id=f"sch_{secrets.token_hex(6)}",
            name=name,
            description=description,
            versions=[schema_json],
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.schemas[saved.schema_id] = saved
        return saved.schema_id

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
        endpoint = request.match_info["endpoint"]
        faulted = await maybe_fault(SUBMIT, request, self.emulator.faults, stats)
        if faulted is not None:
            stats.log(endpoint, f"submit fault {faulted.status}")
            return faulted
        response, request_id = await self._submit(request)
        stats.count(SUBMIT, response.status)
        if request_id is None:
            stats.log(endpoint, f"submit refused {response.status}")
        else:
            stats.log(endpoint, f"submitted {request_id}")
            lost = await maybe_fault(ACCEPTED, request, self.emulator.faults, stats)
            if lost is not None:
                stats.log(endpoint, f"answer lost {request_id}")
                return lost
        return response

    async def poll(self, request: web.Request) -> web.StreamResponse:
        stats = self.emulator.stats
        endpoint = request.match_info["endpoint"]
        request_id = request.match_info["request_id"]
        faulted = await maybe_fault(POLL, request, self.emulator.faults, stats)
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
        if not self._authorized(request):
            return _json(401, {"detail": UNAUTHORIZED}), None
        endpoint = request.match_info["endpoint"]
        path = f"/api/v1/{endpoint}"
        config = self.emulator.config
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
        self.emulator.stats.remember(seen)
        try:
            options, upload = datalab_form.parse(form, endpoint)
            options = self._with_schema(options)
            if upload is None:
                key, content = self._from_checkpoint(options)
            else:
                key = (
                    digest(upload.data)
                    if upload.data is not None
                    else digest(str(upload.file_url).encode())
                )
                content = await asyncio.to_thread(datalab_render.read, upload, options, key)
        except datalab_form.FormError as error:
            seen["status"] = error.status
            return _json(error.status, {"detail": error.detail}), None
        if upload is not None:
            seen.update(filename=upload.filename, content_type=upload.content_type)
        seen["digest"] = key

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

        request_id, job = self._accept(request, path, options, content, upload, now)
        seen["status"] = 200
        stats = self.emulator.stats
        stats.submissions_by_digest[key] += 1
        stats.submissions_by_endpoint.setdefault(endpoint, Counter())[key] += 1
        answer: dict[str, Any] = {
            "success": True,
            "error": None,
            "request_id": request_id,
            "request_check_url": f"{job.base}/{request_id}",
            "versions": {},
        }
        return _json(200, answer), request_id

    def _with_schema(self, options: datalab_form.Options) -> datalab_form.Options:
        """`options` with a `schema_id` replaced by the saved schema it names."""
        if options.schema_id is None:
            return options
        saved = self.schemas.get(options.schema_id)
        version = options.schema_version or (len(saved.versions) if saved else 0)
        if saved is None or not 1 <= version <= len(saved.versions):
            detail = f"Extraction schema {options.schema_id!r}"
            if options.schema_version is not None:
                detail += f" version {options.schema_version}"
            raise datalab_form.FormError(404, f"{detail} not found.")
        return dataclasses.replace(options, page_schema=saved.versions[version - 1])

    def _from_checkpoint(self, options: datalab_form.Options) -> tuple[str, datalab_render.Content]:
        """The counter key and the pages of the checkpoint an `/extract` names."""
        checkpoint_id = str(options.checkpoint_id)
        now = asyncio.get_running_loop().time()
        self._purge(now)
        source = self.jobs.get(self.checkpoints.get(checkpoint_id, ""))
        if source is None or source.ready_at > now or source.error is not None:
            raise datalab_form.FormError(
                404,
                f"Checkpoint {checkpoint_id!r} not found. Checkpoints are deleted with their "
                "results; convert the document again with save_checkpoint=true.",
            )
        return f"checkpoint:{checkpoint_id}", source.content.select(options)

    def _accept(
        self,
        request: web.Request,
        path: str,
        options: datalab_form.Options,
        content: datalab_render.Content,
        upload: datalab_form.Upload | None,
        now: float,
    ) -> tuple[str, Job]:
        """Create the job record and decide, now, how and when it ends."""
        pages = len(content.pages)
        error = self._refusal(options, content.total_pages, pages)
        ready_at = now
        if error is None:  # it gets processed, even if only to fail
            error = self._failure(upload.data if upload is not None else None)
            ready_at = now + self.emulator.config.seconds_per_page * pages
            heapq.heappush(self._running, (ready_at, pages))
            self._pages_in_flight += pages
            self.emulator.stats.pages_processed += pages

        request_id = secrets.token_urlsafe(16)
        origin = self.emulator.config.datalab_check_origin or f"{request.scheme}://{request.host}"
        job = Job(
            base=self._base(f"{origin}{path}"),
            options=options,
            content=content,
            submitted_at=now,
            ready_at=ready_at,
            error=error,
        )
        if options.save_checkpoint and error is None:
            job.checkpoint_id = f"ckpt_{secrets.token_hex(8)}"
            self.checkpoints[job.checkpoint_id] = request_id
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

    def _failure(self, data: bytes | None) -> str | None:
        """Why processing fails: the upload asks for it, or the seeded dice say so."""
        if data is not None and FAIL_MARKER in data:
            return f"{FAILED} (emulated: %%FAIL%% in the upload)."
        rate = self.emulator.config.failed_job_rate
        if rate > 0 and self.emulator.rng.random() < rate:
            return f"{FAILED} (emulated: failed_job_rate)."
        return None

    def _base(self, url: str) -> str:
        """One shared string per endpoint URL, so 100k jobs don't hold 100k copies."""
        return self._bases.setdefault(url, url)

    # -- polling ------------------------------------------------------------------

    def _poll(self, request: web.Request) -> tuple[web.Response, str]:
        """The answer to a poll, and what it said (for `Stats.events`)."""
        if not self._authorized(request):
            return _json(401, {"detail": UNAUTHORIZED}), "401"
        now = asyncio.get_running_loop().time()
        self._purge(now)
        job = self.jobs.get(request.match_info["request_id"])
        if job is None:
            return _json(404, {"detail": NOT_FOUND}), "404"
        if now < job.ready_at:
            return _json(200, {"status": "processing"}), "processing"
        if job.error is not None:
            return _json(200, datalab_render.failed_payload(job.error)), "failed"
        payload = datalab_render.complete_payload(
            job.options,
            job.content,
            runtime=job.ready_at - job.submitted_at,
            checkpoint_id=job.checkpoint_id,
        )
        return _json(200, payload), "complete"

    # -- saved extraction schemas ---------------------------------------------------

    async def create_schema(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"detail": UNAUTHORIZED})
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json(400, {"detail": "The request body must be JSON."})
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return _json(400, {"detail": "name (a string) and schema_json are required."})
        try:
            schema_id = self.save_schema(
                body.get("schema_json"), body["name"], body.get("description")
            )
        except datalab_form.FormError as error:
            return _json(error.status, {"detail": error.detail})
        return _json(200, self.schemas[schema_id].body(len(self.schemas)))

    async def get_schema(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _json(401, {"detail": UNAUTHORIZED})
        schema_id = request.match_info["schema_id"]
        saved = self.schemas.get(schema_id)
        if saved is None:
            return _json(404, {"detail": f"Extraction schema {schema_id!r} not found."})
        return _json(200, saved.body(list(self.schemas).index(schema_id) + 1))

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
            job = self.jobs.pop(request_id, None)
            if job is not None and job.checkpoint_id is not None:
                self.checkpoints.pop(job.checkpoint_id, None)

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
