"""Many schemas, one OCR: Datalab's `/extract` per schema from the conversion's checkpoint.

`DatalabExtraction(schemas={"invoice": schema, "parties": schema2})` is the pipeline's
extraction stage when Datalab, not a model, fills the schemas:
`ExtractionPipeline(DocumentConfig(...), DatalabExtraction(...))`. Each document is converted
once by `/convert` with `save_checkpoint` (the pipeline sets it), then each schema is one
`/extract` reading that `checkpoint_id` ("skips re-parsing": the OCR is paid once), all of a
document's in parallel. Each is journaled as its own stage, `StageKey(index, "extract", n)`
(the journal's stage "extract:<n>", n the schema's position), its digest naming the schema,
so a rerun pays no schema twice, polls an accepted job instead of submitting it again, and
keeps the others' answers when one failed. The row's `fields` holds one object per schema
name; `extraction.schemas` each schema's request id, cost and attempts; `extraction.cost_cents`
the cents per stage, which `PipelineSummary` totals.

A checkpoint that is gone: Datalab does not document its retention (results are kept an
hour) nor how it answers an unknown one. Either answer is read as "gone": a 404/410 at
submission (or a 400/422 naming the checkpoint), or an accepted job that ends failed naming
the checkpoint (`lost_checkpoint`). Then the document is converted once more, past the
journal, and only the schemas that lost it are extracted again from the new checkpoint. A
second loss fails the row: never a loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any
from urllib.parse import urljoin

import orjson

from .. import validation as check
from ..documents import DocumentConfig
from ..documents.form import settings_fields
from ..documents.job import Finished
from ..documents.path import DocumentsAdapter, documents_path
from ..documents.prices import cents_of
from ..documents.sources import Upload
from ..engine import Answered, Failed, Failure, ItemEnd, ItemRun, KeyLimits, log_event
from ..engine.journal import request_digest
from ..engine.stages import StageKey
from .path import EXTRACTION_STAGE, logger
from .slots import StageSlot
from .stage import Extracted, Reconvert, Sessions, Stage

EXTRACT_STAGE = "extract"
"""The journal stage of one schema's `/extract` (its page: the schema's position)."""
PLACEHOLDER = "checkpoint"
"""The checkpoint a schema's config is checked with, before any document has one."""


