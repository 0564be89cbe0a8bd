"""The OpenAI Batch API behind the same `ResponsesRequest`: half the price for work that can wait.

    results = await ResponsesProcessor().process_batch(request, batch_api=True)
    results = await ResponsesProcessor().process_batch(request, batch_api=BatchAPI(...))

The same prompts, the same result dicts in the same order as the synchronous path,
each adding the `batch_id` and `custom_id` that answered it; the requests are sent as
JSONL lines whose `body` is exactly what the synchronous path would `POST /responses`
(its `DirectAdapter.prepare`, every translation included). `BatchAPIAdapter` is the adapter:
it admits items as the synchronous path does (`prepare` and `digest` are
`DirectAdapter`'s, and its rendering adds `batch_id` and `custom_id`) and its `execute`
hands each one to the Batch API stage (`BatchStage`, a grouped stage: `engine.Deferred`),
whose group (`jobs.BatchJobs`) writes the files, submits, polls and joins the answers
while the item holds no driver slot.

A line is a success only with `response.status_code == 200` and a body that is a
finished response (`direct.answer`); anything else is a failure with its code, judged
by the synchronous path's rules (`answers.judge`). Retriable ones (a 5xx, a 429, a
line of an expired batch that never ran) go into a follow-up batch, up to
`max_retries` rounds; results say `attempts` (batches the item was sent in) and
`service_tier: "batch"`, which the summary prices at half.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ...engine import Deferred, Failure, ItemEnd, ItemRun, KeyLimits, Line, Outcome, Result
from ...engine.cutoff import Cutoff
from ...engine.stages import StageKey
from ..direct import DirectAdapter, Prepared
from ..request import ResponsesRequest
from ..results import Answer, logger
from .context import BatchContext
from .jobs import BatchStage
from .options import BatchAPI


class BatchAPIAdapter:
    """The `engine.Adapter` of the Batch API path (see the module docstring)."""

    kind = DirectAdapter.kind
    """The synchronous path's: the same request journals the same digest, so a result
    either path finished is reused by the other."""
    unit = "prompt"
    logger: logging.Logger = logger

    def __init__(
        self,
        request: ResponsesRequest,
        options: BatchAPI,
        direct: DirectAdapter,
        limits: KeyLimits,
        cutoff: Cutoff | None = None,
    ) -> None:
        """`cutoff`: the run's deadline, which the batches give way to the synchronous
        path in time for (`fallback`)."""
        if request.stream:
            raise ValueError("stream=True cannot be used with batch_api: a batch answers whole")
        self.context = BatchContext(request, options, direct, limits, cutoff)
        self.stage = BatchStage(self.context)
        self.telemetry_identity = direct.telemetry_identity

    async def prepare(self, index: int, prompt: Any) -> Prepared | Failure:
        return await self.context.direct.prepare(index, prompt)

    def digest(self, prepared: Prepared) -> tuple[bytes, ...]:
        return self.context.direct.digest(prepared)

    def input_digest(self, prompt: Any) -> bytes | None:
        return self.context.direct.input_digest(prompt)

    def render(self, end: ItemEnd[Answer]) -> Result:
        return self.context.render(end)

    def revive(self, record: Mapping[str, Any]) -> Outcome[Answer]:
        return self.context.revive(record)

    async def execute(self, run: ItemRun, prepared: Prepared) -> Deferred:
        return Deferred(self.stage, [Line(StageKey(run.index), prepared)])
