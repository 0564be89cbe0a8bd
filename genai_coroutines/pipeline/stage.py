"""The pipeline's extraction stage, whichever API runs it: one small interface.

`PipelineAdapter` converts each document (its OCR stage), then hands the finished
conversion to an `ExtractionStage`: the OpenAI one (`responses_stage.ResponsesExtraction`:
the OCR text to `POST /responses`, per page with `per_page`, or as Batch API lines) or
Datalab's (`datalab_stage.DatalabStage`: one `/extract` per schema from the conversion's
checkpoint). The stage answers `Extracted`, which holds every figure the row and the
summary read, so the adapter renders both kinds without asking which ran; or `Waiting`,
its requests as lines of a grouped stage (the Batch API) and what makes its `Extracted`
of their outcomes, which the adapter hands the driver as an `engine.Deferred`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..documents.job import Finished
from ..documents.sources import Upload
from ..engine import BatchRun, Failed, Failure, GroupedStage, ItemRun, Line, Outcome, Submission
from ..engine.stages import StageKey
from ..responses.direct import Prepared
from .budget import StageBudget
from .slots import StageRun, StageSlot

T = TypeVar("T")


@dataclass(slots=True)
class Stage(Generic[T]):
    """One request of a document (its OCR, or an extraction): its outcome as the adapter
    gave it, how long it took this run, and whether the journal answered it."""

    outcome: Outcome[T]
    seconds: float
    reused: bool = False
    duplicate_of: int | None = None
    """With `dedupe`: the document whose identical request answered this one (it cost
    nothing here; see `shared`)."""


@dataclass(slots=True)
class Extracted:
    """What one document's extraction came to (the row's `fields`, `usage`, `extraction`)."""

    stages: list[Stage[Any]] = field(default_factory=list)
    fields: dict[str, Any] | None = None
    """The row's `fields` (None when the extraction failed)."""
    failure: Failure | None = None
    usage: dict[str, Any] | None = None
    """Tokens, in the Responses `usage` shape, summed over the requests (None: no tokens)."""
    service_tier: str | None = None
    response_ids: list[str] = field(default_factory=list)
    cents: dict[str, float] = field(default_factory=dict)
    """Datalab cents per stage name ("ocr" for a conversion done again, "extract:<schema>")."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Keys the stage adds to the row's `extraction` object."""
    ocr: Stage[Finished] | None = None
    """The document's conversion done again (its checkpoint was gone): the row's OCR now."""
    batch: tuple[str | None, str | None] | None = None
    """On the Batch API: the row's `batch_id` and `custom_id` (None: not on it)."""
    pending: bool = False
    """`failure` is a line's whose batch may still answer it (could not be polled or read
    this run): the row ends `Pending`, and a rerun with the journal collects that batch."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """An extraction whose requests are lines of a grouped stage (the Batch API): `then`
    makes its `Extracted` of their outcomes, in the lines' order."""

    stage: GroupedStage
    lines: Sequence[Line]
    then: Callable[[list[Outcome[Any]]], Extracted]


Reconvert = Callable[[], Awaitable[Stage[Finished]]]
"""Converts the document once more, past the journal (a lost checkpoint), journaling it."""


class ExtractionStage(Protocol):
    """What the pipeline's second stage supplies."""

    model: str | None
    """The row's `model` (None: no model, Datalab's extraction)."""
    identity: bytes
    """What besides the document and the OCR settings decides a row (its journal digest)."""
    slots: int
    """Its requests in flight at most (the driver runs the OCR's plus these)."""

    async def extract(
        self, run: ItemRun, ocr: Finished, reconvert: Reconvert
    ) -> Extracted | Waiting:
        """The extraction of one converted document (`run` is the document's), or its
        requests waiting on a grouped stage."""
        ...


class Sessions:
    """Each stage's session (its API's key) on the batch's shared state, made once per
    batch and stage."""

    def __init__(self, sessions: dict[str, Any]) -> None:
        self.sessions = sessions
        self._batches: dict[str, tuple[BatchRun, BatchRun]] = {}

    def batch(self, run: ItemRun, stage: str) -> BatchRun:
        cached = self._batches.get(stage)
        if cached is None or cached[0] is not run.batch:
            session = self.sessions.get(stage) or run.batch.session
            cached = (run.batch, dataclasses.replace(run.batch, session=session))
            self._batches[stage] = cached
        return cached[1]

    def stage_run(
        self,
        run: ItemRun,
        stage: str,
        key: StageKey,
        digest: str,
        started: float,
        known: tuple[str, str] | None,
        slot: StageSlot,
    ) -> StageRun:
        """One stage request of `run`'s item, on `stage`'s session and holding `slot`: it
        polls `known` (a submission the journal holds) instead of sending, and journals
        what the API accepts under `key`."""
        return StageRun(
            run.index,
            self.batch(run, stage),
            started,
            None if known is None else Submission(*known),
            on_submitted=journal_submission(run, key, digest),
            trace=run.trace,
            slot=slot,
        )


def journal_submission(run: ItemRun, key: StageKey, digest: str) -> Callable[[Submission], bool]:
    """A stage's `ItemRun.on_submitted`: journal the work the API accepted under the stage's
    key, so a rerun polls it instead of buying it again."""

    def journal(submission: Submission) -> bool:
        return run.batch.journaled(
            lambda j: j.record_submission(
                key, digest, submission.request_id, submission.request_check_url
            )
        )

    return journal


async def within_budget(
    budget: StageBudget | None,
    request: Upload | Prepared,
    paid: bool,
    send: Callable[[], Awaitable[Outcome[T]]],
) -> Outcome[T]:
    """`send()` a stage request within the budget, if any: its estimate held before it is
    sent (`paid`: the API accepted it earlier, so it is polled whatever the budget), what it
    cost spent when it ends; unsent, `budget_exceeded`, once the budget could be passed."""
    if budget is None:
        return await send()
    estimate, cost = budget.weigh(request)
    held = await budget.hold(estimate, paid=paid)
    if isinstance(held, Failure):
        return Failed(held, 0)
    try:
        outcome = await send()
    except BaseException:
        budget.release(held)
        raise
    budget.spend(held, cost(outcome))
    return outcome
