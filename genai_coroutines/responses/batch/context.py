"""What every part of one Batch API run reads: the request, the options, the key's limits,
and how a line's outcome becomes the item's result dict.

The files, submissions and answers (`jobs`, `submitter`, `answers`) take this, not the
adapter (`path.BatchAPIPath`), which runs them: so they depend on it and never it on them.
"""

from __future__ import annotations

import logging

from ...engine import Failure, KeyLimits, Result
from ..direct import DirectPath, Prepared
from ..request import ResponsesRequest
from ..results import Answer, error_result, logger, success_result
from .options import BatchAPI


def with_batch(result: Result, batch_id: str | None, line_id: str | None) -> Result:
    result["batch_id"] = batch_id
    result["custom_id"] = line_id
    return result


class BatchContext:
    """One Batch API run's settings and result rendering (see the module docstring)."""

    logger: logging.Logger = logger

    def __init__(
        self, request: ResponsesRequest, options: BatchAPI, direct: DirectPath, limits: KeyLimits
    ) -> None:
        self.request = request
        self.options = options
        self.direct = direct
        """The synchronous path: its request bodies, admission and translations."""
        self.limits = limits
        """The key's limits: the batches created per hour are counted there."""
        self.model = request.model

    def input_tokens(self, prepared: Prepared) -> int:
        """Estimated input tokens (what the API's enqueued-token limit counts)."""
        return max(1, prepared.estimate - self.direct.template.max_output)

    def failed(self, index: int, failure: Failure, started: float) -> Result:
        """An item that never reached a batch file."""
        return with_batch(self.direct.failed(index, failure, started), None, None)

    def succeeded(
        self,
        index: int,
        outcome: Answer,
        *,
        attempts: int,
        started: float,
        batch_id: str,
        line: str,
    ) -> Result:
        result = success_result(
            index, outcome, model=self.model, attempts=attempts, rate_limited=0, started=started
        )
        result["service_tier"] = "batch"  # what the summary prices at half
        return with_batch(result, batch_id, line)

    def errored(
        self,
        index: int,
        failure: Failure,
        *,
        attempts: int,
        started: float,
        batch_id: str | None,
        line: str,
    ) -> Result:
        result = error_result(index, failure, model=self.model, attempts=attempts, started=started)
        return with_batch(result, batch_id, line)
