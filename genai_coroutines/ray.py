"""Ray Data stages: this library's processors as `Dataset.map_batches` callable classes.

    import ray
    from genai_coroutines import ResponsesRequest
    from genai_coroutines.ray import responses_stage

    request = ResponsesRequest(model="gpt-4o-mini", system_prompt="Be terse.",
                               user_prompts=["-"], response_format={"type": "text"})
    stage = responses_stage(request, limits_store="redis://10.0.0.5:6379/0")
    answered = ray.data.read_parquet("prompts.parquet").map_batches(
        stage, concurrency=4, batch_size=200, batch_format="pandas", num_cpus=0.25)

Each actor (one per `concurrency`) keeps one processor, one event loop and one HTTP
session, and runs each batch through them asynchronously: the request's
`max_concurrent_requests` in flight per actor, retries, 429 pauses and the key's limits
as in a single process. Batches arrive in any format (pass `batch_format="pandas"` to
skip a conversion) and leave as a pandas DataFrame: every input column kept, plus
`success`, `error`, `error_type`, `attempts` and, for responses, `response_text` (as
`parse_responses` gives it), `raw_response` (the API's JSON text) and `total_tokens`;
for documents, `content` (as `parse_documents` gives it) and `cost_cents`. Those names
replace input columns of the same name.

Limits. With `limits_store` (or `$GENAI_COROUTINES_LIMITS_STORE`, read where the stage is
made) every actor, on any node, shares the key's limits through that Redis: together they
send at the key's rate, and a 429 pauses all of them. Without one, each actor only knows
its own traffic: explicitly given limits (`requests_per_minute`, `tokens_per_minute`, and
for documents `max_pages_in_flight`) are divided by `concurrency` (pass the same number
as to `map_batches`), and limits learned from response headers cannot be divided (each
actor learns the whole key's limit), which is why a store is better.

Sessions. Each actor opens one HTTP session (one pool of keep-alive connections) the
first time it sends, and keeps it, with its processor, for its lifetime: a Ray batch
reuses the connections of the batches before it.

Journal. With `journal_dir` (a folder every actor can write: a shared filesystem on a
multi-node cluster), each Ray batch is journaled in a file of its own, named by a digest
of its column's values: a rerun, or Ray retrying a batch whose worker died, finds the
answers of that very batch there and pays only for the rest. Rows that arrive grouped in
other batches (another `batch_size`, other blocks) are sent again.

Budget. `max_cost_usd` (documents: `max_cost_cents`) with `budget_name`: one budget for
every actor, kept in the limits store (so more than one actor needs `limits_store`): the
spent total and what is in flight are reserved there before each request, and the rows
past it end `budget_exceeded`. A stage's budget always has a name: each Ray batch is a
run of its own, which without one would each get the whole budget.

Failures. A per-item failure is a row with `success=False`, never an exception, so a Ray
task fails (and Ray retries it) only when its worker dies: the retry re-runs that whole
batch, buying again any item of it that had already been answered (unless `journal_dir`
journaled it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from . import validation as check
from .documents import DocumentConfig, DocumentProcessor, parse_documents
from .engine.limits import ENV_STORE, LOCAL_NAMES, limits_for
from .engine.sync import run_sync
from .responses import ResponsesProcessor, ResponsesRequest, parse_responses

logger = logging.getLogger(__name__)

S = TypeVar("S", bound="_Stage")

RESPONSE_COLUMNS = (
    "success", "error", "error_type", "attempts", "response_text", "raw_response", "total_tokens"
)  # fmt: skip
DOCUMENT_COLUMNS = ("success", "error", "error_type", "attempts", "content", "cost_cents")


def _pandas() -> Any:
    return importlib.import_module("pandas")


def _store(limits_store: str | None, concurrency: int) -> str | None:
    """The store URL the actors use (None: each its own), checked here with `concurrency`,
    before Ray starts any actor: a malformed URL raises ValueError, an unreachable one
    `LimitStoreUnavailable`."""
    check.integer("concurrency", concurrency, minimum=1)
    check.text("limits_store", limits_store, empty=True, optional=True)
    url = limits_store if limits_store is not None else os.environ.get(ENV_STORE, "")
    if url.strip().lower() in LOCAL_NAMES:
        return None
    run_sync(limits_for(url).ready())
    return url


def _journal_dir(journal_dir: str | os.PathLike[str] | None) -> str | None:
    """The folder each Ray batch's journal goes in, checked before any actor starts."""
    if journal_dir is None:
        return None
    if not isinstance(journal_dir, str | os.PathLike):
        raise TypeError(f"journal_dir must be a path, not {type(journal_dir).__name__}")
    folder = os.fspath(journal_dir)
    if not isinstance(folder, str) or not folder.strip():
        raise ValueError("journal_dir must not be empty")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"journal_dir {folder!r} is not a folder")
    return folder


