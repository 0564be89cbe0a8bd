"""The pipeline's extraction stage, whichever API runs it: one small interface.

`PipelineAdapter` converts each document (its OCR stage), then hands the finished
conversion to an `ExtractionStage`: the OpenAI one (`path.ResponsesExtraction`: the OCR
text to `POST /responses`, per page with `per_page`) or Datalab's
(`datalab_stage.DatalabStage`: one `/extract` per schema from the conversion's checkpoint).
The stage answers `Extracted`, which holds every figure the row and the summary read, so
the adapter renders both kinds without asking which ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..documents.job import Finished
from ..engine import BatchRun, Failure, ItemRun, Outcome, Submission
from ..engine.stages import StageKey

T = TypeVar("T")


@dataclass(slots=True)
class Stage(Generic[T]):
    """One request of a document (its OCR, or an extraction): its outcome as the adapter
    gave it, how long it took this run, and whether the journal answered it."""

    outcome: Outcome[T]
    seconds: float
    reused: bool = False


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

    async def extract(self, run: ItemRun, ocr: Finished, reconvert: Reconvert) -> Extracted:
        """The extraction of one converted document (`run` is the document's)."""
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
