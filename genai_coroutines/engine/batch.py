"""The batch driver: what every batch does, whichever API and execution path it uses.

A batch is many inputs, each ending as exactly one result dict carrying its `index`.
`run_batch` owns everything that is the same for every API: one HTTP session, bounded
concurrency with inputs pulled lazily (`runner.run_streaming`), the journal (a
success at this index for this very request is answered from it; every new result,
and every job the API accepted, is recorded at once), the progress bar and summary,
the batch stop (a bad key or no quota ends the rest without sending them), the
`batch_start` and `batch_done` log lines, and cancellation. An `Adapter` supplies only
what is API-specific:

    prepare(index, item) -> the item's request, or the Failure that stops it (raising
                            ValueError/TypeError is the same as an `invalid_input` Failure)
    digest(prepared)     -> the bytes that determine its answer (its journal identity)
    input_digest(item)   -> 16 bytes naming the request `prepare` would make of `item`,
                            without making it (equal ones are equal requests), or None:
                            journaled with an answer, so that a rerun matches the answer
                            by it before `prepare` (`Journal.input_digest`), its request's
                            digest being the fallback
    execute(run, prepared) -> its typed `Outcome` (`engine.outcome`: `Answered`, `Failed`
                            or `Pending`), attempts run through `retry.retrying`
    render(end)          -> the public result dict of an `ItemEnd` (the only place its
                            keys are written; an item that never ran is a `Failed` with
                            no attempt)
    revive(record)       -> the `Outcome` of a result dict it rendered earlier (the journal's)

The driver and everything it feeds (budget, journal, dedupe, summary, telemetry) read
outcomes, never the public keys: the dict is rendered once, at the edge.

`execute` gets an `ItemRun`: the item's index, the batch's shared state, and, when the
API accepted the item earlier (a Datalab job, a background response), the journaled
`Submission` to poll instead of sending it again, with `submitted()` to journal a new
one the moment the API returns it.

Three choices of the caller are the driver's too, so they hold for every adapter: with
`dedupe`, items whose digests are equal are sent once and each gets the answer
(`engine.dedupe`; a twin admitted while its original runs comes as `TWIN`, and
ends with its original's outcome, never sent, holding no slot); with a
`budget`, each item's estimated cost is reserved before it is sent and settled when it
finishes, and once the next one could pass the budget the rest end `budget_exceeded`
unsent (`engine.budget`); with a `cutoff` (`deadline=`), once it passes nothing more is sent
and the rest end `deadline_exceeded`, journaled, while what is in flight finishes
(`engine.cutoff`).

`execute` may also return a `Deferred`: stage requests (`Line`s, each named by its
`StageKey`) run in a group the API answers together (the OpenAI Batch API: a file of lines,
answered when its batch ends). The driver hands them to the stage's group
(`GroupedStage.open`, once per batch) and frees the item's slot; the group reports each
line's outcome by its key (`GroupRun.emit`), and once every line of the `Deferred` is
answered the driver goes on with the item's `then` (its outcome, its next `Deferred`, or an
awaitable of either: a continuation that runs another stage, e.g. a direct POST, runs as a
task of its own while it runs, never while it waits). Once the input is read, the groups are
`close`d (they send what they hold) and the batch ends when no line waits.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, Union

import aiohttp

from .bookkeeping import Bookkeeping, Result
from .budget import Budget
from .cutoff import Cutoff
from .dedupe import Twins
from .grouped import Tasks
from .http import ConnectorFactory, open_session
from .indexed import IndexedFloats, Starts
from .journal import Journal, JournalError, request_digest
from .logs import log_event
from .outcome import BatchStop, Failed, Failure, ItemEnd, Outcome
from .replays import READ_RUN, Replays
from .runner import Later, Slots, Source, run_streaming
from .stages import MAX_WAITING, StageKey
from .summary import Summary
from .telemetry import BatchTelemetry, ItemTelemetry, start_batch

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Submission:
    """Work the API accepted and runs on its side: enough to poll it, now or after a restart."""

    request_id: str
    request_check_url: str


class Admission(Protocol[P]):
    """What every adapter tells the driver about an item before it runs (see `Adapter`)."""

    kind: str
    """The journal's kind: a journal of one kind is refused by another."""
    unit: str
    """What the progress bar counts ("prompt", "doc")."""
    logger: logging.Logger

    async def prepare(self, index: int, item: Any) -> P | Failure: ...

    def digest(self, prepared: P) -> tuple[bytes, ...]: ...

    def input_digest(self, item: Any) -> bytes | None:
        """A digest of the raw item naming the request `prepare` would make of it (None: not
        known without `prepare`; see the module docstring)."""
        ...

    def render(self, end: ItemEnd[Any]) -> Result:
        """The public result dict of an ended item (see the module docstring)."""
        ...

    def revive(self, record: Mapping[str, Any]) -> Outcome[Any]:
        """The outcome of a result dict `render` made in an earlier run (the journal's)."""
        ...


