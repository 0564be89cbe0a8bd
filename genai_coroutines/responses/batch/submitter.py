"""Batch files into batches: one at a time, in order, within the API's limits.

Each `BatchJob` is submitted in turn: wait for room in the enqueued-token budget
(`BatchAPI.max_enqueued_tokens`: the estimated input tokens of the batches created and
not ended, a capacity of the key and model in the limits store, so every process sharing
the store shares the one allowance: `Allowance`), upload, journal the file and its
members (with a journal, the file's digest first, so a rerun after a kill between the
upload and that journal line finds the file by listing instead of uploading it again),
wait for a creation slot
(`BatchAPI.max_batches_per_hour`, 2,000 by default: counted with the key's other limits,
`KeyLimits.take_slot`, so every process sharing a limits store shares the hour), create,
journal the batch id. The slot is taken before the create (a create that fails has still
counted: the side of the API's limit to err on). A file an earlier run uploaded is
reused: the batches are listed first for one a crash left unjournaled, and a batch is
created only if none is found (from a new upload if some of its lines are wanted no
more). A failed upload or create stops the batch; the members of a job that could not be
submitted end with the failure (`Answers.fail`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from contextlib import suppress

from ...engine import Capacity, Failure, GroupRun, Success, log_event
from ...engine.telemetry import batch_api_file
from .answers import Answers
from .context import BatchContext
from .spool import BatchJob
from .wire import BatchWire, Json

HOUR = 3600.0
LEASE_SECS = 600.0
"""How long the tokens of a batch stay counted in the store after its process was last
heard of: a live process renews them every third of that, one that died (its batch may
run on, but nobody follows it) gives them up that long after. A rerun following the
batch takes its lease over, under the batch id."""


class Allowance:
    """The enqueued tokens of one run's batches, leased from the key's capacity of
    `max_enqueued_tokens` (`KeyLimits.capacity`, per model as the API counts them): a
    file's tokens before its upload, then under its batch id, renewed, until it ends."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.keepers: dict[int, asyncio.Task[None]] = {}
        """A task per job whose tokens are held: it renews them."""
        self.reserved: dict[int, str] = {}
        """The lease of a job's tokens before its batch exists, by job number."""

    async def reserve(self, job: BatchJob) -> None:
        """Wait for room for the job's tokens (a file above the limit: for an empty queue)."""
        self.reserved[job.number] = await self.capacity.acquire(job.tokens)

    def enqueue(self, job: BatchJob) -> None:
        """The job's batch exists: hold its tokens under its id (taking over what a process
        that died held for it), give the reservation back, and renew."""
        self.keepers[job.number] = asyncio.create_task(self._keep(job))

    async def _keep(self, job: BatchJob) -> None:
        batch_id, tokens = str(job.batch_id), job.tokens
        while True:
            await self.capacity.hold(batch_id, tokens)
            reservation = self.reserved.pop(job.number, None)
            if reservation is not None:
                await self.capacity.release(reservation)
            await asyncio.sleep(self.capacity.lease_secs / 3)

    async def release(self, job: BatchJob) -> None:
        """The job's batch ended, or will not be created or waited for: its tokens leave."""
        keeper = self.keepers.pop(job.number, None)
        if keeper is not None:
            keeper.cancel()
            with suppress(asyncio.CancelledError):
                await keeper
            await self.capacity.release(str(job.batch_id))
        reservation = self.reserved.pop(job.number, None)
        if reservation is not None:
            await self.capacity.release(reservation)


