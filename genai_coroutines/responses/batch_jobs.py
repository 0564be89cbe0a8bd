"""One run of the Batch API path: lines into files, files into batches, answers back.

`BatchJobs.results` consumes the items the driver admitted, in input order, and yields
each one's result once its batch ends. Per item it keeps only a `Member` (its line id,
its round and when its turn came); the lines themselves go to a temporary file per
upload (`Spool`), written as the items arrive, uploaded from disk, and kept until its
batch ends so a follow-up batch can copy the lines it retries. Output and error files
are read line by line. Memory stays flat whatever the size of the batch.

A `Job` is one file and its batch. Files are cut by request count, bytes and (when
`BatchAPI.max_enqueued_tokens` is set) estimated input tokens, and submitted one at a
time, in order: upload, journal the file and its members, wait for room in the
enqueued-token budget and for the hour's creations (2,000) to allow one, create,
journal the batch id. Each batch is then polled (`engine.poll_until`) until it ends,
whatever it ended as (`completed`, `expired`, `failed`, `cancelled`), and both its files
are read: every line is judged (`batch_api.judge`), lines that failed retriably and
lines that never ran (an expired batch) go into a follow-up batch, up to `max_retries`
rounds. A batch that failed validation (`errors.data`) fails the lines it names with
their message, fails every line with a file-level message (the enqueued-token limit's
is retried once a batch has ended), and sends lines it did not name again.

Crash-safety is the journal's (`Journal.record_group`, `group_line`): a rerun with the
same journal finds each unfinished item's file and batch, polls that batch instead of
uploading the item again, creates the batch of a file uploaded just before a crash
(after listing the batches for one the crash left unjournaled), and only then sends
what never reached a file. An interrupt (Ctrl-C) leaves the batches running and says
how to collect them, or cancels them with `cancel_on_interrupt`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ..engine import Admitted, Failure, Result, Success, limit_key, log_event, poll_until
from ..engine.grouped import GroupRun
from ..engine.journal import GroupLine
from .batch_api import (
    TERMINAL,
    BatchAPIPath,
    batch_line,
    custom_id,
    index_of,
    judge,
)
from .batch_wire import BatchWire, Json
from .direct import Prepared, retry_policy

CREATIONS_PER_HOUR = 2_000
"""The Batch API's limit on batches created per hour (per organisation)."""
HOUR = 3600.0
QUEUED_RESULTS = 256
SHOWN_BATCHES = 3
"""Batches named on the progress bar; the rest are counted."""
_CREATIONS: dict[str, deque[float]] = {}
"""`time.monotonic()` of each batch created in the last hour, per key, in this process."""
_LINE_ID_START = len(b'{"custom_id":')


@dataclass(slots=True)
class Member:
    """What is kept in memory of an item waiting on a batch."""

    line_id: str
    attempt: int
    """Batches the item was sent in before this one."""
    started: float
    tokens: int


