"""The Batch API with a deadline: batches while they can make it, the synchronous path after.

    results = await ResponsesProcessor().process_batch(request, batch_api=True, deadline=6 * 3600)

Items go into batches as without a deadline. Meanwhile `Fallback.watch` keeps the time the
synchronous path would need for every item still unanswered (those owed by a file or a
batch, and with a sized input those not read yet): its requests at the key's requests per
minute and its tokens (input estimates plus `max_output_tokens`, or 4,096 without it) at
its tokens per minute, each the request's `requests_per_minute`/`tokens_per_minute` if
given, else learned earlier on the key in the limits store, else `ASSUMED_RPM` (and no
token bound); plus `MARGIN_SHARE` of it and `BatchAPI.fallback_margin_secs` (600 s by
default: OpenAI gives a cancelled batch up to 10 minutes to stop). When the time left
falls to that (at once, for a deadline too short for even the synchronous path), it
switches, once (`deadline_fallback`, logged with the counts and times):

- every unfinished batch is cancelled (`POST /v1/batches/{id}/cancel`, journaled) and
  followed until it ends; its output and error files are read as always, so a line it
  answered 200 is kept (with its `batch_id`) and never sent again, and what it hands back
  (the lines that never ran, retriable failures) is sent synchronously (`Resender`);
- a file not yet made a batch is not: its lines are sent synchronously, and so is every
  item read from then on;
- the synchronous requests are the batch lines' bodies, at the request's own tier. A
  request for flex (`service_tier="flex"`: the caller says the model offers it) plans at
  flex's pace (`FLEX_SLOWDOWN` times the need: flex is half price too, so switching sooner
  costs nothing) and is sent at flex, unless the time left is nearer the default tier's need
  than flex's (a deadline short from the start): then at the default tier.

An answer sent synchronously carries no `batch_id` and reports the tier that served it,
which is what the summary counts and prices it by (`service_tiers`: "batch" at half,
"flex" at flex's share, "default" at the list price). If the deadline passes anyway,
the driver's cutoff (`engine.cutoff`) stops the synchronous sends: what is left ends
`deadline_exceeded`, journaled, and a rerun with the journal sends it.

`Resender` is also how a synchronous rerun sends what a journaled batch hands back
(`collect.CollectingAdapter`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Protocol

import orjson

from ...engine import Failure, GroupRun, ItemRun, log_event
from ...engine.cutoff import Cutoff
from ...engine.grouped import Tasks
from ...engine.stages import StageKey
from ..direct import Prepared
from ..prices import DEFAULT_OUTPUT_ALLOWANCE
from .answers import Answers
from .context import BatchContext
from .spool import BatchJob, Keys, body_of
from .wire import TERMINAL, BatchWire

ASSUMED_RPM = 500.0
"""Requests per minute assumed of a key whose limits are neither given nor learned
(OpenAI's first usage tier for most models)."""
MARGIN_SHARE = 0.25
"""The synchronous path's estimate is taken this much longer (its latency, retries)."""
FLEX_SLOWDOWN = 2.0
"""Flex is used only when the time left is this many times the need (it answers slower,
and may refuse for capacity)."""


class Resender:
    """Sends lines a run's batches will not answer synchronously, the request's
    `max_concurrent_requests` at a time, and emits each outcome for its line."""

    def __init__(self, context: BatchContext, group: GroupRun, tasks: Tasks) -> None:
        self.direct = context.direct
        self.group = group
        self.tasks = tasks
        self.bound = asyncio.Semaphore(context.request.max_concurrent_requests)
        self.max_output = context.direct.template.max_output
        self.tier: str | None = None
        """The `service_tier` the bodies are sent at (None: as written, the request's)."""

    def again(self, job: BatchJob, keys: Keys, *, ran: bool) -> None:
        """Send the lines of a job under `keys` (taken out of it); `ran`: its batch ended,
        so each was sent in it once more."""
        for line in job.spool.read():
            if keys.discard(line.key):
                earlier = job.attempt_of(line.key) + int(ran)
                self.send(line.key, body_of(line.raw), line.tokens, earlier, line.digest)

    def send(
        self, key: StageKey, body: bytes, tokens: int, earlier: int, digest: str | None
    ) -> None:
        """Send one stage request's body; `earlier`: batches it was sent in before;
        `digest`: the spool's, handed back with its outcome (`GroupRun.emit`)."""
        if self.tier is not None:
            decoded = orjson.loads(body)
            if decoded.get("service_tier") != self.tier:
                decoded["service_tier"] = self.tier
                body = orjson.dumps(decoded)
        prepared = Prepared(body, tokens + self.max_output)
        self.tasks.spawn(self._send(key, prepared, earlier, digest))

    async def _send(
        self, key: StageKey, prepared: Prepared, earlier: int, digest: str | None
    ) -> None:
        async with self.bound:
            item = ItemRun(key.index, self.group.batch, time.perf_counter())
            outcome = await self.direct.execute(item, prepared)
        outcome = replace(outcome, attempts=outcome.attempts + earlier)
        await self.group.emit(key, outcome, digest)


class Owed(Protocol):
    """What the fallback reads of one run's files and batches (`jobs.BatchJobs`)."""

    jobs: list[BatchJob]
    added: int
    """Lines taken so far."""
    closed: bool
    """The input is read: no line will come but those of the jobs."""

    def flush(self) -> None:
        """Launch the file being written (its lines then go where the fallback says)."""
        ...


class Fallback:
    """One run's switch from its batches to the synchronous path (see the module docstring)."""

    def __init__(
        self,
        context: BatchContext,
        cutoff: Cutoff,
        owed: Owed,
        wire: BatchWire,
        answers: Answers,
        resender: Resender,
    ) -> None:
        self.context = context
        self.cutoff = cutoff
        self.owed = owed
        self.wire = wire
        self.answers = answers
        self.resender = resender
        self.switched = False
        self.slowdown = FLEX_SLOWDOWN if context.request.service_tier == "flex" else 1.0
        """A flex request plans at flex's pace: it switches sooner, to half-price flex."""
        direct = context.direct
        self.output_allowance = direct.template.max_output or DEFAULT_OUTPUT_ALLOWANCE
        self.limiter = direct.limiter

    # -- when ---------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Check the time left against the need, every poll interval or sooner, until the
        switch (cancelled with the run)."""
        interval = self.context.options.poll_interval_secs
        while True:
            need, items = await self.need()
            left = self.cutoff.left()
            if items and left <= need:
                await self.switch(left, need, items)
                return
            await asyncio.sleep(interval if left <= need else min(interval, left - need))

    async def need(self) -> tuple[float, int]:
        """Seconds the synchronous path would need for what is unanswered, margins
        included (at flex's pace for a flex request), and how many items that is. A
        running batch owes its lines less those it reports completed (`request_counts`),
        which its output file will hold."""
        owed = self.owed
        items, tokens = 0, 0.0
        for job in owed.jobs:
            spool = job.spool
            read = spool.lines - len(job.owed)  # lines whose answers were read back
            owing = len(job.owed) - max(0, job.counts.get("completed", 0) - read)
            if owing > 0:
                items += owing
                tokens += spool.tokens * owing / spool.lines
        expected = self.context.expected
        if expected is not None and not owed.closed and owed.added < expected:
            unread = expected - owed.added
            tokens += unread * (tokens / items if items else 0.0)
            items += unread
        tokens += items * self.output_allowance
        rpm, tpm = await self._limits()
        minutes = max(items / rpm, tokens / tpm if tpm else 0.0)
        margin = self.context.options.fallback_margin_secs
        return minutes * 60.0 * (1.0 + MARGIN_SHARE) * self.slowdown + margin, items

    async def _limits(self) -> tuple[float, float | None]:
        request = self.context.request
        known = await self.limiter.store.limits(self.limiter.key)
        rpm = request.requests_per_minute or known.get("requests") or ASSUMED_RPM
        return rpm, request.tokens_per_minute or known.get("tokens")

    # -- the switch ---------------------------------------------------------------------------

    async def switch(self, left: float, need: float, items: int) -> None:
        """Cancel the batches, and send synchronously from now on."""
        self.switched = True
        margin = self.context.options.fallback_margin_secs
        asked = self.context.request.service_tier
        if asked == "flex" and left < need - (need - margin) * (1 - 1 / FLEX_SLOWDOWN) / 2:
            self.resender.tier = "default"  # nearer the default tier's need than flex's
        tier = self.resender.tier or asked or "default"
        running = [j for j in self.owed.jobs if j.batch_id and j.status not in TERMINAL]
        log_event(
            self.context.logger,
            logging.WARNING,
            "deadline_fallback",
            deadline=self.cutoff.text(),
            left=f"{left:.1f}s",
            sync_needs=f"{need:.1f}s",
            unanswered=items,
            batches_cancelled=len(running),
            tier=tier,
            action='"batches cancelled, their answered lines kept; the rest sent synchronously"',
        )
        self.owed.flush()
        for job in running:
            await self.cancel(job)

    def take(self, job: BatchJob) -> bool:
        """After the switch, a job not yet made a batch is sent synchronously instead
        (True); before it, False (`submitter.Submitter` goes on)."""
        if not self.switched:
            return False
        self.resender.again(job, job.owed, ran=False)
        return True

    async def created(self, job: BatchJob) -> None:
        """A batch created as the switch happened is cancelled at once."""
        if self.switched and job.status not in TERMINAL:
            await self.cancel(job)

    async def cancel(self, job: BatchJob) -> None:
        """Cancel one batch (once), journaled: what it hands back is sent synchronously."""
        if job.cancelled:
            return
        batch_id = str(job.batch_id)
        job.cancelled = True
        got = await self.wire.cancel(batch_id)
        if isinstance(got, Failure):  # finalizing or ended already: it answers on its own
            job.cancelled = False
            log_event(
                self.context.logger,
                logging.WARNING,
                "deadline_fallback_cancel_failed",
                batch=batch_id,
                error=got,
            )
            return
        self.resender.group.batch.journaled(lambda j: j.record_group_cancelled(batch_id))
        self.answers.observe(job, got.value)