@dataclass(frozen=True)
class DatalabExtraction:
    """The schemas Datalab's `/extract` fills from each document's checkpoint.

    `schemas`: name -> JSON Schema (a dict, or its JSON text; Datalab needs `properties`).
    `schema_ids`: name -> a schema saved at Datalab (`POST /api/v1/extraction_schemas`), its
    id, or (id, version). A name is given once across both; the row's `fields` has one object
    per name, in this order (schemas first). `max_concurrent_requests`: `/extract` jobs being
    submitted at once (default: the OCR's; a job being polled holds none). `api_url`: the
    `/extract` endpoint (default: beside the OCR's `/convert`).
    """

    schemas: Mapping[str, Mapping[str, Any] | str] = field(default_factory=dict)
    schema_ids: Mapping[str, str | tuple[str, int]] = field(default_factory=dict)
    _: KW_ONLY
    max_concurrent_requests: int | None = None
    api_url: str | None = None
    texts: dict[str, str] = field(init=False, repr=False, compare=False)
    """`schemas` as the JSON text sent."""
    saved: dict[str, tuple[str, int | None]] = field(init=False, repr=False, compare=False)
    """`schema_ids` as (id, version or None)."""

    def __post_init__(self) -> None:
        for name in ("schemas", "schema_ids"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(
                    f"{name} must be a dict of name -> schema, not "
                    f"{type(getattr(self, name)).__name__}"
                )
        schemas = {name: _schema_text(name, value) for name, value in self.schemas.items()}
        ids = {name: _schema_id(name, value) for name, value in self.schema_ids.items()}
        for name in (*schemas, *ids):
            if not isinstance(name, str) or not name.strip():
                raise (TypeError if not isinstance(name, str) else ValueError)(
                    f"schemas: each name must be a non-empty string, got {name!r}"
                )
        both = sorted(schemas.keys() & ids.keys())
        if both:
            raise ValueError(f"schema_ids: {', '.join(both)} already named in schemas")
        if not schemas and not ids:
            raise ValueError("schemas or schema_ids: give at least one schema to extract")
        object.__setattr__(self, "texts", schemas)
        object.__setattr__(self, "saved", ids)
        check.integer(
            "max_concurrent_requests", self.max_concurrent_requests, minimum=1, optional=True
        )
        check.http_url("api_url", self.api_url, optional=True)

    @property
    def names(self) -> list[str]:
        """The schemas' names, in the row's order."""
        return [*self.texts, *self.saved]

    def configs(self, ocr: DocumentConfig) -> list[DocumentConfig]:
        """Each schema's `/extract` config, from `ocr`'s key, limits and retries (checked
        now, with a placeholder checkpoint): reading a checkpoint, it sends no convert
        field and no page selection (the checkpoint holds the pages converted)."""
        url = self.api_url or urljoin(ocr.url, "extract")
        base: dict[str, Any] = dict(
            api_url=url,
            output_format="markdown",
            paginate=False,
            page_range=None,
            max_pages=None,
            disable_image_extraction=False,
            extras=None,
            webhook_url=None,
            save_checkpoint=False,
            checkpoint_id=PLACEHOLDER,
            segmentation_schema=None,
            add_block_ids=False,
            token_efficient_markdown=False,
            disable_image_captions=False,
            additional_config=None,
            presigned_upload_min_bytes=None,
            max_concurrent_requests=self.max_concurrent_requests or ocr.max_concurrent_requests,
        )
        configs = [replace(ocr, **base, page_schema=schema) for schema in self.texts.values()]
        for schema_id, version in self.saved.values():
            configs.append(replace(ocr, **base, schema_id=schema_id, schema_version=version))
        return configs


def _schema_text(name: object, value: object) -> str:
    """`value` as the JSON text sent, checked: an object with `properties`."""
    where = f"schemas[{name!r}]"
    if isinstance(value, Mapping):
        try:
            value = orjson.dumps(dict(value)).decode()
        except TypeError as exc:
            raise TypeError(f"{where} cannot be sent as JSON: {exc}") from None
    elif not isinstance(value, str):
        raise TypeError(f"{where} must be a dict or a JSON string, not {type(value).__name__}")
    parsed = check.json_object(where, value)
    assert parsed is not None
    if not isinstance(parsed.get("properties"), dict):
        raise ValueError(f"{where}: a JSON Schema with 'properties' (Datalab's /extract needs it)")
    return value


def _schema_id(name: object, value: object) -> tuple[str, int | None]:
    where = f"schema_ids[{name!r}]"
    if isinstance(value, str):
        value = (value, None)
    if not isinstance(value, tuple) or len(value) != 2:
        raise TypeError(f"{where} must be a schema id or (schema id, version)")
    schema_id, version = value
    check.text(where, schema_id)
    check.integer(f"{where} version", version, minimum=1, optional=True)
    return schema_id, version


def lost_checkpoint(failure: Failure) -> bool:
    """Whether an `/extract` from a checkpoint failed because the checkpoint is gone (see
    the module docstring): never a 401/403 or a 429, which say nothing of it."""
    named = "checkpoint" in failure.message.lower()
    if failure.error_type == "job_failed":
        return named
    return failure.status in (404, 410) or (failure.status in (400, 422) and named)


class DatalabStage:
    """The Datalab extraction stage (`stage.ExtractionStage`) of one pipeline batch."""

    model: str | None = None

    def __init__(
        self,
        extraction: DatalabExtraction,
        ocr: DocumentConfig,
        limits: KeyLimits,
        sessions: Sessions,
    ) -> None:
        self.names = extraction.names
        configs = extraction.configs(ocr)
        self.adapters = [documents_path(config, limits, _unseen) for config in configs]
        self.slots = configs[0].max_concurrent_requests
        self.semaphore = asyncio.Semaphore(self.slots)
        self.sessions = sessions
        self.digests = [
            request_digest(name.encode(), orjson.dumps(_without_checkpoint(config)))
            for name, config in zip(self.names, configs, strict=True)
        ]
        """Each schema's stage digest: its name and form, not the checkpoint (a new one
        after a reconversion reads the same pages)."""
        named = list(zip(self.names, self.digests, strict=True))
        self.identity = orjson.dumps({"datalab_extract": named})

    async def extract(self, run: ItemRun, ocr: Finished, reconvert: Reconvert) -> Extracted:
        done = Extracted()
        stages: dict[int, Stage[Finished]] = {}
        pending = list(range(len(self.names)))
        fresh = False
        while True:
            checkpoint = ocr.payload.get("checkpoint_id")
            if not isinstance(checkpoint, str) or not checkpoint:
                done.failure = Failure(
                    "Datalab's conversion has no checkpoint_id to extract from",
                    "invalid_response",
                    False,
                )
                break
            pages = ocr.payload.get("page_count")
            upload = Upload(None, None, None, pages=pages if isinstance(pages, int) else None)
            ran = await asyncio.gather(
                *(self._one(run, n, checkpoint, upload, fresh) for n in pending)
            )
            stages.update(zip(pending, ran, strict=True))
            lost = [
                n
                for n, stage in zip(pending, ran, strict=True)
                if isinstance(stage.outcome, Failed) and lost_checkpoint(stage.outcome.failure)
            ]
            if not lost or fresh:
                break
            log_event(
                logger,
                logging.WARNING,
                "checkpoint_lost",
                index=run.index,
                checkpoint_id=checkpoint,
                schemas=",".join(self.names[n] for n in lost),
                then="converting again",
            )
            again = await reconvert()
            done.cents["ocr"] = done.cents.get("ocr", 0.0) + (
                cents_of(ocr.payload.get("cost_breakdown")) or 0.0
            )
            if not isinstance(again.outcome, Answered):
                done.failure = again.outcome.failure
                break
            done.ocr, ocr, pending, fresh = again, again.outcome.value, lost, True
        self._fill(done, [stages[n] for n in sorted(stages)], checkpoint)
        return done

    def _fill(self, done: Extracted, stages: list[Stage[Finished]], checkpoint: object) -> None:
        """The row's figures from each schema's stage (its fields, cents and detail)."""
        fields: dict[str, Any] = {}
        detail: dict[str, Any] = {}
        for name, stage in zip(self.names, stages, strict=False):
            outcome = stage.outcome
            cost, error = None, None
            if isinstance(outcome, Answered):
                fields[name] = _fields(outcome.value.payload)
                cost = outcome.value.payload.get("cost_breakdown")
                done.cents[f"{EXTRACT_STAGE}:{name}"] = cents_of(cost) or 0.0
            else:
                error = outcome.failure
                done.failure = done.failure or error
            detail[name] = {
                "success": error is None,
                "request_id": None if outcome.ids is None else outcome.ids.request,
                "cost_breakdown": cost if isinstance(cost, dict) else None,
                "attempts": outcome.attempts,
                "from_journal": stage.reused,
                "error": None if error is None else error.message,
            }
        done.stages = stages
        done.fields = fields if done.failure is None else None
        done.detail = {
            "schemas": detail,
            "checkpoint_id": checkpoint if isinstance(checkpoint, str) else None,
            "reconverted": done.ocr is not None,
        }

    async def _one(
        self, run: ItemRun, position: int, checkpoint: str, upload: Upload, fresh: bool
    ) -> Stage[Finished]:
        """One schema's `/extract` from `checkpoint`: journaled earlier, polled where the
        journal holds its job (unless `fresh`: after a reconversion), or submitted now, and
        journaled once its answer parses."""
        key = StageKey(run.index, EXTRACT_STAGE, position)
        digest = self.digests[position]
        adapter = self._adapter(position, checkpoint)
        journal = run.batch.journal
        known = None
        if journal is not None and not fresh:
            record = journal.stage_result(key, digest)
            if record is not None:
                revived = adapter.revive(record)
                if isinstance(revived, Answered) and _fields(revived.value.payload) is not None:
                    return Stage(revived, 0.0, reused=True)
            known = journal.submitted(key, digest)
        started = time.perf_counter()
        async with StageSlot(self.semaphore) as slot:
            stage_run = self.sessions.stage_run(
                run, EXTRACTION_STAGE, key, digest, started, known, slot
            )
            outcome = await adapter.execute(stage_run, upload)
        if isinstance(outcome, Answered):
            if _fields(outcome.value.payload) is None:
                text = str(outcome.value.payload.get("extraction_schema_json"))[:200]
                failure = Failure(
                    f"the extraction is not a JSON object: {text!r}", "invalid_response", False
                )
                failed: Failed[Finished] = Failed(
                    failure, outcome.attempts, outcome.rate_limited, ids=outcome.ids
                )
                return Stage(failed, time.perf_counter() - started)
            record = adapter.render(ItemEnd(run.index, outcome, started))
            run.batch.journaled(lambda j: j.record_stage(key, digest, record))
        return Stage(outcome, time.perf_counter() - started)

    def _adapter(self, position: int, checkpoint: str) -> DocumentsAdapter:
        """The schema's adapter reading `checkpoint`: its batch (key limits, policies) with
        the checkpoint in its form."""
        adapter = self.adapters[position]
        config = replace(adapter.config, checkpoint_id=checkpoint)
        batch = replace(adapter.batch, config=config, settings=settings_fields(config))
        return DocumentsAdapter(batch, _unseen)


def _fields(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object an `/extract` answered (`extraction_schema_json`, a JSON string)."""
    value = payload.get("extraction_schema_json")
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _without_checkpoint(config: DocumentConfig) -> list[tuple[str, str]]:
    return [(name, value) for name, value in settings_fields(config) if name != "checkpoint_id"]


def _unseen(index: int, request_id: str, request_check_url: str) -> None:
    """A schema's accepted job: the pipeline journals it (`journal_submission`)."""