class Adapter(Admission[P], Protocol[P]):
    """What one API (or one execution path of it) adds to the driver."""

    async def execute(self, run: ItemRun, prepared: P) -> Outcome[Any] | Deferred: ...


Next = Union["Outcome[Any]", "Deferred"]
Then = Callable[[list[Outcome[Any]]], Next | Awaitable[Next]]
"""What an item does with the outcomes of a grouped stage's lines (in the `Deferred`'s order):
its own outcome, its next stage, or an awaitable of either (a continuation that sends
another request itself)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One stage request of a `Deferred`: its key, its request, and its journal digest
    (what a rerun finds its group line under; None: the item's own, for an item of one
    stage)."""

    key: StageKey
    request: Any
    digest: str | None = None


SessionOpener = Callable[
    [int, Mapping[str, str]], AbstractAsyncContextManager[aiohttp.ClientSession]
]
"""`Clients.session`: a session for (concurrency, headers), to use in `async with`."""


@dataclass(slots=True)
class Deferred:
    """What `Adapter.execute` returns to run stage requests in a group (`GroupedStage`):
    the driver hands each `Line` to the stage's group, frees the item's slot, and once the
    group has reported every line's outcome, calls `then(outcomes)` (None, for one line:
    that outcome is the item's) for the item's outcome or its next `Deferred`. Nothing
    else of the item stays in memory meanwhile: no task, no future, no coroutine (a
    `per_page` extraction's several lines share one record)."""

    stage: GroupedStage
    lines: Sequence[Line]
    then: Then | None = None

    def __post_init__(self) -> None:
        if not self.lines:
            raise ValueError("a Deferred needs at least one line")
        if self.then is None and len(self.lines) != 1:
            raise ValueError("a Deferred of several lines needs a then")


@dataclass(slots=True)
class GroupRun:
    """What a grouped stage's group shares with the driver for one batch."""

    batch: BatchRun
    emit: Callable[[StageKey, Outcome[Any], str | None], Awaitable[None]]
    """`emit(key, outcome, digest)`: report a line's outcome (exactly once per line `add`ed);
    waits while the consumer is `runner.QUEUED_RESULTS` results behind, so the group's
    downloads pause with it. `digest`: the digest `add` was given, from where the group
    keeps it, for a line whose group file may not be journaled (see `Group.add`); else
    None."""
    fail: Callable[[BaseException], None]
    """End the batch with a bug of the group's own work."""


class Group(Protocol):
    """A grouped stage's lines for one batch (see `GroupedStage`)."""

    async def add(
        self, key: StageKey, request: Any, digest: str | None, input_digest: bytes | None
    ) -> bool:
        """Take a line (its outcome is `emit`ted later, or at once if it cannot be sent);
        `digest`: its journal identity (None without a journal); `input_digest`: its item's
        `Adapter.input_digest`, journaled with its answer (None: none is). True when the
        group keeps `digest` itself from now on (on disk, beside the line) and hands it back
        with the line's outcome until its journal holds it (`Journal.record_group`): the
        driver lets its own copy go (`bookkeeping.Digests`)."""
        ...

    def close(self) -> None:
        """The input is read: send what is held (lines that come later, the next stages of
        lines already taken, go out as the group's own timing says)."""
        ...

    async def shut(self, finished: bool) -> None:
        """The batch ends (not `finished`: interrupted, so say what runs on or cancel it)."""
        ...