def _budget(
    limit_name: str, limit: float | None, name: str | None, url: str | None, concurrency: int
) -> None:
    """A stage's budget: named (each Ray batch is a run of its own), and shared through
    the store when more than one actor spends it."""
    check.number(limit_name, limit, optional=True)
    check.text("budget_name", name, optional=True)
    if limit is None and name is None:
        return
    if limit is None:
        raise ValueError(f"budget_name needs {limit_name}: the budget the name shares")
    if name is None:
        raise ValueError(
            f"{limit_name} on a Ray stage needs budget_name: each Ray batch is a run of its "
            "own, and without a name each would get the whole budget"
        )
    if url is None and concurrency > 1:
        raise ValueError(
            f"budget_name with {concurrency} actors needs limits_store: without a store each "
            "actor would spend the whole budget"
        )


def _batch_digest(items: list[Any]) -> str:
    """A digest of a Ray batch's column values: its journal's name."""
    hasher = hashlib.sha256()
    for item in items:
        data = item if isinstance(item, bytes) else repr(item).encode("utf-8", "replace")
        hasher.update(len(data).to_bytes(8, "little"))
        hasher.update(data)
    return hasher.hexdigest()[:32]


def _divided(value: float | None, concurrency: int) -> float | None:
    return None if value is None else value / concurrency


def _as_frame(batch: Any) -> Any:
    pd = _pandas()
    if isinstance(batch, pd.DataFrame):
        return batch.copy()
    if isinstance(batch, Mapping):  # numpy format: column -> array
        return pd.DataFrame({name: list(values) for name, values in batch.items()})
    if hasattr(batch, "to_pandas"):  # pyarrow
        return batch.to_pandas()
    raise TypeError(f"a batch must be a DataFrame, a dict of arrays or a Table, not {batch!r}")


