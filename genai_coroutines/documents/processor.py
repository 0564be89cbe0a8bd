"""`DocumentProcessor`: many documents through Datalab at once, results as they finish.

The batch itself (session, concurrency, journal, progress, summary, batch stop,
logging, cancellation) is the engine's driver; the job state machine is `job.DocumentJob`.
This module holds what a caller configures: the entry points, and the key's limits
(submission rate and pages in flight), which every batch on the key shares.

`stream()` yields each document's result dict, carrying its `index`, the moment it
ends; `process_multiparts()` (the Rust library's entry point) and `process()` collect that
stream back into input order. A per-item failure is a result with `success=False`,
never an exception: the batch always finishes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping, Sequence
from contextlib import aclosing
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..engine import (
    USER_AGENT,
    BatchOptions,
    ClientOptions,
    Driver,
    Result,
    Submission,
    collect_in_order,
    count,
)
from ..engine.budget import SharedBudget, budget_needs
from ..engine.clients import UsesClients
from ..engine.summary import Summary
from ..engine.sync import run_sync
from .config import DocumentConfig
from .estimate import estimate
from .path import DocumentsAdapter, check_inputs, documents_path, pages_budget
from .prices import DatalabPrices
from .sources import DocumentInput

if TYPE_CHECKING:
    from typing_extensions import Unpack

Inputs = Iterable[DocumentInput] | AsyncIterable[DocumentInput]


def datalab_headers(config: DocumentConfig) -> dict[str, str]:
    """The headers of every request to Datalab with this config: its key and our agent."""
    return {"X-Api-Key": config.api_key or "", "User-Agent": USER_AGENT}


class DocumentProcessor(UsesClients):
    """Runs batches of documents through the Datalab API with one `DocumentConfig`."""

    last_summary: Summary | None = None
    """Totals of the latest `stream()`: counts, retries, 429s, pages and Datalab cents."""

    def __init__(
        self,
        config: DocumentConfig,
        **clients: Unpack[ClientOptions],
    ) -> None:
        """`limits_store` (a `redis://` URL whose limits, submission rate and pages in
        flight, every process using it shares), `limits` (a `KeyLimits` instead) and
        `connector` (a factory of the aiohttp connector each batch's session sends
        through): see `engine.ClientOptions`."""
        if not isinstance(config, DocumentConfig):
            raise TypeError(f"config must be a DocumentConfig, got {type(config).__name__}")
        self.config = config
        super().__init__(**clients)

    def __repr__(self) -> str:
        return f"DocumentProcessor({self.config!r})"

    async def process_multiparts(self, multiparts: Sequence[bytes], **options: Any) -> list[Result]:
        """The Rust library's entry point: one result per document's bytes, in input order.

        Options are `stream()`'s (`journal`, `progress`, `summary`)."""
        if isinstance(multiparts, bytes | bytearray | str) or not isinstance(multiparts, Sequence):
            raise TypeError(f"multiparts must be a list of bytes, got {type(multiparts).__name__}")
        for index, item in enumerate(multiparts):
            if not isinstance(item, bytes | bytearray | memoryview):
                raise TypeError(f"multiparts[{index}] is not bytes (got {type(item).__name__})")
            if not item:
                raise ValueError(f"multiparts[{index}] is empty")
        return await collect_in_order(self.stream(multiparts, **options), itemgetter("index"))

    def process_multiparts_sync(self, multiparts: Sequence[bytes], **options: Any) -> list[Result]:
        """`process_multiparts` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process_multiparts(multiparts, **options))

    async def process(self, inputs: Inputs, **options: Any) -> list[Result]:
        """Like `process_multiparts`, for bytes, paths, open binary files and http(s) URLs.

        Files are read only when their turn comes, so a batch of 10,000 paths holds at
        most `max_concurrent_requests` documents in memory. With `checkpoint_id` set the
        document is the checkpoint: each input is None (`[None]` for one extraction).
        """
        check_inputs(inputs, self.config)
        return await collect_in_order(self.stream(inputs, **options), itemgetter("index"))

    async def estimate(
        self, inputs: Iterable[DocumentInput], config: DocumentConfig | None = None
    ) -> dict[str, Any]:
        """What `inputs` would cost under `config` (default: this processor's) and take,
        sending nothing (see `documents.estimate`): each document is read and its pages
        counted locally (pypdf), priced at Datalab's list cents per page of each endpoint,
        and timed at the config's `requests_per_minute`."""
        config = self.config if config is None else config
        if not isinstance(config, DocumentConfig):
            raise TypeError(f"config must be a DocumentConfig, not {type(config).__name__}")
        if isinstance(inputs, AsyncIterable) or not isinstance(inputs, Iterable):
            raise TypeError("inputs must be a list (or an iterable) of documents")
        check_inputs(inputs, config)
        return await estimate(inputs, config)

    def process_sync(self, inputs: Inputs, **options: Any) -> list[Result]:
        """`process` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process(inputs, **options))

    async def stream(
        self,
        inputs: Inputs,
        *,
        resume: Mapping[int, Submission] | None = None,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: Summary | None = None,
        dedupe: bool = False,
        max_cost_cents: float | None = None,
        cents_per_page: float | None = None,
        budget_name: str | None = None,
    ) -> AsyncGenerator[Result, None]:
        """Yield each document's result as it finishes.

        `resume` maps an input index to a job submitted earlier, which is polled instead
        of uploaded again. `journal` names a file recording every submitted job and
        finished result as it happens: run the same batch with it again and successful
        documents come back from it (`"from_journal": True`), jobs still on Datalab are
        polled rather than uploaded, and only the rest is sent. `progress` shows a bar;
        `summary` (also kept as `last_summary`) totals pages, cents and retries.

        `dedupe`: identical documents (same bytes or URL, same settings) are converted
        once and each gets the result, with `duplicate_of` naming the index sent.
        `max_cost_cents`: before each upload, the cents spent plus those in flight plus
        this document's (its pages times `cents_per_page`, default Datalab's list price
        for the `mode`, `documents.prices.DATALAB_CENTS_PER_PAGE`) must stay within it; once
        they would not, nothing more is uploaded and the rest end `budget_exceeded`. Each
        result's real `cost_breakdown` settles what it cost. `budget_name`: one budget for
        every batch given this name and `max_cost_cents`, in this process or, with a shared
        `limits_store`, in every process using it (`engine.budget`).
        """
        config = self.config
        budget_needs(max_cost_cents, budget_name, "max_cost_cents")
        await self.clients.ready()  # an unreachable shared store fails here, nothing sent
        adapter = self.adapter()
        budget = (
            None if max_cost_cents is None else pages_budget(config, max_cost_cents, cents_per_page)
        )
        if budget is not None and budget_name is not None:
            budget.shared = SharedBudget(self.limits.store, budget_name, "cents")
        driver = Driver(
            adapter,
            inputs,
            BatchOptions(
                concurrency=config.max_concurrent_requests,
                max_waiting=config.max_waiting,
                headers=datalab_headers(config),
                sessions=self.clients.session,
                journal=journal,
                progress=progress,
                summary=summary or Summary(pricing=(DatalabPrices(),)),
                resume=resume,
                dedupe=dedupe,
                budget=budget,
                start_fields={
                    "files": count(inputs, "?"),
                    "concurrency": config.max_concurrent_requests,
                },
            ),
        )
        self.last_summary = driver.summary
        # `aclosing`: a consumer closing this stream mid-batch (`aclose()`) ends the batch
        # now, its journal released, not when the GC finalizes the driver's generator.
        async with aclosing(driver.stream()) as results:
            async for result in results:
                yield result

    def adapter(self) -> DocumentsAdapter:
        """The engine `Adapter` of this config on the key's limits (what `stream` runs; the
        pipeline composes it with a Responses one)."""
        return documents_path(self.config, self.limits, self.on_submitted)

    def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
        """Called once Datalab accepts an upload, before the first poll; does nothing here.

        The journal already records every accepted job; override this to see them too.
        It runs on the event loop, so keep it quick; an exception raised here ends the
        batch.
        """