class GroupedStage(Protocol):
    """A stage whose requests the API answers in groups (the Batch API: files of lines)."""

    def open(self, run: GroupRun) -> Group:
        """Its group for one batch, opened when the batch's first line comes."""
        ...


Ended = tuple[ItemEnd[Any], Result]
"""An ended item and its result dict, rendered once (what `DriverCore._results` yields)."""


class Waits(enum.Enum):
    """`DriverCore._admit`'s answer for an item that ends later without being sent: the
    journal answers it (`REPLAYED`: its record read when it is yielded), or an identical
    item already running does (`TWIN`, with `dedupe`: `Twins.finished` hands it that one's
    end). (An item that runs itself needs no such answer: `_admit` says None.)"""

    REPLAYED = "replayed"
    TWIN = "twin"


REPLAYED, TWIN = Waits.REPLAYED, Waits.TWIN


@dataclass(slots=True)
class BatchRun:
    """What the items of one batch share while it runs."""

    session: aiohttp.ClientSession
    stop: BatchStop
    wait: Callable[[float], Awaitable[None]]
    """How a backoff is slept (the progress bar counts the items sleeping in it)."""
    summary: Summary
    journal: Journal | None = None
    """The batch's journal (None without one), for an adapter whose items run in stages
    (`Journal.stage_result` / `record_stage`); write to it through `journaled`."""
    note: Callable[..., None] = field(default=lambda **_: None)
    """`note(key=value, ...)`: shown after the progress bar's counts (None removes one)."""
    journaled: Callable[[Callable[[Journal], object]], bool] = field(default=lambda _: True)
    """Run `write(journal)` (nothing without a journal); False, with the batch stopped as for
    a result that cannot be journaled, when the journal cannot take it."""
    telemetry: BatchTelemetry | None = None
    """The batch's spans and metrics; None without an OpenTelemetry SDK (`engine.telemetry`)."""
    slots: Slots = field(default_factory=Slots)
    """The driver's slots, which an item leaves while it waits (`ItemRun.waiting`)."""


@dataclass(slots=True)
class ItemRun:
    """One item's view of its batch, handed to `Adapter.execute`."""

    index: int
    batch: BatchRun
    started: float
    """`time.perf_counter()` when the item's turn came (its latency starts here)."""
    submission: Submission | None = None
    """Accepted earlier (journal or `resume`): poll it instead of sending the item again."""
    on_submitted: Callable[[Submission], object] = field(default=lambda _: None)
    trace: ItemTelemetry | None = None
    """The item's span, parent of its attempts'; None without an OpenTelemetry SDK."""

    def waiting(self) -> AbstractAsyncContextManager[None]:
        """`async with run.waiting():` around a wait on the provider's work (polling a
        background response or a Datalab job): the item leaves its driver slot for it, so
        another input is admitted meanwhile, and finishes without one
        (`runner.Slots.wait`; at most `BatchOptions.max_waiting` items wait so)."""
        return self.batch.slots.wait()

    def submitted(self, submission: Submission) -> None:
        """Journal work the API just accepted, before anything else happens to it."""
        self.submission = submission
        self.on_submitted(submission)


@dataclass
class BatchOptions:
    """The caller's choices for one batch, the same for every API."""

    concurrency: int
    headers: Mapping[str, str]
    journal: Any = None
    progress: bool = False
    summary: Summary | None = None
    resume: Mapping[int, Submission] | None = None
    start_fields: Mapping[str, Any] = field(default_factory=dict)
    """The fields of the `batch_start` log line (each adapter keeps its documented ones)."""
    dedupe: bool = False
    """Send items whose requests are identical once; each gets the answer (`engine.dedupe`)."""
    budget: Budget[Any] | None = None
    """Send nothing more once the next request could pass it (`engine.budget`)."""
    connector: ConnectorFactory | None = None
    """The caller's connector for the batch's session (`engine.clients`); None: the pool."""
    sessions: SessionOpener | None = None
    """Where the batch gets its session (`Clients.session`, which may keep one open across
    batches); None: one opened on `connector` and closed at the end."""
    max_waiting: int = MAX_WAITING
    """Items waiting on the provider without a driver slot, at most (`ItemRun.waiting`)."""
    cutoff: Cutoff | None = None
    """The batch's deadline: once it passes nothing more is sent (`engine.cutoff`)."""


