"""`ResponsesProcessor`: a batch of prompts through `POST /responses`, nothing lost.

The batch itself (session, concurrency, journal, progress, summary, batch stop,
logging, cancellation) is the engine's driver; this module only chooses the execution
path and the key's limits. Limits belong to the key and model, not to the batch:
every batch on one key, from any processor in this process (or, given a shared
store, any process), draws on one rate limiter, learned once.

`stream()` yields each item's result as it finishes (with its `index`);
`process_batch()` collects the same results in input order into the Rust library's
`{"total_success", "total_errors", "results"}`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ..engine import (
    USER_AGENT,
    Adapter,
    BatchOptions,
    ClientOptions,
    Driver,
    Result,
    collect_in_order,
    count,
    log_event,
)
from ..engine.budget import SharedBudget, budget_needs
from ..engine.cutoff import Cutoff
from ..engine.journal import Unfinished, unfinished
from ..engine.summary import Summary
from ..engine.sync import run_sync
from .background import BackgroundAdapter
from .batch import BatchAPI, BatchAPIAdapter, CollectingAdapter, check_rerun
from .clients import ResponsesClients
from .direct import DirectAdapter, budget_for, key_limiter
from .estimate import estimate
from .prices import PricesArg, TokenPrices, table_of, tier_share, warn_unpriced
from .request import ResponsesRequest
from .results import logger

if TYPE_CHECKING:
    from typing_extensions import Unpack


def request_headers(request: ResponsesRequest) -> dict[str, str]:
    """Bearer auth and JSON, overridden (case-insensitively) by `extra_headers`."""
    extra = dict(request.extra_headers or {})
    ours = {
        "Authorization": f"Bearer {request.api_key}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    overridden = {name.lower() for name in extra}
    return {**{k: v for k, v in ours.items() if k.lower() not in overridden}, **extra}


class ResponsesProcessor(ResponsesClients):
    """Runs `ResponsesRequest` batches; reuse one freely (it only remembers `last_summary`)."""

    last_summary: Summary | None = None
    """Totals of the latest `stream()`: counts, retries, 429s, tokens and estimated cost."""

    def __init__(self, *, prices: PricesArg = None, **clients: Unpack[ClientOptions]) -> None:
        """`prices`: the price table its summaries and budgets use (a dict in the price
        file's shape, or a JSON file's path; default the built-in `prices.json`); a
        `summary=` given to a batch keeps its own. `limits_store` (a `redis://` URL whose
        limits every process using it shares), `limits` (a `KeyLimits` instead) and
        `connector` (a factory of the aiohttp connector each batch's session sends
        through): see `engine.ClientOptions`."""
        super().__init__(prices, **clients)

    async def process_batch(
        self,
        request: ResponsesRequest,
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: Summary | None = None,
        dedupe: bool = False,
        max_cost_usd: float | None = None,
        budget_name: str | None = None,
        batch_api: bool | BatchAPI = False,
        deadline: float | datetime | None = None,
    ) -> dict[str, Any]:
        """Every prompt's result in input order: `{"total_success", "total_errors", "results"}`.

        Never raises for per-item failures; they are result dicts with `success: False`.
        The options are `stream()`'s.
        """
        results = await collect_in_order(
            self.stream(
                request,
                journal=journal,
                progress=progress,
                summary=summary,
                dedupe=dedupe,
                max_cost_usd=max_cost_usd,
                budget_name=budget_name,
                batch_api=batch_api,
                deadline=deadline,
            ),
            itemgetter("index"),
        )
        ok = sum(1 for result in results if result["success"])
        return {"total_success": ok, "total_errors": len(results) - ok, "results": results}

    async def estimate(self, request: ResponsesRequest) -> dict[str, Any]:
        """What `request` would cost and take on each path, sending nothing (see
        `responses.estimate`): its prompts are read (a list, or an iterable read once), and
        the key's limits are the request's `requests_per_minute`/`tokens_per_minute`, else
        those learned earlier in this processor's limits store (none known: no minutes)."""
        if not isinstance(request, ResponsesRequest):
            raise TypeError(f"request must be a ResponsesRequest, not {type(request).__name__}")
        await self.clients.ready()
        limiter = key_limiter(request, self.limits)
        known = await limiter.store.limits(limiter.key)
        limits = {
            "requests_per_minute": request.requests_per_minute or known.get("requests"),
            "tokens_per_minute": request.tokens_per_minute or known.get("tokens"),
        }
        return estimate(request, self.prices, limits)

    def process_batch_sync(self, request: ResponsesRequest, **options: Any) -> dict[str, Any]:
        """`process_batch` for plain scripts and notebooks (see `run_sync`)."""
        return run_sync(self.process_batch(request, **options))

    async def stream(
        self,
        request: ResponsesRequest,
        *,
        journal: str | os.PathLike[str] | None = None,
        progress: bool = False,
        summary: Summary | None = None,
        dedupe: bool = False,
        max_cost_usd: float | None = None,
        budget_name: str | None = None,
        batch_api: bool | BatchAPI = False,
        deadline: float | datetime | None = None,
    ) -> AsyncGenerator[Result, None]:
        """Each item's result dict (carrying its `index`) as soon as it finishes.

        `journal` names a file recording every result as it happens: run the same batch
        with it again and the items that succeeded come back from it (`"from_journal":
        True`) without being sent. `progress` shows a bar; `summary` (also kept as
        `last_summary`) totals counts, retries, 429s, tokens and an estimated cost.

        `dedupe`: prompts whose request bodies are identical are sent once, and each
        gets the answer (with `duplicate_of` naming the index that was sent); off by
        default, since sampling one prompt several times is sometimes the point.
        `max_cost_usd`: before each request, what was spent plus what is in flight plus
        this request (its input estimate and `max_output_tokens`, priced by the
        summary's table at the tier in force) must stay within it; once it would not,
        nothing more is sent and the rest end `budget_exceeded` (resume with a larger
        budget to continue them). `budget_name`: one budget for every batch given this name
        and `max_cost_usd`, in this process, or with a shared `limits_store` in every
        process using it: the spent total and what is in flight are kept there
        (`engine.budget`). With `request.background` each request runs in
        background mode (`background.py`): its response id is journaled as soon as
        OpenAI accepts it, and a rerun polls it instead of paying for it again.

        `batch_api` (True, or a `BatchAPI` of options): the same requests through the
        OpenAI Batch API at half the price, answered within its completion window
        (`responses.batch`); each result adds its `batch_id` and `custom_id`, and a rerun
        with the same journal collects the batches an interrupted run left running.

        `deadline`: seconds from this call, or a timezone-aware `datetime`, by which the
        batch must be done. Once it passes nothing more is sent: requests in flight finish
        (and background responses already started are polled to their end), and every
        item not sent ends `deadline_exceeded` with no attempt, journaled, so a rerun with
        the journal sends it. With `batch_api`, the batches give way to the synchronous
        path in time for it: unfinished ones are cancelled, what they answered is kept,
        and the rest is sent synchronously (`responses.batch.fallback`).
        """
        if not isinstance(request, ResponsesRequest):
            raise TypeError(f"request must be a ResponsesRequest, not {type(request).__name__}")
        cutoff = Cutoff.of(deadline)
        batch = BatchAPI.of(batch_api)
        if batch is not None and (request.background or request.stream):
            raise ValueError("background=True and stream=True cannot be used with batch_api")
        left = Unfinished()
        if journal is not None:  # what an earlier run left running
            left = unfinished(journal, DirectAdapter.kind)
            if batch is None:
                check_rerun(request, journal, left)
            if left.submissions and not request.background:
                log_event(
                    logger,
                    logging.WARNING,
                    "background_abandoned",
                    responses=left.submissions,
                    action='"responses an earlier run started in background mode are not '
                    "collected: their items are sent again (rerun with background=True to "
                    'collect them)"',
                )
        budget_needs(max_cost_usd, budget_name, "max_cost_usd")
        await self.clients.ready()  # an unreachable shared store fails here, nothing sent
        limiter = key_limiter(request, self.limits)
        summary = summary or Summary(pricing=(TokenPrices.of(self.prices, request.model),))
        prices = table_of(summary)
        budget = (
            None
            if max_cost_usd is None
            else budget_for(
                request,
                max_cost_usd,
                prices,
                share=None if batch is None else tier_share("batch", prices.tiers),
            )
        )
        if budget is not None and budget_name is not None:
            budget.shared = SharedBudget(self.limits.store, budget_name, "usd")
        path = BackgroundAdapter if request.background else DirectAdapter
        options = BatchOptions(
            concurrency=request.max_concurrent_requests,
            max_waiting=request.max_waiting,
            headers=request_headers(request),
            sessions=self.clients.session,
            journal=journal,
            progress=progress,
            summary=summary,
            dedupe=dedupe,
            budget=budget,
            cutoff=cutoff,
            start_fields={
                "model": request.model,
                "prompts": count(request.user_prompts, "lazy"),
                "concurrency": request.max_concurrent_requests,
                "stream": bool(request.stream),
                **({"background": True} if request.background else {}),
                **({"batch_api": True} if batch is not None else {}),
                **({"deadline": cutoff.text()} if cutoff is not None else {}),
            },
        )
        warn_unpriced(logger, request.model, prices)
        adapter: Adapter[Any]
        if batch is not None:
            direct = DirectAdapter(request, limiter, self.cache_keys)
            adapter = BatchAPIAdapter(request, batch, direct, self.limits, cutoff)
        elif left.jobs:  # an earlier batch_api run's batches answer some items: collect them
            direct = DirectAdapter(request, limiter, self.cache_keys)
            adapter = CollectingAdapter(direct, self.limits)
        else:
            adapter = path(request, limiter, self.cache_keys)
        driver = Driver(adapter, request.user_prompts, options)
        self.last_summary = driver.summary
        # `aclosing`: a consumer closing this stream mid-batch (`aclose()`) ends the batch
        # now, its journal released, not when the GC finalizes the driver's generator.
        async with aclosing(driver.stream()) as results:
            async for result in results:
                yield result
