"""What every part of one Batch API run reads: the request, the options, the key's limits,
and how a line's outcome becomes the item's outcome, and that its result dict.

The files, submissions and answers (`jobs`, `submitter`, `answers`) take this, not the
adapter (`path.BatchAPIAdapter`), which runs them: so they depend on it and never it on them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sized
from dataclasses import replace
from typing import Any

from ...engine import Failed, Failure, Ids, ItemEnd, KeyLimits, Outcome, Pending, Result
from ...engine.cutoff import Cutoff
from ..direct import DirectAdapter, Prepared
from ..request import ResponsesRequest
from ..results import Answer, answered, logger, rendered, revived
from .options import BatchAPI


class BatchContext:
    """One Batch API run's settings and result rendering (see the module docstring)."""

    logger: logging.Logger = logger

    def __init__(
        self,
        request: ResponsesRequest,
        options: BatchAPI,
        direct: DirectAdapter,
        limits: KeyLimits,
        cutoff: Cutoff | None = None,
    ) -> None:
        self.request = request
        self.options = options
        self.direct = direct
        """The synchronous path: its request bodies, admission and translations."""
        self.limits = limits
        """The key's limits: the batches created per hour are counted there."""
        self.model = request.model
        self.cutoff = cutoff
        """The run's deadline: the batches give way to the synchronous path in time for it
        (`fallback`)."""
        prompts = request.user_prompts
        self.expected = len(prompts) if isinstance(prompts, Sized) else None
        """The items of the run, when the input says (a list): those not read yet count
        in what the synchronous path would need."""

    def input_tokens(self, prepared: Prepared) -> int:
        """Estimated input tokens (what the API's enqueued-token limit counts)."""
        return max(1, prepared.estimate - self.direct.template.max_output)

    def render(self, end: ItemEnd[Answer]) -> Result:
        """The result dict of an item: the synchronous path's, with its `batch_id` and
        `custom_id` (None for an item that never reached a batch file), and
        `batch_pending` when its batch may still answer it."""
        result = rendered(end, self.model)
        outcome = end.outcome
        ids = outcome.ids
        result["batch_id"] = None if ids is None else ids.group
        result["custom_id"] = None if ids is None else ids.line
        if isinstance(outcome, Pending):
            result["batch_pending"] = True
        return result

    def revive(self, record: Mapping[str, Any]) -> Outcome[Answer]:
        outcome = revived(record, self.model)
        batch_id, line = record.get("batch_id"), record.get("custom_id")
        if not isinstance(batch_id, str) or not isinstance(line, str):
            return outcome
        # Made here for this record alone: given its ids before anyone sees it (a
        # `dataclasses.replace` would copy it, on every Batch API answer a rerun replays).
        outcome.ids = Ids(group=batch_id, line=line)
        return outcome

    def succeeded(
        self,
        answer: Answer,
        *,
        attempts: int,
        batch_id: str,
        line: str,
    ) -> Outcome[Answer]:
        answer = replace(answer, service_tier="batch")  # what the summary prices at half
        return answered(answer, self.model, attempts, 0, Ids(group=batch_id, line=line))

    def errored(
        self,
        failure: Failure,
        *,
        attempts: int,
        batch_id: str | None,
        line: str,
        pending: bool = False,
    ) -> Outcome[Answer]:
        """An item that ended without its answer; `pending`: its batch may still answer it,
        so a rerun with the journal polls it rather than sending it again."""
        ids = Ids(group=batch_id, line=line)
        if pending:
            return Pending(failure, attempts, ids=ids)
        return Failed(failure, attempts, ids=ids)