class Submitter:
    """Uploads each job's file and creates its batch, paced by the enqueued tokens and the
    hour's creations."""

    def __init__(
        self,
        context: BatchContext,
        run: GroupRun,
        wire: BatchWire,
        api_key: str,
        answers: Answers,
        divert: Callable[[BatchJob], bool] | None = None,
    ) -> None:
        """`divert`: asked before a job's upload and again before its batch is created;
        True takes the job away (a deadline's switch to the synchronous path: `fallback`)."""
        self.context = context
        self.divert = divert
        self.group = run
        self.options = context.options
        self.wire = wire
        self.answers = answers
        self.turn = asyncio.Lock()
        """Held from a file's upload to its batch's creation: files go out one at a time,
        in order."""
        self.changed = asyncio.Event()
        self.live = 0
        self.ended = 0
        self.api_key = api_key
        self.endpoint = context.request.base_url.rstrip("/") + "/batches"
        limit = self.options.max_enqueued_tokens
        self.allowance = (
            None
            if limit is None
            else Allowance(
                context.limits.capacity(
                    self.endpoint, api_key, limit, context.model, lease_secs=LEASE_SECS
                )
            )
        )

    async def submit(self, job: BatchJob) -> bool:
        """Upload the job's file (unless an earlier run did) and create its batch."""
        async with self.turn:
            stop = self.group.batch.stop.failure
            if stop is not None:
                await self.answers.fail(job, stop)
                return False
            if job.file_id is None and self._diverted(job):
                return False
            await self._wait_for(lambda: self._after_ended(job))
            if self.allowance is not None:
                await self.allowance.reserve(job)
            if job.file_id is not None:  # uploaded by an earlier run
                found = await self.wire.find(job.file_id, job.file_created)
                if isinstance(found, Failure):
                    await self.release(job)
                    await self.answers.fail(job, found, pending=True)
                    return False
                if found is not None:
                    self._created(job, found)
                    return True
                if len(job.owed) < job.file_lines:  # some of its lines are wanted no more
                    job.file_id, job.known_tokens = None, None
            if job.file_id is None and not await self._upload(job):
                await self.release(job)
                return False
            assert job.file_id is not None
            await self._creation_slot()
            if self._diverted(job):  # nothing awaited from here to the create
                await self.release(job)
                return False
            created = await self.wire.create(
                job.file_id, self.options.completion_window, self.options.metadata, job.file_created
            )
            if isinstance(created, Failure):
                self.group.batch.stop.record(created)
                await self.release(job)
                await self.answers.fail(job, created)
                return False
            self._created(job, created.value)
            return True

    def _diverted(self, job: BatchJob) -> bool:
        return self.divert is not None and self.divert(job)

    def _after_ended(self, job: BatchJob) -> bool:
        """After the API refused a batch for its enqueued tokens, its follow-up waits for
        another batch of this run to end."""
        return job.after_ended is None or not self.live or self.ended > job.after_ended

    async def _wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self.changed.clear()
            await self.changed.wait()

    async def _upload(self, job: BatchJob) -> bool:
        """Upload the job's file, or with a journal, find the one an earlier run uploaded
        and was killed before journaling: the file's name carries its digest, and the
        digest is journaled before each upload (`Journal.record_upload_intent`)."""
        spool = job.spool
        spool.seal()
        uploaded: Success[Json] | Failure | None = None
        name = f"genai-coroutines-{job.number}.jsonl"
        journal = self.group.batch.journal
        if journal is not None:
            digest = spool.digest()
            name = f"genai-coroutines-{job.number}-{digest}.jsonl"
            since = journal.upload_intended(digest)
            if since is not None:
                found = await self.wire.find_file(name, os.path.getsize(spool.path), since)
                if isinstance(found, Failure):
                    uploaded = found
                elif found is not None:
                    uploaded = Success(found)
                    log_event(
                        self.context.logger,
                        logging.INFO,
                        "batch_api_file_found",
                        file=found.get("id"),
                        action='"uploaded by an earlier run, not journaled: not uploaded again"',
                    )
            elif not self.group.batch.journaled(lambda j: j.record_upload_intent(digest)):
                stop = self.group.batch.stop.failure
                failure = stop or Failure("journal failed", "journal_error", False)
                await self.answers.fail(job, failure)
                return False
        if uploaded is None:
            uploaded = await self.wire.upload(spool.path, name)
        file_id = uploaded.value.get("id") if isinstance(uploaded, Success) else None
        if not isinstance(file_id, str) or not file_id:
            failure = (
                uploaded
                if isinstance(uploaded, Failure)
                else Failure("the upload was answered without a file id", "invalid_response", True)
            )
            self.group.batch.stop.record(failure)
            batch_api_file("failed")
            await self.answers.fail(job, failure)
            return False
        batch_api_file("uploaded")
        job.file_id, job.file_created, job.file_lines = file_id, time.time(), spool.lines
        job.uploaded_here = True
        members = (  # read from the spool as the journal writes them, never all at once
            (line.key, line.digest, line.line_id, job.attempt_of(line.key), line.input_digest)
            for line in job.owing()
            if line.digest is not None
        )
        tokens = job.tokens
        if not self.group.batch.journaled(
            lambda j: j.record_group(file_id, members, tokens=tokens)
        ):
            stop = self.group.batch.stop.failure
            await self.answers.fail(job, stop or Failure("journal failed", "journal_error", False))
            return False
        log_event(
            self.context.logger,
            logging.INFO,
            "batch_api_file",
            file=file_id,
            lines=spool.lines,
            bytes=spool.bytes,
            tokens=tokens,
        )
        return True

    async def _creation_slot(self) -> None:
        """Wait until a batch may be created within the key's creations per hour."""
        limit = self.options.max_batches_per_hour
        while wait := await self.context.limits.take_slot(self.endpoint, self.api_key, limit, HOUR):
            log_event(
                self.context.logger,
                logging.WARNING,
                "batch_api_creation_limit",
                per_hour=limit,
                wait=f"{wait:.1f}s",
            )
            await asyncio.sleep(wait)

    def _created(self, job: BatchJob, batch: Json) -> None:
        batch_id = str(batch.get("id"))
        job.batch_id = batch_id
        file_id = job.file_id or ""
        self.group.batch.journaled(lambda j: j.record_group_job(file_id, batch_id))
        self.enqueue(job)
        log_event(
            self.context.logger,
            logging.INFO,
            "batch_api_created",
            batch=batch_id,
            file=file_id,
            lines=len(job.owed),
        )
        self.answers.observe(job, batch)

    def enqueue(self, job: BatchJob) -> None:
        """The job's batch exists: its tokens join the queue."""
        if not job.enqueued:
            job.enqueued = True
            self.live += 1
            if self.allowance is not None:
                self.allowance.enqueue(job)

    async def release(self, job: BatchJob) -> None:
        """The job's batch ended (or will not be created or waited for): its tokens leave
        the queue."""
        if self.allowance is not None:
            await self.allowance.release(job)
        if job.enqueued:
            job.enqueued = False
            self.live -= 1
            self.ended += 1
            self.changed.set()