class Spool:
    """Request lines in a temporary file: written for upload, then kept for follow-ups."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="genai-coroutines-batch-", suffix=".jsonl")
        self._out: IO[bytes] | None = os.fdopen(fd, "wb")
        self.lines = self.bytes = self.tokens = 0

    def add(self, line: bytes, tokens: int) -> None:
        assert self._out is not None, "a sealed spool takes no more lines"
        self._out.write(line)
        self.lines += 1
        self.bytes += len(line)
        self.tokens += tokens

    def seal(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def read(self) -> Iterator[bytes]:
        self.seal()
        with open(self.path, "rb") as lines:
            yield from lines

    def remove(self) -> None:
        self.seal()
        with suppress(OSError):
            os.unlink(self.path)


@dataclass(eq=False)
class Job:
    """One batch file and the batch created for it."""

    number: int
    spool: Spool = field(default_factory=Spool)
    members: dict[int, Member] = field(default_factory=dict)
    """Items whose answer this batch still owes, by index."""
    file_id: str | None = None
    file_created: float = 0.0
    file_lines: int = 0
    uploaded_here: bool = False
    """The file is this spool (so its line numbers are the spool's)."""
    known_tokens: int | None = None
    """The tokens journaled with a file uploaded by an earlier run."""
    batch_id: str | None = None
    status: str = "writing"
    counts: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    """Cancelled by this library (on interrupt): its lines that never ran are sent again."""
    enqueued: bool = False
    after_ended: int | None = None
    """Submit only once more than this many batches have ended (after the API said its
    enqueued-token limit was reached)."""

    @property
    def tokens(self) -> int:
        return self.known_tokens if self.known_tokens is not None else self.spool.tokens

    def add(self, index: int, member: Member, line: bytes) -> None:
        self.members[index] = member
        self.spool.add(line, member.tokens)


@dataclass(frozen=True, slots=True)
class _Done:
    error: BaseException | None = None


class BatchJobs:
    """The files and batches of one `stream()` on the Batch API path."""

    def __init__(self, path: BatchAPIPath, run: GroupRun) -> None:
        request = path.request
        self.path = path
        self.run = run
        self.options = path.options
        self.max_retries = request.max_retries
        self.policy = retry_policy(request)
        self.api_key = request.api_key or ""
        self.wire = BatchWire(
            run.batch.session,
            request.base_url,
            self.api_key,
            self.policy,
            request.timeout_secs,
            run.batch.wait,
        )
        self.out: asyncio.Queue[Result | _Done] = asyncio.Queue(QUEUED_RESULTS)
        self.jobs: list[Job] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.numbers = itertools.count(1)
        self.turn = asyncio.Lock()
        """Held from a file's upload to its batch's creation: files go out one at a time,
        in order."""
        self.changed = asyncio.Event()
        self.enqueued = 0
        """Estimated input tokens of the batches created and not ended."""
        self.live = 0
        self.ended = 0
        self.open = 0
        self.fed = False
        self.closing = False
        self.creations = _CREATIONS.setdefault(
            limit_key(request.base_url.rstrip("/") + "/batches", self.api_key), deque()
        )

    # -- the stream of results --------------------------------------------------------------

    async def results(self, items: AsyncIterator[Admitted[Prepared]]) -> AsyncIterator[Result]:
        self._spawn(self._feed(items))
        finished = False
        try:
            while True:
                got = await self.out.get()
                if isinstance(got, _Done):
                    if got.error is not None:
                        raise got.error
                    finished = True
                    return
                yield got
        finally:
            self.closing = True
            live = [j for j in self.jobs if j.batch_id and j.status not in TERMINAL]
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if not finished:
                await self._interrupted(live)
            for job in self.jobs:
                job.spool.remove()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: the batch ends with it
                await self.out.put(_Done(exc))

        task = asyncio.ensure_future(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _emit(self, result: Result) -> None:
        await self.out.put(result)

    def _settled(self) -> None:
        if self.fed and self.open == 0 and not self.closing:
            self._spawn(self.out.put(_Done()))

    # -- admitted items into files ----------------------------------------------------------

    async def _feed(self, items: AsyncIterator[Admitted[Prepared]]) -> None:
        options = self.options
        writer: Job | None = None
        resumed: dict[str, Job] = {}
        async for item in items:
            index, body = item.index, item.prepared.body
            tokens = self.path.input_tokens(item.prepared)
            known = self._known(index)
            if known is not None:
                job = resumed.get(known.file_id)
                if job is None:
                    job = resumed[known.file_id] = self._resumed(known)
                member = Member(known.line_id, known.attempt, item.started, tokens)
                job.add(index, member, batch_line(known.line_id, body))
                continue
            line_id = custom_id(index, body)
            line = batch_line(line_id, body)
            if len(line) > options.max_bytes_per_file:
                failure = Failure(
                    f"user_prompts[{index}] makes a batch line of {len(line):,} bytes, more "
                    f"than max_bytes_per_file ({options.max_bytes_per_file:,})",
                    "invalid_input",
                    retriable=False,
                    param="user_prompts",
                )
                await self._emit(
                    self.path.errored(
                        index,
                        failure,
                        attempts=0,
                        started=item.started,
                        batch_id=None,
                        line=line_id,
                    )
                )
                continue
            if writer is not None and not self._fits(writer, len(line), tokens):
                self._launch(writer)
                writer = None
            if writer is None:
                writer = self._job()
            writer.add(index, Member(line_id, 0, item.started, tokens), line)
        if writer is not None:
            self._launch(writer)
        for job in resumed.values():
            self._launch(job)
        self.fed = True
        self._settled()

    def _known(self, index: int) -> GroupLine | None:
        journal, digest = self.run.journal, self.run.digests.get(index)
        if journal is None or digest is None:
            return None
        return journal.group_line(index, digest)

    def _job(self) -> Job:
        job = Job(next(self.numbers))
        self.jobs.append(job)
        return job

    def _resumed(self, known: GroupLine) -> Job:
        """The job of a file an earlier run uploaded (and maybe created a batch for)."""
        job = self._job()
        job.file_id = known.file_id
        job.file_created = known.created_at
        job.file_lines = known.lines
        job.known_tokens = known.tokens
        job.batch_id = known.job_id
        job.cancelled = known.cancelled
        if job.batch_id is not None:
            job.status = "resumed"
            self._enqueue(job)
        return job

    def _fits(self, job: Job, size: int, tokens: int) -> bool:
        options, spool = self.options, job.spool
        limit = options.max_enqueued_tokens
        return (
            spool.lines < options.max_requests_per_file
            and spool.bytes + size <= options.max_bytes_per_file
            and (limit is None or spool.tokens + tokens <= limit)
        )

    def _launch(self, job: Job) -> None:
        self.open += 1
        self._spawn(self._life(job))

    # -- one file and its batch -------------------------------------------------------------

    async def _life(self, job: Job) -> None:
        try:
            if job.batch_id is None and not await self._submit(job):
                return
            batch = await self._follow(job)
            if batch is not None:
                await self._resolve(job, batch)
        finally:
            self._release(job)
            job.spool.remove()
            with suppress(ValueError):
                self.jobs.remove(job)
            self._note()
            self.open -= 1
            self._settled()

    async def _submit(self, job: Job) -> bool:
        """Upload the job's file (unless an earlier run did) and create its batch."""
        async with self.turn:
            stop = self.run.batch.stop.failure
            if stop is not None:
                await self._fail(job, stop)
                return False
            await self._wait_for(lambda: self._room_for(job))
            if job.file_id is not None:  # uploaded by an earlier run
                found = await self.wire.find(job.file_id, job.file_created)
                if isinstance(found, Failure):
                    await self._fail(job, found, pending=True)
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
                self.run.batch.stop.record(created)
                await self._fail(job, created)
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
            self.run.batch.stop.record(failure)
            await self._fail(job, failure)
            return False
        job.file_id, job.file_created, job.file_lines = file_id, time.time(), spool.lines
        job.uploaded_here = True
        digests = self.run.digests
        members = [
            (index, digests[index], member.line_id, member.attempt)
            for index, member in job.members.items()
            if index in digests
        ]
        tokens = job.tokens
        if not self.run.journaled(lambda j: j.record_group(file_id, members, tokens=tokens)):
            stop = self.run.batch.stop.failure
            await self._fail(job, stop or Failure("journal failed", "journal_error", False))
            return False
        log_event(
            self.path.logger,
            logging.INFO,
            "batch_api_file",
            file=file_id,
            lines=spool.lines,
            bytes=spool.bytes,
            tokens=tokens,
        )
        return True

    async def _creation_slot(self) -> None:
        """Wait until a batch may be created without passing 2,000 in the last hour."""
        creations = self.creations
        while True:
            now = time.monotonic()
            while creations and creations[0] <= now - HOUR:
                creations.popleft()
            if len(creations) < CREATIONS_PER_HOUR:
                return
            wait = creations[0] + HOUR - now
            log_event(
                self.path.logger,
                logging.WARNING,
                "batch_api_creation_limit",
                created_last_hour=len(creations),
                wait=f"{wait:.0f}s",
            )
            await asyncio.sleep(wait)

    def _created(self, job: Job, batch: Json) -> None:
        batch_id = str(batch.get("id"))
        job.batch_id = batch_id
        file_id = job.file_id or ""
        self.run.journaled(lambda j: j.record_group_job(file_id, batch_id))
        self.creations.append(time.monotonic())
        self._enqueue(job)
        log_event(
            self.path.logger,
            logging.INFO,
            "batch_api_created",
            batch=batch_id,
            file=file_id,
            lines=len(job.members),
        )
        self._observe(job, batch)

    def _enqueue(self, job: Job) -> None:
        if not job.enqueued:
            job.enqueued = True
            self.enqueued += job.tokens
            self.live += 1

    def _release(self, job: Job) -> None:
        """The job's batch ended (or will not be waited for): its tokens leave the queue."""
        if job.enqueued:
            job.enqueued = False
            self.enqueued -= job.tokens
            self.live -= 1
            self.ended += 1
            self.changed.set()

    async def _follow(self, job: Job) -> Json | None:
        """Poll the job's batch until it ends; None (its items failed) if polls fail."""
        batch_id = job.batch_id
        assert batch_id is not None

        async def check() -> Success[Json | None] | Failure:
            got = await self.wire.retrieve(batch_id)
            if isinstance(got, Failure):
                return got
            self._observe(job, got.value)
            return Success(got.value if job.status in TERMINAL else None)

        outcome: Success[Json | None] | Failure | None = None
        if job.status == "resumed":  # an earlier run's batch may have ended long ago
            outcome = await check()
        if not isinstance(outcome, Success) or outcome.value is None:
            outcome = await poll_until(
                check,
                interval=self.options.poll_interval_secs,
                max_polls=None,
                policy=self.policy,
                wait=self.run.batch.wait,
                what=f"batch {batch_id}",
            )
        if not isinstance(outcome, Success) or outcome.value is None:
            failure = outcome if isinstance(outcome, Failure) else None
            if failure is not None and failure.status == 404:  # no such batch: nothing to await
                await self._fail(job, failure)
                return None
            await self._fail(
                job,
                Failure(
                    f"{failure.message if failure else 'polling stopped'}; batch {batch_id} "
                    "may still be running: rerun with the same journal to collect it",
                    failure.error_type if failure else "poll_timeout",
                    retriable=True,
                    status=failure.status if failure else None,
                ),
                pending=True,
            )
            return None
        self._release(job)
        return outcome.value

    def _observe(self, job: Job, batch: Json) -> None:
        status = batch.get("status")
        counts = batch.get("request_counts")
        counts = (
            {k: v for k, v in counts.items() if isinstance(v, int)}
            if isinstance(counts, dict)
            else {}
        )
        if status == job.status and counts == job.counts:
            return
        changed = status != job.status
        job.status = str(status)
        job.counts = counts
        if changed:
            log_event(
                self.path.logger,
                logging.INFO,
                "batch_api_status",
                batch=job.batch_id,
                status=job.status,
                completed=counts.get("completed", 0),
                failed=counts.get("failed", 0),
                total=counts.get("total", 0),
            )
        self._note()

    def _note(self) -> None:
        """Each batch's state and `request_counts` on the progress bar."""
        shown = [job for job in self.jobs if job.batch_id]
        parts = []
        for job in shown[:SHOWN_BATCHES]:
            counts = job.counts
            done = counts.get("completed", 0) + counts.get("failed", 0)
            text = f"{str(job.batch_id)[-8:]} {job.status} {done}/{counts.get('total', 0)}"
            if counts.get("failed"):
                text += f" ({counts['failed']} failed)"
            parts.append(text)
        if len(shown) > SHOWN_BATCHES:
            parts.append(f"+{len(shown) - SHOWN_BATCHES} more")
        self.run.note(batches=", ".join(parts) or None)

    # -- joining the answers back -----------------------------------------------------------

    async def _resolve(self, job: Job, batch: Json) -> None:
        """Every member's result from the ended batch, or its place in a follow-up."""
        status = str(batch.get("status"))
        retry: dict[int, Member] = {}
        errors = _validation_errors(batch)
        if status == "failed" and errors:
            await self._invalid(job, errors, retry)
        else:
            unread: Failure | None = None
            for key in ("output_file_id", "error_file_id"):
                file_id = batch.get(key)
                if isinstance(file_id, str) and file_id:

                    async def each(raw: bytes) -> None:
                        await self._line(job, raw, retry)

                    got = await self.wire.lines(file_id, each)
                    if isinstance(got, Failure):
                        unread = got
            if unread is not None:
                failure = Failure(
                    f"batch {job.batch_id} ended {status} but its results could not be read: "
                    f"{unread.message}; rerun with the same journal to read them",
                    unread.error_type,
                    retriable=True,
                    status=unread.status,
                )
                await self._fail(job, failure, pending=unread.status != 404)  # 404: gone
            else:
                never = self._never_ran(job, status, errors)
                for index in list(job.members):
                    await self._settle(job, index, never, retry)
        log_event(
            self.path.logger,
            logging.INFO,
            "batch_api_ended",
            batch=job.batch_id,
            status=status,
            retried=len(retry),
        )
        if retry:
            self._follow_up(job, retry, after=self.ended if _token_limited(errors) else None)

    async def _line(self, job: Job, raw: bytes, retry: dict[int, Member]) -> None:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        line_id = line.get("custom_id") if isinstance(line, dict) else None
        index = index_of(line_id) if isinstance(line_id, str) else None
        member = job.members.get(index) if index is not None else None
        if index is None or member is None or member.line_id != line_id:
            return  # not ours, seen already, or an item that changed since
        await self._settle(job, index, judge(line, self.api_key), retry)

    async def _settle(
        self,
        job: Job,
        index: int,
        outcome: Success[Any] | Failure,
        retry: dict[int, Member],
    ) -> None:
        member = job.members.pop(index)
        attempts = member.attempt + 1
        if isinstance(outcome, Success):
            await self._emit(
                self.path.succeeded(
                    index,
                    outcome.value,
                    attempts=attempts,
                    started=member.started,
                    batch_id=str(job.batch_id),
                    line=member.line_id,
                )
            )
        elif outcome.retriable and member.attempt < self.max_retries:
            retry[index] = member
        else:
            await self._emit(
                self.path.errored(
                    index,
                    outcome,
                    attempts=attempts,
                    started=member.started,
                    batch_id=job.batch_id,
                    line=member.line_id,
                )
            )

    def _never_ran(self, job: Job, status: str, errors: list[Json]) -> Failure:
        """Why a member with no line in either file has no answer."""
        batch_id = job.batch_id
        if status == "expired":
            return Failure(
                f"never ran: batch {batch_id} expired before this request ran",
                "job_failed",
                retriable=True,
                code="batch_expired",
            )
        if status == "cancelled":
            by = "on interrupt, by this library" if job.cancelled else "by someone else"
            return Failure(
                f"never ran: batch {batch_id} was cancelled ({by}) before this request ran",
                "job_failed",
                retriable=job.cancelled,
                code="batch_cancelled",
            )
        if status == "failed":
            why = f": {_described(errors)}" if errors else ""
            return Failure(
                f"never ran: batch {batch_id} failed{why}", "job_failed", True, code="batch_failed"
            )
        return Failure(
            f"batch {batch_id} ended {status} without a line for this request",
            "invalid_response",
            retriable=True,
        )

    async def _invalid(self, job: Job, errors: list[Json], retry: dict[int, Member]) -> None:
        """A batch that failed validation: each member failed with its line's message."""
        batch_id = job.batch_id
        named = {e["line"]: e for e in errors if isinstance(e.get("line"), int)}
        whole = [e for e in errors if not isinstance(e.get("line"), int)]
        by_line_id = await self._line_errors(job, named) if named else {}
        for index, member in list(job.members.items()):
            error = by_line_id.get(member.line_id)
            if error is not None:
                failure = Failure(
                    f"batch {batch_id} failed validation: line {error['line']}: "
                    f"{error.get('message')}",
                    "invalid_request_error",
                    retriable=False,
                    status=400,
                    code=_text(error.get("code")),
                    param=_text(error.get("param")),
                )
            elif whole:
                code = _text(whole[0].get("code"))
                failure = Failure(
                    f"batch {batch_id} failed validation: {_described(whole)}",
                    "invalid_request_error",
                    retriable=code == "token_limit_exceeded",
                    status=400,
                    code=code,
                )
            else:
                failure = Failure(
                    f"never ran: batch {batch_id} failed validation because of other lines "
                    f"({_described(errors)})",
                    "job_failed",
                    retriable=True,
                    code="batch_failed",
                )
            await self._settle(job, index, failure, retry)

    async def _line_errors(self, job: Job, named: dict[int, Json]) -> dict[str, Json]:
        """The errors of `named` (by 1-based line number) keyed by the custom_id of that line."""
        found: dict[str, Json] = {}
        number = 0

        def numbered(raw: bytes) -> None:
            nonlocal number
            number += 1
            error = named.get(number)
            if error is not None:
                found[_line_id(raw)] = error

        if job.uploaded_here:
            for raw in job.spool.read():
                numbered(raw)
            return found

        def restart() -> None:
            nonlocal number
            number = 0
            found.clear()

        async def each(raw: bytes) -> None:
            numbered(raw)

        if job.file_id is not None:
            await self.wire.lines(job.file_id, each, restart)
        return found

    def _follow_up(self, job: Job, retry: dict[int, Member], after: int | None) -> None:
        """A new job of the lines to send again, copied from the ended job's spool."""
        follow = self._job()
        follow.after_ended = after
        for raw in job.spool.read():
            index = index_of(_line_id(raw))
            member = None if index is None else retry.pop(index, None)
            if index is not None and member is not None:
                member.attempt += 1
                follow.add(index, member, raw)
        self._launch(follow)

    async def _fail(self, job: Job, failure: Failure, *, pending: bool = False) -> None:
        """End every member with `failure`. `pending`: the batch may still answer them, so a
        rerun with the journal polls it rather than sending them again."""
        for index in list(job.members):
            member = job.members.pop(index)
            result = self.path.errored(
                index,
                failure,
                attempts=member.attempt + (job.batch_id is not None),
                started=member.started,
                batch_id=job.batch_id,
                line=member.line_id,
            )
            if pending:
                result["batch_pending"] = True
            await self._emit(result)

    # -- interrupted ------------------------------------------------------------------------

    async def _interrupted(self, live: list[Job]) -> None:
        """Ctrl-C (or the consumer stopped): say what runs on, or cancel it."""
        if not live:
            return
        ids = ",".join(str(job.batch_id) for job in live)
        logger = self.path.logger
        if not (self.options.cancel_on_interrupt or self.path.request.cancel_on_interrupt):
            how = (
                "rerun with the same journal (the CLI: the same command with --resume) to "
                "collect their results"
                if self.run.journal is not None
                else "no journal, so a rerun sends them again: cancel them "
                "(POST /v1/batches/{id}/cancel) or let them finish"
            )
            log_event(
                logger,
                logging.WARNING,
                "batch_api_interrupted",
                running=len(live),
                batches=ids,
                action="left_running",
                resume=f'"{how}"',
            )
            return
        cancelled = []
        for job in live:
            batch_id = str(job.batch_id)
            got = await self.wire.cancel(batch_id)
            if isinstance(got, Failure):
                log_event(
                    logger, logging.ERROR, "batch_api_cancel_failed", batch=batch_id, error=got
                )
                continue
            cancelled.append(batch_id)
            self._journal_cancel(batch_id)
        log_event(
            logger,
            logging.WARNING,
            "batch_api_interrupted",
            running=len(live),
            batches=ids,
            action="cancelled",
            cancelled=len(cancelled),
            resume='"rerun with the same journal to send what never ran"',
        )

    def _journal_cancel(self, batch_id: str) -> None:
        self.run.journaled(lambda journal: journal.record_group_cancelled(batch_id))


def _validation_errors(batch: Json) -> list[Json]:
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def _token_limited(errors: list[Json]) -> bool:
    return any(e.get("code") == "token_limit_exceeded" for e in errors)


def _described(errors: list[Json], shown: int = 3) -> str:
    parts = []
    for error in errors[:shown]:
        where = f"line {error['line']}: " if isinstance(error.get("line"), int) else ""
        parts.append(f"{where}{error.get('message') or error.get('code')}")
    if len(errors) > shown:
        parts.append(f"and {len(errors) - shown} more")
    return "; ".join(parts)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _line_id(raw: bytes) -> str:
    """The custom_id of a line this module wrote (it comes first: see `batch_line`)."""
    end = raw.find(b',"method":', _LINE_ID_START)
    try:
        value = orjson.loads(raw[_LINE_ID_START:end])
    except orjson.JSONDecodeError:
        return ""
    return value if isinstance(value, str) else ""