class DriverCore(Generic[P]):
    """What every driver does around its items (see the module docstring): `stream` runs
    the batch, `_results` runs its items, admitting each with `_admit` and journaling what
    `_finish`es. `Driver` runs the items."""

    _later: Later[Ended]
    """Where an item that ended after its worker moved on is handed over (`Driver`'s): a
    twin (`dedupe`), when the item it waited for ends."""

    def __init__(self, adapter: Adapter[P], source: Source[Any], options: BatchOptions) -> None:
        self.adapter = adapter
        self.source = source
        self.options = options
        self.books = Bookkeeping(
            source,
            summary=options.summary or Summary(),
            progress=options.progress,
            unit=adapter.unit,
            journal=options.journal,
            kind=adapter.kind,
        )
        self.stop = BatchStop()
        self._twins = Twins() if options.dedupe else None
        self._held = IndexedFloats()
        """The budget's estimate held for each admitted item until it finishes."""
        self._replay_later = self._twins is None and options.budget is None
        """A journaled answer is read when it is yielded (`Driver._replayed`), unless dedupe
        or a budget needs it at once (`_found`)."""
        journal = self.books.journal
        self._journaled_input = (
            journal.input_digest if journal is not None and self._replay_later else None
        )
        """`Journal.input_digest`, when an item may be replayed by its input digest alone."""

    @property
    def summary(self) -> Summary:
        return self.books.summary

    async def stream(self) -> AsyncGenerator[Result, None]:
        books, options, logger = self.books, self.options, self.adapter.logger
        started = time.perf_counter()
        log_event(logger, logging.INFO, "batch_start", **options.start_fields)
        telemetry = start_batch(
            getattr(self.adapter, "telemetry_identity", None), books.summary.pricing
        )
        cutoff = options.cutoff
        timer = (
            None
            if cutoff is None
            else asyncio.get_running_loop().call_later(max(0.0, cutoff.left()), self._cut)
        )
        try:
            opened = (
                open_session(options.concurrency, options.headers, options.connector)
                if options.sessions is None
                else options.sessions(options.concurrency, options.headers)
            )
            async with opened as session:
                run = BatchRun(
                    session,
                    self.stop,
                    books.progress.wait,
                    books.summary,
                    books.journal,
                    books.progress.note,
                    self._write_journal,
                    telemetry,
                    Slots(options.max_waiting),
                )
                finished = False
                try:
                    async with aclosing(self._results(run)) as results:
                        async for end, result in results:
                            books.add(end)
                            if telemetry is not None:
                                telemetry.finished(end)
                            yield result
                    finished = True
                finally:  # after `results` closed: its workers cancelled before the groups shut
                    await self._wind_down(finished)
        finally:
            if timer is not None:
                timer.cancel()
            if options.budget is not None:
                await options.budget.close()
            books.close()
            books.summary.check_reported(logger)
            if telemetry is not None:
                telemetry.end(books.succeeded, books.failed)
            log_event(
                logger,
                logging.INFO,
                "batch_done",
                ok=books.succeeded,
                errors=books.failed,
                retries=books.summary.retries,
                rate_limited=books.summary.rate_limited,
                secs=f"{time.perf_counter() - started:.2f}",
            )

    def _results(self, run: BatchRun) -> AsyncGenerator[Ended, None]:
        """Every item's end and result, in completion order (each admitted by `_admit`)."""
        raise NotImplementedError

    async def _wind_down(self, finished: bool) -> None:
        """After `_results` is closed: what its items still hold is let go (`finished`:
        every item ended; else the batch is being interrupted)."""
        raise NotImplementedError

    def _cut(self) -> None:
        """The deadline passed: stop sending (`BatchStop.cut`), and say so."""
        cutoff = self.options.cutoff
        assert cutoff is not None
        self.stop.cut(cutoff.failure())
        books = self.books
        log_event(
            self.adapter.logger,
            logging.WARNING,
            "deadline_passed",
            deadline=cutoff.text(),
            done=books.succeeded + books.failed,
            action='"nothing more is sent: requests in flight finish, the rest end '
            'deadline_exceeded (journaled: a rerun with the journal sends them)"',
        )

    def _unsent(self, index: int, failure: Failure, started: float) -> Ended:
        """An item that ends without being sent."""
        end: ItemEnd[Any] = ItemEnd(index, Failed(failure, 0), started)
        return end, self.adapter.render(end)

    def _admit(self, index: int, prepared: P, started: float, item: Any) -> Ended | Waits | None:
        """A prepared item's end when it need not run: it cannot be sent, the journal holds
        its success (`REPLAYED`: read when it is yielded, `Driver._replayed`) or a twin's
        (`TWIN`: it takes the twin's outcome), or the deadline passed; None: it runs
        (after `_hold`, with a budget). Never raises for the item. (Not a coroutine: this
        is on every item's path.)
        `item`: its input, whose `Adapter.input_digest` is journaled with its answer."""
        if self.books.journal is not None or self._twins is not None:  # what its digest finds
            found = self._found(index, prepared, started, item)
            if found is not None:
                return found
        stop = self.stop
        if stop.cut_off:  # past the deadline: journaled, so a rerun sends it
            assert stop.failure is not None
            return self._finish(ItemEnd(index, Failed(stop.failure, 0), started))
        return None

    def _found(self, index: int, prepared: P, started: float, item: Any) -> Ended | Waits | None:
        """What the journal or the item's twins (`dedupe`) hold for it, by its digest."""
        books = self.books
        twins, budget = self._twins, self.options.budget
        try:
            parts = self.adapter.digest(prepared)
            done = (
                None
                if books.journal is None
                else books.replay(index, self.adapter.revive, *parts, later=self._replay_later)
            )
        except (ValueError, TypeError) as exc:  # a request that cannot be serialised
            return self._unsent(index, Failure(str(exc), "invalid_input", False), started)
        if done is True:
            return REPLAYED
        if done is None and books.journal is not None:  # its digest is kept: so is this
            input_digest = self.adapter.input_digest(item)
            if input_digest is not None:
                books.digests.keep_input(index, input_digest)
        digest = "" if twins is None else books.digests.get(index) or request_digest(*parts)
        if isinstance(done, ItemEnd):
            end = done
            if twins is not None:
                twins.answered(digest, end)
            if budget is not None:
                budget.charge(end)  # paid by the run that journaled it
            assert end.record is not None
            return end, {**end.record, "from_journal": True}
        twin = twins.admit(index, digest, started) if twins is not None else None
        if isinstance(twin, int):  # the index of the identical item running
            return TWIN
        if twin is not None:  # a twin's success, already in
            return self._finish(twin)
        return None

    async def _hold(self, index: int, prepared: P, started: float) -> Ended | None:
        """Reserve an admitted item's estimate on the budget; its end when the budget
        cannot take it."""
        budget = self.options.budget
        assert budget is not None
        paid = index in (self.options.resume or {}) or self.books.submission(index) is not None
        held = await budget.reserve(prepared, paid=paid)
        if isinstance(held, Failure):
            return self._finish(ItemEnd(index, Failed(held, 0), started))
        self._held[index] = held
        return None

    def _abandon(self, index: int) -> None:
        """An admitted item will not finish (the batch is being cancelled)."""
        if self._twins is not None:
            self._later.pending -= self._twins.abandoned(index)
        held = self._held.pop(index)
        if held is not None and self.options.budget is not None:
            self.options.budget.release(held)

    def _write_journal(self, write: Callable[[Journal], object]) -> bool:
        """`BatchRun.journaled`: `write(journal)`, the batch stopped if it cannot be written."""
        journal = self.books.journal
        if journal is None:
            return True
        return self._journal(lambda _index, _what: write(journal), -1, None)

    def _finish(self, end: ItemEnd[Any]) -> Ended:
        """Render the end of an admitted item, journal it (see `_journal`), settle its
        budget and give it to its waiting twins."""
        index, outcome = end.index, end.outcome
        result = self.adapter.render(end)
        if end.duplicate_of is not None:
            result["duplicate_of"] = end.duplicate_of
        if self.options.budget is not None:
            held = self._held.pop(index)
            if held is not None and self.options.budget is not None:
                self.options.budget.settle(held, outcome)
        if self.books.journal is not None:
            self._journal(self.books.record, index, (result, outcome))
        if self._twins is not None:  # journaled after it: a twin's record names it
            for twin in self._twins.finished(end):
                self._later.put_nowait(self._finish(twin))
        return end, result

    def _journal(self, write: Callable[[int, Any], object], index: int, what: Any) -> bool:
        """Journal a record; if the journal cannot be written, stop sending: every item not
        yet sent ends with that error, and what finished stays in the output. True when
        written."""
        try:
            write(index, what)
        except JournalError as exc:
            if self.stop.failure is None:
                self.stop.failure = Failure(
                    f"stopped: {exc}", "journal_error", retriable=False, dooms_batch=True
                )
            log_event(self.adapter.logger, logging.ERROR, "journal_failed", error=str(exc))
            return False
        return True


