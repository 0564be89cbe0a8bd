"""One batch's group of Batch API lines: lines into files, files into batches, answers back.

`BatchJobs` is the `engine.Group` of the Batch API stage for one batch: the driver hands
it each stage request's line (`add`, keyed by its `StageKey`: an item's index, and for a
multi-stage item its stage and page) and takes each one's outcome back by that key
(`GroupRun.emit`) once its batch ends. The lines go into `BatchJob`s (`spool`: the lines in
a temporary file, a bit per line in memory), files cut by request count, bytes and
(when `BatchAPI.max_enqueued_tokens` is set) estimated input tokens, or sent partly filled
once no line came for `flush_idle_secs` or `flush_max_wait_secs` passed since the file's
first line (so lines that come slowly, as a pipeline's documents finish their OCR, or after
the input ended, go out together without waiting for the input's end).

Each job is submitted (`submitter.Submitter`), its batch followed until it
ends and its answers joined back (`answers.Answers`); the lines they hand back go into a
follow-up job, copied from the ended job's spool. A waiting line keeps a bit of its job in
memory (`spool.Keys`: its body, custom_id, tokens and journal digest are in the spool), so
the lines waiting cost next to nothing (`benchmarks/million.py`).

Crash-safety is the journal's (`Journal.record_group`, `group_line`): a rerun with the
same journal finds each unfinished item's file and batch and, once the input has been
read (`close`), polls that batch instead of uploading the item again, or creates the batch of a
file uploaded just before a crash (after listing the batches for one the crash left
unjournaled). What never reached a file goes out in new files as they fill. An interrupt
(Ctrl-C) leaves the batches running and says how to collect them, or cancels them with
the request's `cancel_on_interrupt`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from contextlib import suppress
from dataclasses import replace

import aiohttp

from ...engine import Failure, GroupRun, log_event
from ...engine.grouped import Tasks
from ...engine.journal import GroupLine
from ...engine.stages import StageKey
from ..direct import Prepared, retry_policy
from ..prices import usage_tokens
from .answers import Answers
from .context import BatchContext
from .fallback import Fallback, Resender
from .spool import BatchJob, Keys, batch_line, custom_id
from .submitter import Submitter
from .wire import TERMINAL, BatchWire

SHOWN_BATCHES = 3
"""Batches named on the progress bar; the rest are counted."""
UNSENT_FILES = 2
"""New lines not yet in an uploaded file, at most, in files of `max_requests_per_file`: past
that, `add` waits for an upload (the input is read no further ahead of the uploads, so the
spools on disk stay bounded; a line spooled keeps its journal digest there only, see
`Group.add`). The lines held back go in first come, first served (`BatchJobs.queued`)."""


class BatchJobs:
    """The files and batches of one `stream()` on the Batch API path."""

    def __init__(self, context: BatchContext, run: GroupRun, resend: bool = False) -> None:
        request = context.request
        self.context = context
        self.group = run
        self.options = context.options
        policy = retry_policy(request)
        api_key = request.api_key or ""
        self.wire = BatchWire(
            run.batch.session,
            request.base_url,
            api_key,
            policy,
            request.timeout_secs,
            run.batch.wait,
            run.batch.telemetry,
        )
        self.jobs: list[BatchJob] = []
        self.tasks = Tasks(run.fail)
        self.numbers = itertools.count(1)
        self.answers = Answers(
            context, self.wire, api_key, policy, run.batch.wait, emit=run.emit, note=self._note
        )
        self.resender = Resender(context, run, self.tasks)
        self.resend = resend
        """Send what an ended batch hands back synchronously, not in a follow-up batch."""
        self.fallback = (
            None
            if context.cutoff is None
            else Fallback(context, context.cutoff, self, self.wire, self.answers, self.resender)
        )
        self.submitter = Submitter(
            context,
            run,
            self.wire,
            api_key,
            self.answers,
            divert=None if self.fallback is None else self.fallback.take,
        )
        self.added = 0
        """Lines taken (`add`)."""
        self.closed = False
        """The input is read (`close`)."""
        if self.fallback is not None:
            self.tasks.spawn(self.fallback.watch())
        self.writer: BatchJob | None = None
        """The file being written."""
        self.loop = asyncio.get_running_loop()
        self.first_line = self.last_line = 0.0
        """`loop.time()` of the writer's first line and of its latest."""
        self.timer: asyncio.TimerHandle | None = None
        """Sends the writer once it is due (`_due`); one per group, not one per line."""
        self.resumed: dict[str, BatchJob] = {}
        """The files of earlier runs that hold lines of this one, sent once the input is read."""
        self.unsent = 0
        """New lines written, or let in to be written, and not yet in an uploaded file (see
        `UNSENT_FILES`)."""
        self.queued: deque[asyncio.Future[None]] = deque()
        """Lines held back for room among the unsent, let in in turn as uploads make room
        (`_room`). In turn: a worker whose items go straight into the file takes input after
        input without yielding, so with a mere "wait until there is room" it would take every
        place an upload frees, and a line held back early stayed back until the input ended,
        its journal digest keeping the index range behind it in memory (`bookkeeping.Digests`:
        33 bytes an index, 31 MiB at a million)."""

    async def shut(self, finished: bool) -> None:
        """The batch ends; on the way out (Ctrl-C, a bug) the batches still running are left
        running or cancelled (`_interrupted`)."""
        live = [j for j in self.jobs if j.batch_id and j.status not in TERMINAL]
        if self.timer is not None:
            self.timer.cancel()
        await self.tasks.cancel()
        if not finished:
            await self._interrupted(live)
        for job in self.jobs:
            job.spool.remove()

    # -- lines into files -------------------------------------------------------------------

    def close(self) -> None:
        """The input is read: the file being written goes out, and so do earlier runs'."""
        self.closed = True
        self.flush()
        for job in self.resumed.values():
            self._launch(job)
        self.resumed.clear()

    def flush(self) -> None:
        """The file being written goes out."""
        if self.writer is not None:
            self._launch(self.writer)
            self.writer = None

    async def add(
        self, key: StageKey, request: Prepared, digest: str | None, input_digest: bytes | None
    ) -> bool:
        """A line for the file being written (a file of an earlier run, if it holds it);
        after a deadline's switch (`fallback`), sent synchronously. True when it went into
        a spool, which keeps its digest (`Group.add`: it comes back with the line's outcome,
        `Spooled.digest`)."""
        self.added += 1
        options = self.options
        body = self.context.direct.wire_body(request)
        tokens = self.context.input_tokens(request)
        known = self._known(key, digest)
        if known is not None:
            job = self.resumed.get(known.file_id)
            if job is None:
                job = self.resumed[known.file_id] = self._resumed(known)
            line = batch_line(known.line_id, body)
            job.add(key, line, known.attempt, tokens, digest, input_digest)
            return True
        if self.fallback is not None and self.fallback.switched:
            self.resender.send(key, body, tokens, 0, None)
            return False
        line_id = custom_id(key, body)
        line = batch_line(line_id, body)
        if len(line) > options.max_bytes_per_file:
            what = f"user_prompts[{key.index}]" if not key.stage else f"request {key.text}"
            failure = Failure(
                f"{what} makes a batch line of {len(line):,} bytes, more "
                f"than max_bytes_per_file ({options.max_bytes_per_file:,})",
                "invalid_input",
                retriable=False,
                param="user_prompts",
            )
            await self.group.emit(
                key, self.context.errored(failure, attempts=0, batch_id=None, line=line_id), None
            )
            return False
        if self.queued or self.unsent >= self._most():
            await self._room()
        else:
            self.unsent += 1
        writer = self.writer
        if writer is not None and not self._fits(writer, len(line), tokens):
            self.flush()
            writer = None
        now = self.loop.time()
        if writer is None:
            writer = self.writer = self._job()
            self.first_line = now
        self.last_line = now
        writer.add(key, line, 0, tokens, digest, input_digest)
        writer.new += 1
        if self.timer is None:
            self._arm()
        return True

    def _most(self) -> int:
        """New lines that may wait for an upload (`UNSENT_FILES`)."""
        return UNSENT_FILES * self.options.max_requests_per_file

    async def _room(self) -> None:
        """Wait for this line's turn to be let in among the unsent (`queued`); it is counted
        in `unsent` when let in (`_let_in`)."""
        turn = self.loop.create_future()
        self.queued.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # let in, never written: its place goes on
                self.unsent -= 1
                self._let_in()
            else:
                with suppress(ValueError):  # not taken out yet
                    self.queued.remove(turn)
            raise

    def _let_in(self) -> None:
        """The lines held back that the unsent have room for, in turn."""
        queued, most = self.queued, self._most()
        while queued and self.unsent < most:
            turn = queued.popleft()
            if not turn.done():
                self.unsent += 1
                turn.set_result(None)

    def _deadline(self) -> float:
        """When the file being written is due: `flush_idle_secs` after its latest line, at
        most `flush_max_wait_secs` after its first."""
        options = self.options
        return min(
            self.last_line + options.flush_idle_secs,
            self.first_line + options.flush_max_wait_secs,
        )

    def _arm(self) -> None:
        self.timer = self.loop.call_at(self._deadline(), self._due)

    def _due(self) -> None:
        """The timer: send the file being written if it is due, else wait until it is."""
        self.timer = None
        if self.writer is None:
            return
        if self.loop.time() < self._deadline():  # lines came since it was armed
            self._arm()
            return
        log_event(
            self.context.logger,
            logging.DEBUG,
            "batch_api_flush",
            lines=self.writer.spool.lines,
            waited=f"{self.loop.time() - self.first_line:.2f}s",
        )
        self.flush()

    def _known(self, key: StageKey, digest: str | None) -> GroupLine | None:
        journal = self.group.batch.journal
        if journal is None or digest is None:
            return None
        return journal.group_line(key, digest)

    def _job(self) -> BatchJob:
        job = BatchJob(next(self.numbers))
        self.jobs.append(job)
        return job

    def _resumed(self, known: GroupLine) -> BatchJob:
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
            self.submitter.enqueue(job)
        return job

    def _fits(self, job: BatchJob, size: int, tokens: int) -> bool:
        options, spool = self.options, job.spool
        limit = options.max_enqueued_tokens
        return (
            spool.lines < options.max_requests_per_file
            and spool.bytes + size <= options.max_bytes_per_file
            and (limit is None or spool.tokens + tokens <= limit)
        )

    def _launch(self, job: BatchJob) -> None:
        self.tasks.spawn(self._life(job))

    # -- one file and its batch -------------------------------------------------------------

    async def _life(self, job: BatchJob) -> None:
        try:
            if job.batch_id is None and not await self.submitter.submit(job):
                return
            self._sent(job)
            if self.fallback is not None:
                await self.fallback.created(job)
            batch = await self.answers.follow(job)
            if batch is not None:
                await self.submitter.release(job)  # it ended: its tokens leave before it is read
                retry, token_limited = await self.answers.resolve(job, batch)
                usage = batch.get("usage")  # the provider's figures, beside the lines' sums
                summary = self.group.batch.summary
                summary.report_group(usage_tokens(usage) if isinstance(usage, dict) else None)
                resend = self.resend or (self.fallback is not None and self.fallback.switched)
                if retry.keys and resend:
                    self.resender.again(job, retry.keys, ran=True)
                elif retry.keys:
                    after = self.submitter.ended if token_limited else None
                    self._follow_up(job, retry.keys, after=after)
        finally:
            self._sent(job)
            await self.submitter.release(job)
            job.spool.remove()
            with suppress(ValueError):
                self.jobs.remove(job)
            self._note()

    def _sent(self, job: BatchJob) -> None:
        """The job's new lines are in an uploaded file, or will never be."""
        if job.new:
            self.unsent -= job.new
            job.new = 0
            self._let_in()

    def _follow_up(self, job: BatchJob, retry: Keys, after: int | None) -> None:
        """A new job of the lines to send again, copied from the ended job's spool."""
        follow = self._job()
        follow.after_ended = after
        for line in job.spool.read():
            if retry.discard(line.key):
                attempt = job.attempt_of(line.key) + 1
                follow.add(line.key, line.raw, attempt, line.tokens, line.digest, line.input_digest)
        self._launch(follow)

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
        self.group.batch.note(batches=", ".join(parts) or None)

    # -- interrupted ------------------------------------------------------------------------

    async def _interrupted(self, live: list[BatchJob]) -> None:
        """Ctrl-C (or the consumer stopped): say what runs on, or cancel it."""
        if not live:
            return
        ids = ",".join(str(job.batch_id) for job in live)
        logger = self.context.logger
        if not self.context.request.cancel_on_interrupt:
            how = (
                "rerun with the same journal (the CLI: the same command with --resume) to "
                "collect their results"
                if self.group.batch.journal is not None
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
        self.group.batch.journaled(lambda journal: journal.record_group_cancelled(batch_id))


class BatchStage:
    """The Batch API as a grouped stage (`engine.GroupedStage`): a `jobs.BatchJobs` per
    batch, taking lines of requests as `DirectAdapter.prepare` makes them. `session`: the
    one its calls go through, when not the batch's (the pipeline's, whose batch session
    carries no key)."""

    def __init__(
        self,
        context: BatchContext,
        resend: bool = False,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`resend`: what an ended batch hands back is sent synchronously (a rerun that
        collects an earlier run's batches), not in a follow-up batch."""
        self.context = context
        self.resend = resend
        self.session = session

    def open(self, run: GroupRun) -> BatchJobs:
        if self.session is not None:
            run = replace(run, batch=replace(run.batch, session=self.session))
        return BatchJobs(self.context, run, self.resend)
