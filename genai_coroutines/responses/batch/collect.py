"""A rerun without `batch_api` of a journal whose items wait on Batch API batches.

An interrupted run with `batch_api` and a journal leaves its batches running at OpenAI,
and they answer (and bill) every line they hold. A rerun of that journal on the
synchronous path must not buy those items a second time, so it collects them:
`CollectingAdapter` runs the items whose lines sit in a journaled batch as `BatchAPIAdapter`
would on resume (the Batch API stage: the batch polled every `poll_interval_secs` until it
ends, its files read: `jobs.BatchJobs`), and every other item synchronously, as asked,
`max_concurrent_requests` at a time. What the batch hands back (a 5xx line, a line that
never ran) is sent synchronously too, not in a new batch (`fallback.Resender`). The
pipeline's rerun without `batch_api` collects its extraction requests through the same stage
(`pipeline.path`).

A rerun with `stream` or `background` sends other request bodies, which the journal's
batches cannot answer item by item, so it is refused (`check_rerun`) before anything is
sent, naming the batches and how to collect them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import aiohttp

from ...engine import (
    Deferred,
    Failure,
    ItemEnd,
    ItemRun,
    KeyLimits,
    Line,
    Outcome,
    Result,
    log_event,
)
from ...engine.journal import Unfinished, request_digest
from ...engine.stages import StageKey
from ..direct import DirectAdapter, Prepared
from ..request import ResponsesRequest
from ..results import Answer, logger
from .context import BatchContext
from .jobs import BatchStage
from .options import BatchAPI

SHOWN_JOBS = 5


def check_rerun(
    request: ResponsesRequest, journal: str | os.PathLike[str], left: Unfinished
) -> None:
    """Refuse, before anything is sent, a rerun that would buy again the items an earlier
    run's batches still answer; log what a synchronous rerun will collect from them."""
    if not left.jobs:
        return
    named = ", ".join(left.jobs[:SHOWN_JOBS])
    if len(left.jobs) > SHOWN_JOBS:
        named += f" and {len(left.jobs) - SHOWN_JOBS} more"
    if request.stream or request.background:
        mode = "stream=True" if request.stream else "background=True"
        raise ValueError(
            f"journal {journal} has items waiting on Batch API batches ({named}), which "
            f"answer and bill them: sending them again with {mode} would pay twice; rerun "
            "with batch_api=True (or without stream and background) to collect them"
        )
    log_event(
        logger,
        logging.WARNING,
        "batch_api_collect",
        batches=",".join(left.jobs[:SHOWN_JOBS]),
        count=len(left.jobs),
        poll_interval=f"{request.poll_interval_secs}s",
        action='"the items waiting on these batches (journaled by a batch_api run) are '
        'collected from them, not sent again; the rest are sent synchronously"',
    )


class CollectingAdapter:
    """The `engine.Adapter` of a synchronous rerun that collects batches: an item whose line
    a journaled batch holds waits on it (the Batch API stage, without a slot), any other
    is sent synchronously."""

    kind = DirectAdapter.kind
    unit = "prompt"
    logger: logging.Logger = logger

    def __init__(
        self,
        direct: DirectAdapter,
        limits: KeyLimits,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`session`: the one the stage's calls go through, when not the batch's (see
        `BatchStage`)."""
        request = direct.request
        self.direct = direct
        self.collector = BatchContext(
            request, BatchAPI(poll_interval_secs=request.poll_interval_secs), direct, limits
        )
        self.stage = BatchStage(self.collector, resend=True, session=session)
        """The Batch API stage that collects (and sends synchronously what its batches hand
        back); also the pipeline's, on a rerun without `batch_api` (`pipeline.path`)."""
        self.telemetry_identity = direct.telemetry_identity

    async def prepare(self, index: int, prompt: Any) -> Prepared | Failure:
        return await self.direct.prepare(index, prompt)

    def digest(self, prepared: Prepared) -> tuple[bytes, ...]:
        return self.direct.digest(prepared)

    def input_digest(self, prompt: Any) -> bytes | None:
        return self.direct.input_digest(prompt)

    def render(self, end: ItemEnd[Answer]) -> Result:
        """A journaled batch's answer as the Batch API path renders it (with its `batch_id`
        and `custom_id`); an item sent now as the synchronous path does."""
        if end.outcome.ids is not None:
            return self.collector.render(end)
        return self.direct.render(end)

    def revive(self, record: Mapping[str, Any]) -> Outcome[Answer]:
        return self.collector.revive(record)

    async def execute(self, run: ItemRun, prepared: Prepared) -> Outcome[Answer] | Deferred:
        """Its batch's answer, if a journaled batch holds its line; else sent now."""
        key, journal = StageKey(run.index), run.batch.journal
        if journal is not None:
            known = journal.group_line(key, request_digest(*self.direct.digest(prepared)))
            if known is not None and known.job_id is not None:
                return Deferred(self.stage, [Line(key, prepared)])
        return await self.direct.execute(run, prepared)
