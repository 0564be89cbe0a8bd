"""Batch files into batches: one at a time, in order, within the API's limits.

Each `Job` is submitted in turn: wait for room in the enqueued-token budget
(`BatchAPI.max_enqueued_tokens`: the estimated input tokens of the batches created and
not ended), upload, journal the file and its members, wait for a creation slot
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
import time
from collections.abc import Callable

from ...engine import Failure, Success, log_event
from ...engine.grouped import GroupRun
from ...engine.telemetry import batch_api_file
from .answers import Answers
from .context import BatchContext
from .spool import Job
from .wire import BatchWire, Json

HOUR = 3600.0


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
    ) -> None:
        self.context = context
        self.group = run
        self.options = context.options
        self.wire = wire
        self.answers = answers
        self.turn = asyncio.Lock()
        """Held from a file's upload to its batch's creation: files go out one at a time,
        in order."""
        self.changed = asyncio.Event()
        self.enqueued = 0
        """Estimated input tokens of the batches created and not ended."""
        self.live = 0
        self.ended = 0
        self.api_key = api_key
        self.endpoint = context.request.base_url.rstrip("/") + "/batches"

    async def submit(self, job: Job) -> bool:
        """Upload the job's file (unless an earlier run did) and create its batch."""
        async with self.turn:
            stop = self.group.batch.stop.failure
            if stop is not None:
                await self.answers.fail(job, stop)
                return False
            await self._wait_for(lambda: self._room_for(job))
            if job.file_id is not None:  # uploaded by an earlier run
                found = await self.wire.find(job.file_id, job.file_created)
                if isinstance(found, Failure):
                    await self.answers.fail(job, found, pending=True)
                    return False
                if found is not None:
                    self._created(job, found)
                    return True
                if len(job.members) < job.file_lines:  # some of its lines are wanted no more
                    job.file_id, job.known_tokens = None, None
            if job.file_id is None and not await self._upload(job):
                return False
            assert job.file_id is not None
            await self._creation_slot()
            created = await self.wire.create(
                job.file_id, self.options.completion_window, self.options.metadata, job.file_created
            )
            if isinstance(created, Failure):
                self.group.batch.stop.record(created)
                await self.answers.fail(job, created)
                return False
            self._created(job, created.value)
            return True

    def _room_for(self, job: Job) -> bool:
        if job.after_ended is not None and self.live and self.ended <= job.after_ended:
            return False
        limit = self.options.max_enqueued_tokens
        return limit is None or self.enqueued == 0 or self.enqueued + job.tokens <= limit

    async def _wait_for(self, ready: Callable[[], bool]) -> None:
        while not ready():
            self.changed.clear()
            await self.changed.wait()

    async def _upload(self, job: Job) -> bool:
        spool = job.spool
        spool.seal()
        uploaded = await self.wire.upload(spool.path, f"genai-coroutines-{job.number}.jsonl")
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
        digests = self.group.digests
        members = [
            (index, digests[index], member.line_id, member.attempt)
            for index, member in job.members.items()
            if index in digests
        ]
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

    def _created(self, job: Job, batch: Json) -> None:
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
            lines=len(job.members),
        )
        self.answers.observe(job, batch)

    def enqueue(self, job: Job) -> None:
        """The job's batch exists: its tokens join the queue."""
        if not job.enqueued:
            job.enqueued = True
            self.enqueued += job.tokens
            self.live += 1

    def release(self, job: Job) -> None:
        """The job's batch ended (or will not be waited for): its tokens leave the queue."""
        if job.enqueued:
            job.enqueued = False
            self.enqueued -= job.tokens
            self.live -= 1
            self.ended += 1
            self.changed.set()
