"""The answers of one job's batch: polled until it ends, then its output and error files read.

Each batch is polled (`engine.poll_until`) until it ends, whatever it ended as
(`completed`, `expired`, `failed`, `cancelled`), and both its files are read line by
line: every line is judged (`judge`: a success only with `status_code` 200 and a
finished response, anything else by the synchronous path's rules), and lines that
failed retriably and lines that never ran (an expired batch) are handed back for a
follow-up batch, up to `max_retries` rounds. A batch that failed validation
(`errors.data`) fails the lines it names with their message, fails every line with a
file-level message (the enqueued-token limit's is retried once a batch has ended), and
sends lines it did not name again.

Nothing is bought again silently: the lines handed back are logged at WARNING
(`batch_api_resend`: the batch, how many, and why), as are lines that are not JSON
(`batch_api_unreadable_lines`) and custom_ids this library did not write
(`batch_api_foreign_lines`), which are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from ...engine import Failure, Outcome, Reply, RetryPolicy, Success, log_event, poll_until
from ...engine.stages import StageKey
from ...engine.telemetry import batch_api_status
from ..direct import answer
from ..errors import classify
from ..results import Answer
from .context import BatchContext
from .spool import BatchJob, Keys, custom_id_of, key_of
from .wire import TERMINAL, BatchWire, Json

SHOWN_REASONS = 3
SHOWN_ID_CHARS = 40
RETRIABLE_LINE_CODES = frozenset({"batch_expired", "server_error", "rate_limit_exceeded"})
"""`error.code`s of a line without a response that a follow-up batch may still answer."""
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def judge(line: dict[str, Any], api_key: str) -> Success[Answer] | Failure:
    """What one output or error line says: a usable answer, or why there is none."""
    response, error = line.get("response"), line.get("error")
    if isinstance(response, dict):
        status, body = response.get("status_code"), response.get("body")
        raw = b"" if body is None else orjson.dumps(body)
        if status == 200:
            return answer(Reply(200, NO_HEADERS, raw))
        if isinstance(status, int) and not isinstance(status, bool) and status >= 100:
            return classify(status, NO_HEADERS, raw, api_key)
        return Failure(
            f"the line came back with status_code {status!r} and no answer",
            "server_error",
            retriable=True,
        )
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") or "no message"
        if code == "batch_expired":
            message = f"never ran: {message}"
        return Failure(
            f"{code or 'error'}: {message}",
            "job_failed",
            retriable=code in RETRIABLE_LINE_CODES,
            code=code,
        )
    return Failure("the line holds neither a response nor an error", "invalid_response", True)


@dataclass(slots=True)
class Resend:
    """The lines of an ended batch handed back for a follow-up batch, and why."""

    keys: Keys = field(default_factory=Keys)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, key: StageKey, failure: Failure) -> None:
        self.keys.add(key)
        self.reasons[failure.message] += 1

    def described(self) -> str:
        shown = [f"{n} x {why}" for why, n in self.reasons.most_common(SHOWN_REASONS)]
        if len(self.reasons) > SHOWN_REASONS:
            shown.append(f"and {len(self.reasons) - SHOWN_REASONS} other reasons")
        return "; ".join(shown)


@dataclass(slots=True)
class _Oddities:
    """Lines of one output or error file that answer none of this run's items."""

    unreadable: int = 0
    foreign: int = 0
    example: str = ""
    """The first foreign custom_id, cut short (one may be megabytes long)."""

    def reset(self) -> None:  # the download restarted from the top
        self.unreadable = self.foreign = 0