@dataclass(slots=True)
class _Waiting:
    """What the driver keeps of an item whose lines wait in a group."""

    index: int
    started: float
    trace: ItemTelemetry | None
    then: Then | None = None
    """Set by `_defer` for the stage the lines wait on."""
    keys: tuple[StageKey, ...] | None = None
    """The lines of a `Deferred` of several, in order (None for one line)."""
    got: dict[StageKey, Outcome[Any]] | None = None
    """Their outcomes so far (None for one line)."""


class Driver(DriverCore[P]):
    """One batch of one adapter, each item on its own, `concurrency` at once; `stream` runs it.
    An item whose `execute` returns a `Deferred` leaves its slot while its lines wait in
    its stage's group; a twin (`dedupe`) waits for its original without one either."""

    def __init__(self, adapter: Adapter[P], source: Source[Any], options: BatchOptions) -> None:
        super().__init__(adapter, source, options)
        self._later: Later[Ended] = Later(self._close_groups)
        self._groups: dict[GroupedStage, Group] = {}
        self._waiting: dict[StageKey, _Waiting] = {}
        self._plain = Starts()
        """The items waiting on a group with nothing but their index to keep (their only
        stage, no `then`, no span), and when their turn came (to a block of indices'
        precision: `indexed.Starts`): the Batch API path's million waiting lines cost a quarter
        of a byte each here, not a `_Waiting` and a dict entry."""
        self._continuing = Tasks(self._later.fail)
        """Continuations running (an awaitable `then`), a task each while they run."""
        self._replays = Replays()
        """Items the journal answers, read when the consumer takes them (`_replayed`)."""
        self._reading: list[bytes | str] = []
        """The stored records of those fetched last, not yet taken (`Journal.records`: the
        next one last)."""
        self._read_index = 0
        """The index of the next one."""
        self._read_at = 0.0
        """When they were fetched: their end time (a replay's latency is nil)."""
        self._run: BatchRun | None = None

    def _results(self, run: BatchRun) -> AsyncGenerator[Ended, None]:
        """`run_streaming` itself, not a generator around it (one less on every result's
        way); `_wind_down` does what such a generator's `finally` would."""
        self._run = run
        return run_streaming(
            self.source,
            functools.partial(self._one, run),
            concurrency=self.options.concurrency,
            slots=run.slots,
            later=self._later,
            backlog=None if self.books.journal is None else self._replayed,
            kept=None if self._journaled_input is None else self._kept,
        )

    async def _wind_down(self, finished: bool) -> None:
        await self._continuing.cancel()
        waiting = {waiting.index for waiting in self._waiting.values()}
        for index in waiting.union(self._plain):
            self._abandon(index)
        for group in self._groups.values():
            await group.shut(finished)

    async def _one(self, run: BatchRun, index: int, item: Any) -> Ended | None:
        """One item from its input to its end (None: it ends later, see `_report`); never
        raises for its own failures (an item the journal answers by its input never gets
        here: `_kept`). After a stop (not the deadline's) it ends unsent; after a failed
        `prepare` too; `_admit` then says whether it runs."""
        stop = self.stop
        if stop.doomed:
            assert stop.failure is not None
            return self._unsent(index, stop.failure, time.perf_counter())
        started = time.perf_counter()
        try:
            prepared = await self.adapter.prepare(index, item)
        except (ValueError, TypeError) as exc:
            prepared = Failure(str(exc), "invalid_input", retriable=False)
        if isinstance(prepared, Failure):
            return self._unsent(index, prepared, started)
        ended = self._admit(index, prepared, started, item)
        if ended is None and self.options.budget is not None:
            ended = await self._hold(index, prepared, started)
        if ended is not None:
            if not isinstance(ended, Waits):
                return ended
            if ended is TWIN:  # it ends with its twin's end (`_finish`)
                self._later.pending += 1
                return None
            if self._replay(index):
                await asyncio.sleep(0)
            return None
        journaled = self.books.journal is not None
        known = self._known(index) if journaled or self.options.resume else None
        item_run = ItemRun(index, run, started, known)
        if journaled:
            item_run.on_submitted = self._journal_submission(index)
        if run.telemetry is not None:
            item_run.trace = run.telemetry.item(index)
        try:
            outcome = await self.adapter.execute(item_run, prepared)
            if isinstance(outcome, Deferred):
                waiting = _Waiting(index, started, item_run.trace)
                self._later.pending += 1
                await self._defer(waiting, outcome)
                return None
        except BaseException:
            self._abandon(index)
            if item_run.trace is not None:
                item_run.trace.end(None)
            raise
        if item_run.trace is not None:
            item_run.trace.end(outcome)
        return self._finish(ItemEnd(index, outcome, started))

    def _kept(self, index: int, item: Any) -> bool:
        """`run_streaming`'s `kept`: whether the journal answers this very input
        (`Journal.input_digest`), its request never built; it is then kept for `_replayed`.
        (Not once the batch is doomed: `_one` ends the item unsent.)"""
        if self.stop.doomed:
            return False
        answered = self._journaled_input
        assert answered is not None
        digest = answered(index)
        if digest is None or digest != self.adapter.input_digest(item):
            return False
        self._replay(index)
        return True

    def _replay(self, index: int) -> bool:
        """Keep an item the journal answers for `_replayed`; True when the worker should let
        the loop run (the consumer, the requests already sent)."""
        replays = self._replays
        if not replays:
            self._later.wake()
        return replays.add(index)

    async def _defer(self, waiting: _Waiting, deferred: Deferred) -> None:
        """Hand a stage's lines to its group; `_report` takes their outcomes."""
        group = self._groups.get(deferred.stage)
        if group is None:
            assert self._run is not None
            group_run = GroupRun(self._run, self._report, self._later.fail)
            group = self._groups[deferred.stage] = deferred.stage.open(group_run)
        lines = deferred.lines
        input_digest = self.books.digests.deferred(waiting.index)
        if (
            len(lines) == 1
            and deferred.then is None
            and waiting.trace is None
            and not lines[0].key.stage
            and lines[0].key.index == waiting.index
        ):  # nothing but its start time to keep (`_plain`)
            if waiting.index in self._plain:
                raise ValueError(f"stage request {lines[0].key.text} is already waiting")
            self._plain.add(waiting.index, waiting.started)
            await self._hand(group, lines[0], input_digest)
            return
        waiting.then = deferred.then
        waiting.keys = waiting.got = None
        if len(lines) > 1:
            waiting.keys, waiting.got = tuple(line.key for line in lines), {}
        for line in lines:
            if line.key in self._waiting:
                raise ValueError(f"stage request {line.key.text} is already waiting")
            self._waiting[line.key] = waiting
        for line in lines:
            await self._hand(group, line, None)

    async def _hand(self, group: Group, line: Line, input_digest: bytes | None) -> None:
        """Give one line to its group (with its item's input digest, for an item's only
        line); the item's digest (an item of one stage's line: no digest of its own) is let
        go if the group keeps it (`Group.add`)."""
        digests = self.books.digests
        index = line.key.index
        own = line.digest is None and not line.key.stage
        digest = digests.get(index) if own else line.digest
        if await group.add(line.key, line.request, digest, input_digest) and own:
            digests.let_go(index)

    async def _report(self, key: StageKey, outcome: Outcome[Any], digest: str | None) -> None:
        """`GroupRun.emit`: a line's outcome; once its `Deferred`'s lines are all in, the
        item's next stage or its end."""
        if digest is not None and not key.stage:
            self.books.digests.restore(key.index, digest)
        started = None if key.stage else self._plain.pop(key.index)
        if started is not None:
            await self._next(_Waiting(key.index, started, None), outcome)
            return
        waiting = self._waiting.pop(key)
        got, keys = waiting.got, waiting.keys
        if got is None or keys is None:
            outcomes = [outcome]
        else:
            got[key] = outcome
            if len(got) < len(keys):
                return
            outcomes = [got[each] for each in keys]
        then = waiting.then
        ended = outcomes[0] if then is None else then(outcomes)
        if isinstance(ended, Awaitable):  # a continuation sending a request: a task while it runs
            self._continuing.spawn(self._continue(waiting, ended))
            return
        await self._next(waiting, ended)

    async def _continue(self, waiting: _Waiting, ended: Awaitable[Outcome[Any] | Deferred]) -> None:
        try:
            await self._next(waiting, await ended)
        except asyncio.CancelledError:  # the batch is being cancelled
            self._abandon(waiting.index)
            raise

    async def _next(self, waiting: _Waiting, ended: Outcome[Any] | Deferred) -> None:
        """The item's next stage, or its end."""
        if isinstance(ended, Deferred):
            await self._defer(waiting, ended)
            return
        if waiting.trace is not None:
            waiting.trace.end(ended)
        await self._later.put(self._finish(ItemEnd(waiting.index, ended, waiting.started)))

    def _replayed(self) -> Ended | None:
        """`run_streaming`'s backlog: the next item the journal answers, read now (the
        rows of the next `READ_RUN` of them are fetched together)."""
        reading = self._reading
        if not reading:
            taken = self._replays.take(READ_RUN)
            if taken is None:
                return None
            journal = self.books.journal
            assert journal is not None
            reading = self._reading = journal.records(*taken)
            self._read_index = taken[0]
            self._read_at = time.perf_counter()
        index = self._read_index
        self._read_index = index + 1
        end = self.books.replayed(index, reading.pop(), self.adapter.revive, self._read_at)
        record = end.record
        if record is None:  # it did not read back: journaled as failed
            return self._finish(end)
        # The result is the record itself, marked: it was read for this item alone (and
        # revived before it was marked), so no copy of it is needed.
        assert isinstance(record, dict)
        record["from_journal"] = True
        return end, record

    def _close_groups(self) -> None:
        """`Later.close`: the input is read, so each group sends what it holds."""
        for group in self._groups.values():
            group.close()

    def _journal_submission(self, index: int) -> Callable[[Submission], object]:
        """`ItemRun.on_submitted` of item `index`. (Its own function: a closure in `_one`
        would cost every item its cells, journal or not.)"""
        return lambda submission: self._journal(self.books.submitted, index, submission)

    def _known(self, index: int) -> Submission | None:
        resume = self.options.resume
        resumed = resume.get(index) if resume else None
        if resumed is not None:
            return resumed
        if self.books.journal is None:
            return None
        known = self.books.submission(index)
        return None if known is None else Submission(*known)