def _cell(value: Any) -> Any:
    """A prompt or path as our processors take it (numpy scalars and arrays unwrapped)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


class _Stage:
    """What both stages share: one processor, one event loop and its HTTP sessions per actor."""

    column: str
    columns: tuple[str, ...]
    kind: str
    """Journal names start with it."""
    journal_dir: str | None
    budget_name: str | None

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()  # batches of one actor run one at a time on its loop

    def _journal(self, items: list[Any]) -> str | None:
        """The journal of this very batch (its column's values), in `journal_dir`."""
        if self.journal_dir is None:
            return None
        os.makedirs(self.journal_dir, exist_ok=True)
        return str(Path(self.journal_dir, f"{self.kind}-{_batch_digest(items)}.journal"))

    def __call__(self, batch: Any) -> Any:
        frame = _as_frame(batch)
        if self.column not in frame.columns:
            raise KeyError(f"the batch has no {self.column!r} column (it has {list(frame)})")
        items = [_cell(value) for value in frame[self.column].tolist()]
        if items:
            with self._lock:
                columns = self._loop.run_until_complete(self._run(items))
        else:
            columns = {name: [] for name in self.columns}
        pd = _pandas()
        for name in self.columns:
            dtype = (
                "boolean" if name == "success"
                else "Int64" if name in ("attempts", "total_tokens")
                else "Float64" if name == "cost_cents"
                else "string"
            )  # fmt: skip
            frame[name] = pd.array(columns[name], dtype=dtype)
        return frame

    async def _run(self, items: list[Any]) -> dict[str, list[Any]]:
        raise NotImplementedError

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        processor = getattr(self, "processor", None)
        if loop is not None and not loop.is_closed() and not loop.is_running():
            if processor is not None:
                loop.run_until_complete(processor.clients.close_sessions())
            loop.close()


def _common(results: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        "success": [bool(r.get("success")) for r in results],
        "error": [None if r.get("success") else r.get("error") for r in results],
        "error_type": [None if r.get("success") else r.get("error_type") for r in results],
        "attempts": [r.get("attempts") for r in results],
    }


class ResponsesStage(_Stage):
    """One actor's share of a Responses batch (made by `responses_stage`)."""

    request: ResponsesRequest
    limits_store: str | None
    max_cost_usd: float | None
    columns = RESPONSE_COLUMNS
    kind = "responses"

    def __init__(self) -> None:
        super().__init__()
        self.processor = ResponsesProcessor(limits_store=self.limits_store or "local")
        self.processor.clients.keep_sessions()

    async def _run(self, items: list[Any]) -> dict[str, list[Any]]:
        # A lazy source: a prompt that is no prompt (None, a number) fails alone.
        request = dataclasses.replace(self.request, user_prompts=iter(items))
        results = (
            await self.processor.process_batch(
                request,
                journal=self._journal(items),
                max_cost_usd=self.max_cost_usd,
                budget_name=self.budget_name,
            )
        )["results"]
        usage = [r.get("usage") if r.get("success") else None for r in results]
        return {
            **_common(results),
            "response_text": parse_responses(results),
            "raw_response": [r.get("raw_response") if r.get("success") else None for r in results],
            "total_tokens": [u.get("total_tokens") if isinstance(u, dict) else None for u in usage],
        }


class DocumentsStage(_Stage):
    """One actor's share of a Datalab batch (made by `documents_stage`)."""

    config: DocumentConfig
    limits_store: str | None
    max_cost_cents: float | None
    columns = DOCUMENT_COLUMNS
    kind = "documents"

    def __init__(self) -> None:
        super().__init__()
        self.processor = DocumentProcessor(self.config, limits_store=self.limits_store or "local")
        self.processor.clients.keep_sessions()

    async def _run(self, items: list[Any]) -> dict[str, list[Any]]:
        results = await self.processor.process(
            iter(items),
            journal=self._journal(items),
            max_cost_cents=self.max_cost_cents,
            budget_name=self.budget_name,
        )
        return {
            **_common(results),
            "content": parse_documents(results),
            "cost_cents": [_cents(r.get("cost_breakdown")) for r in results],
        }


def _cents(cost: Any) -> float | None:
    if not isinstance(cost, dict):
        return None
    cents = cost.get("final_cost_cents", cost.get("list_cost_cents"))
    return float(cents) if isinstance(cents, int | float) else None


def _stage_class(base: type[S], name: str, **attributes: Any) -> type[S]:
    """A subclass of `base` carrying the stage's settings. Its qualified name is not found
    in this module, so Ray (cloudpickle) ships the class by value, settings included."""
    cls = cast("type[S]", type(name, (base,), attributes))
    cls.__qualname__ = f"{base.__name__}.configured"
    return cls


def responses_stage(
    request: ResponsesRequest,
    prompt_column: str = "prompt",
    limits_store: str | None = None,
    *,
    concurrency: int = 1,
    journal_dir: str | os.PathLike[str] | None = None,
    max_cost_usd: float | None = None,
    budget_name: str | None = None,
) -> type[ResponsesStage]:
    """A callable class for `Dataset.map_batches`: each row's `prompt_column` through the
    Responses API with `request`'s settings (its own `user_prompts` are ignored). Without a
    store, the request's given limits are divided by `concurrency` (the actors' number).
    `journal_dir`, `max_cost_usd` and `budget_name`: see the module docstring."""
    if not isinstance(request, ResponsesRequest):
        raise TypeError(f"request must be a ResponsesRequest, not {type(request).__name__}")
    check.text("prompt_column", prompt_column)
    folder = _journal_dir(journal_dir)
    url = _store(limits_store, concurrency)
    _budget("max_cost_usd", max_cost_usd, budget_name, url, concurrency)
    template = dataclasses.replace(request, user_prompts=["-"])  # the column gives the prompts
    if url is None and concurrency > 1:
        template = dataclasses.replace(
            template,
            requests_per_minute=_divided(request.requests_per_minute, concurrency),
            tokens_per_minute=_divided(request.tokens_per_minute, concurrency),
        )
        if request.requests_per_minute is None and request.tokens_per_minute is None:
            logger.warning(
                "responses_stage: %d actors without a limits store learn the key's whole "
                "limit each; give limits_store= (or requests_per_minute/tokens_per_minute)",
                concurrency,
            )
    stage = _stage_class(
        ResponsesStage,
        "ResponsesStage",
        request=template,
        limits_store=url,
        column=prompt_column,
        journal_dir=folder,
        max_cost_usd=max_cost_usd,
        budget_name=budget_name,
    )
    return stage


def documents_stage(
    config: DocumentConfig,
    path_column: str = "path",
    limits_store: str | None = None,
    *,
    concurrency: int = 1,
    journal_dir: str | os.PathLike[str] | None = None,
    max_cost_cents: float | None = None,
    budget_name: str | None = None,
) -> type[DocumentsStage]:
    """A callable class for `Dataset.map_batches`: each row's `path_column` (a path, URL
    or bytes) through Datalab with `config`. Without a store, the config's
    `requests_per_minute` and `max_pages_in_flight` are divided by `concurrency`.
    `journal_dir`, `max_cost_cents` and `budget_name`: see the module docstring."""
    if not isinstance(config, DocumentConfig):
        raise TypeError(f"config must be a DocumentConfig, not {type(config).__name__}")
    check.text("path_column", path_column)
    folder = _journal_dir(journal_dir)
    url = _store(limits_store, concurrency)
    _budget("max_cost_cents", max_cost_cents, budget_name, url, concurrency)
    if url is None and concurrency > 1:
        pages = config.max_pages_in_flight
        config = dataclasses.replace(
            config,
            requests_per_minute=_divided(config.requests_per_minute, concurrency),
            max_pages_in_flight=None if pages is None else max(1, pages // concurrency),
        )
    stage = _stage_class(
        DocumentsStage,
        "DocumentsStage",
        config=config,
        limits_store=url,
        column=path_column,
        journal_dir=folder,
        max_cost_cents=max_cost_cents,
        budget_name=budget_name,
    )
    return stage


__all__ = ["DocumentsStage", "ResponsesStage", "documents_stage", "responses_stage"]