class Answers:
    """Each job's batch followed to its end and every member ended with its result, or
    handed back for a follow-up."""

    def __init__(
        self,
        context: BatchContext,
        wire: BatchWire,
        api_key: str,
        policy: RetryPolicy,
        wait: Callable[[float], Awaitable[None]],
        *,
        emit: Callable[[StageKey, Outcome[Any], str | None], Awaitable[None]],
        note: Callable[[], None],
    ) -> None:
        self.context = context
        self.options = context.options
        self.max_retries = context.request.max_retries
        self.wire = wire
        self.api_key = api_key
        self.policy = policy
        self.wait = wait
        self.emit = emit
        self.note = note
        """Shows every batch's state on the progress bar."""
        self.reading = asyncio.Lock()
        """Held while one ended batch's members are resolved (`resolve`): one batch's files
        are read at a time. Their lines go to one consumer either way (`GroupRun.emit`
        waits for it), so reading the files of every batch that ended at once bought
        nothing but a download paused on each, its socket's reads buffered meanwhile: half
        a MiB a batch, 20 batches at a million prompts (`benchmarks/million.py`)."""

    # -- polling ----------------------------------------------------------------------------

    async def follow(self, job: BatchJob) -> Json | None:
        """Poll the job's batch until it ends; None (its items failed) if polls fail."""
        batch_id = job.batch_id
        assert batch_id is not None

        async def check() -> Success[Json | None] | Failure:
            got = await self.wire.retrieve(batch_id)
            if isinstance(got, Failure):
                return got
            self.observe(job, got.value)
            return Success(got.value if job.status in TERMINAL else None)

        wait = self.options.max_wait_secs
        until = None if wait is None else time.monotonic() + wait
        outcome: Success[Json | None] | Failure | None = None
        if job.status == "resumed":  # an earlier run's batch may have ended long ago
            outcome = await check()
        if not isinstance(outcome, Success) or outcome.value is None:
            outcome = await poll_until(
                check,
                interval=self.options.poll_interval_secs,
                max_polls=None,
                policy=self.policy,
                wait=self.wait,
                what=f"batch {batch_id}",
                until=until,
            )
        if not isinstance(outcome, Success) or outcome.value is None:
            failure = outcome if isinstance(outcome, Failure) else None
            if failure is not None and failure.status == 404:  # no such batch: nothing to await
                await self.fail(job, failure)
                return None
            await self.fail(
                job,
                Failure(
                    f"{failure.message if failure else f'polled for max_wait_secs ({wait}s)'}; "
                    f"batch {batch_id} "
                    "may still be running: rerun with the same journal to collect it",
                    failure.error_type if failure else "poll_timeout",
                    retriable=True,
                    status=failure.status if failure else None,
                ),
                pending=True,
            )
            return None
        return outcome.value

    def observe(self, job: BatchJob, batch: Json) -> None:
        """The batch's state and `request_counts` as last seen: on the job, the log and the
        progress bar."""
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
            batch_api_status(job.status)
            log_event(
                self.context.logger,
                logging.INFO,
                "batch_api_status",
                batch=job.batch_id,
                status=job.status,
                completed=counts.get("completed", 0),
                failed=counts.get("failed", 0),
                total=counts.get("total", 0),
            )
        self.note()

    # -- joining the answers back -----------------------------------------------------------

    async def resolve(self, job: BatchJob, batch: Json) -> tuple[Resend, bool]:
        """Every member's result from the ended batch, or its place in a follow-up: the
        members to send again, and whether the batch failed on the API's enqueued-token
        limit (their follow-up then waits for another batch to end)."""
        async with self.reading:
            return await self._resolve(job, batch)

    async def _resolve(self, job: BatchJob, batch: Json) -> tuple[Resend, bool]:
        status = str(batch.get("status"))
        retry = Resend()
        errors = _validation_errors(batch)
        if status == "failed" and errors:
            await self._invalid(job, errors, retry)
        else:
            unread: Failure | None = None
            for key in ("output_file_id", "error_file_id"):
                file_id = batch.get(key)
                if isinstance(file_id, str) and file_id:
                    odd = _Oddities()

                    async def each(raw: bytes, odd: _Oddities = odd) -> None:
                        await self._line(job, raw, retry, odd)

                    got = await self.wire.lines(file_id, each, odd.reset)
                    if isinstance(got, Failure):
                        unread = got
                    self._odd_lines(job, file_id, odd)
            if unread is not None:
                failure = Failure(
                    f"batch {job.batch_id} ended {status} but its results could not be read: "
                    f"{unread.message}; rerun with the same journal to read them",
                    unread.error_type,
                    retriable=True,
                    status=unread.status,
                )
                await self.fail(job, failure, pending=unread.status != 404)  # 404: gone
            else:
                never = self._never_ran(job, status, errors)
                for line in job.owing():  # no line in either file
                    await self._settle(job, line.key, line.line_id, never, retry, line.digest)
        log_event(
            self.context.logger,
            logging.INFO,
            "batch_api_ended",
            batch=job.batch_id,
            status=status,
            retried=len(retry.keys),
        )
        if retry.keys:
            log_event(
                self.context.logger,
                logging.WARNING,
                "batch_api_resend",
                batch=job.batch_id,
                status=status,
                count=len(retry.keys),
                reasons=orjson.dumps(retry.described()).decode(),
            )
        return retry, _token_limited(errors)

    async def _line(self, job: BatchJob, raw: bytes, retry: Resend, odd: _Oddities) -> None:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            odd.unreadable += 1
            return
        line_id = line.get("custom_id")
        key = key_of(line_id) if isinstance(line_id, str) else None
        if key is None or not isinstance(line_id, str):
            odd.foreign += 1
            odd.example = odd.example or repr(line_id)[:SHOWN_ID_CHARS]
            return
        if key not in job.owed:
            return  # seen already (a download restarted), or an item not rerun since
        await self._settle(job, key, line_id, judge(line, self.api_key), retry, None)

    def _odd_lines(self, job: BatchJob, file_id: str, odd: _Oddities) -> None:
        """Say what in a file answered no item: ignored, but never silently."""
        logger = self.context.logger
        if odd.unreadable:
            log_event(
                logger,
                logging.WARNING,
                "batch_api_unreadable_lines",
                batch=job.batch_id,
                file=file_id,
                count=odd.unreadable,
                action='"ignored: the items they answered, if any, go to a follow-up batch"',
            )
        if odd.foreign:
            log_event(
                logger,
                logging.WARNING,
                "batch_api_foreign_lines",
                batch=job.batch_id,
                file=file_id,
                count=odd.foreign,
                first=orjson.dumps(odd.example).decode(),
                action='"ignored: custom_ids this run did not write"',
            )

    async def _settle(
        self,
        job: BatchJob,
        key: StageKey,
        line_id: str,
        outcome: Success[Any] | Failure,
        retry: Resend,
        digest: str | None,
    ) -> None:
        """A line's outcome: emitted, or the line handed back (`retry`). `digest`: the
        spool's, for `GroupRun.emit` (None for a line of the output or error file: its
        batch exists, so its file is journaled)."""
        attempt = job.attempt_of(key)
        job.owed.discard(key)
        if isinstance(outcome, Success):
            await self.emit(
                key,
                self.context.succeeded(
                    outcome.value,
                    attempts=attempt + 1,
                    batch_id=str(job.batch_id),
                    line=line_id,
                ),
                digest,
            )
        elif outcome.retriable and (
            attempt < self.max_retries or outcome.code == "batch_cancelled"
        ):  # a line its cancelled batch never ran cost nothing: sending it is no retry
            retry.add(key, outcome)
        else:
            await self.emit(
                key,
                self.context.errored(
                    outcome,
                    attempts=attempt + 1,
                    batch_id=job.batch_id,
                    line=line_id,
                ),
                digest,
            )

    def _never_ran(self, job: BatchJob, status: str, errors: list[Json]) -> Failure:
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

    async def _invalid(self, job: BatchJob, errors: list[Json], retry: Resend) -> None:
        """A batch that failed validation: each member failed with its line's message."""
        batch_id = job.batch_id
        named = {e["line"]: e for e in errors if isinstance(e.get("line"), int)}
        whole = [e for e in errors if not isinstance(e.get("line"), int)]
        by_line_id = await self._line_errors(job, named) if named else {}
        for line in job.owing():
            error = by_line_id.get(line.line_id)
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
            await self._settle(job, line.key, line.line_id, failure, retry, line.digest)

    async def _line_errors(self, job: BatchJob, named: dict[int, Json]) -> dict[str, Json]:
        """The errors of `named` (by 1-based line number) keyed by the custom_id of that line."""
        found: dict[str, Json] = {}
        number = 0

        def numbered(raw: bytes) -> None:
            nonlocal number
            number += 1
            error = named.get(number)
            if error is not None:
                found[custom_id_of(raw)] = error

        if job.uploaded_here:
            for line in job.spool.read():
                numbered(line.raw)
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

    async def fail(self, job: BatchJob, failure: Failure, *, pending: bool = False) -> None:
        """End every member with `failure`. `pending`: the batch may still answer them, so a
        rerun with the journal polls it rather than sending them again."""
        for line in job.owing():
            attempt = job.attempt_of(line.key)
            job.owed.discard(line.key)
            await self.emit(
                line.key,
                self.context.errored(
                    failure,
                    attempts=attempt + (job.batch_id is not None),
                    batch_id=job.batch_id,
                    line=line.line_id,
                    pending=pending,
                ),
                line.digest,
            )


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
