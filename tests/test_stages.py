"""Stages: an item's request run direct, in background or grouped, against the emulator.

The point of each test: an item waiting on the provider (a background response or a
Datalab job being polled, a Batch API line) holds no driver slot meanwhile, so at
concurrency 1 many are in flight on the emulator at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import (
    BatchAPI,
    DocumentConfig,
    DocumentProcessor,
    ExtractionPipeline,
    ResponsesProcessor,
    ResponsesRequest,
)
from genai_coroutines.emulator import Emulator
from genai_coroutines.engine import (
    Answered,
    BatchOptions,
    Deferred,
    Driver,
    Failure,
    ItemRun,
    KeyLimits,
    Line,
    Outcome,
)
from genai_coroutines.engine.stages import StageKey
from genai_coroutines.engine.store import MemoryStore
from genai_coroutines.responses.batch import BatchAPIAdapter
from genai_coroutines.responses.batch.spool import BatchJob, batch_line, custom_id, key_of
from genai_coroutines.responses.direct import DirectAdapter, Prepared, key_limiter
from genai_coroutines.responses.processor import request_headers
from tests import samples
from tests.documents_support import config_for
from tests.pipeline_support import invoice_pdf, pipeline_for
from tests.responses_support import request_for


async def until(task: asyncio.Task[Any], condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` while `task` runs; fail if it ends first or 5 s pass."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        assert not task.done(), f"the batch ended before {what}"
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def posts(emulator: Emulator) -> int:
    return sum(emulator.stats.responses_by_digest.values())


async def test_direct_items_at_concurrency_one_all_complete(emulator: Emulator) -> None:
    request = request_for(emulator, [f"direct {i}" for i in range(6)], max_concurrent_requests=1)
    out = await ResponsesProcessor().process_batch(request)
    assert out["total_success"] == 6 and emulator.stats.peak_in_flight == 1


async def test_background_items_poll_without_a_slot(emulator: Emulator) -> None:
    """With one slot, five background responses are POSTed before the first one ends: each
    item polls without its slot (before, the second POST waited for the first answer)."""
    emulator.config.background_queue_seconds = 0.4
    request = request_for(
        emulator,
        [f"background {i}" for i in range(5)],
        background=True,
        poll_interval_secs=0.01,
        max_concurrent_requests=1,
    )
    task = asyncio.ensure_future(ResponsesProcessor().process_batch(request))
    await until(task, lambda: posts(emulator) == 5, "five POSTs")
    assert sum(emulator.stats.completed_by_digest.values()) == 0  # none had ended yet
    out = await task
    assert out["total_success"] == 5 and posts(emulator) == 5
    assert [r["index"] for r in out["results"]] == list(range(5))


async def test_datalab_jobs_poll_without_a_slot(emulator: Emulator) -> None:
    """With one slot, every document is uploaded before the first job completes."""
    emulator.config.seconds_per_page = 0.2
    documents = [samples.pdf(1, tag=f"doc {i}") for i in range(4)]
    config = config_for(emulator, max_concurrent_requests=1)
    results = await DocumentProcessor(config).process_multiparts(documents)
    assert [r["success"] for r in results] == [True] * 4
    events = [what for _, endpoint, what in emulator.stats.events if endpoint != "files"]
    submitted = [i for i, what in enumerate(events) if what.startswith("submitted ")]
    first_done = next(i for i, what in enumerate(events) if what.startswith("poll complete"))
    assert len(submitted) == 4 and max(submitted) < first_done


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (StageKey(7), "7"),
        (StageKey(7, "extract"), "7.extract"),
        (StageKey(0, "extract", 12), "0.extract.12"),
    ],
)
def test_stage_key_text_round_trips(key: StageKey, text: str) -> None:
    assert key.text == text and StageKey.parse(text) == key


@pytest.mark.parametrize("text", ["", "07", "7.", "7.Extract", "7.extract.", "²", "7.x.01", "a"])
def test_stage_key_parse_refuses_what_it_did_not_write(text: str) -> None:
    assert StageKey.parse(text) is None


def test_batch_line_ids_carry_the_stage_key_and_old_ones_still_resolve() -> None:
    body = b'{"model":"gpt-4o-mini","input":"x"}'
    line = custom_id(StageKey(3, "extract", 2), body)
    assert line.startswith("3.extract.2-") and key_of(line) == StageKey(3, "extract", 2)
    old = "41-0123456789ab"  # what a journal of an earlier run holds: `<index>-<12 hex>`
    assert custom_id(StageKey(41), b"")[:3] == "41-" and key_of(old) == StageKey(41)
    for foreign in ("41-0123456789AB", "x-0123456789ab", "²-0123456789ab", "41-012", "41"):
        assert key_of(foreign) is None


def test_a_batch_job_owes_its_lines_by_key_and_reads_their_ids_tokens_digests_from_its_spool() -> (
    None
):
    """A waiting line is a bit of its job (a named stage's key an entry): what it was sent
    with comes back from the spool, in file order, for the lines still owed."""
    job = BatchJob(1)
    keys = [StageKey(70), StageKey(64), StageKey(3), StageKey(9, "extraction", 2), StageKey(71)]
    digests = [f"{n:064x}" for n in range(len(keys))]
    ids = [custom_id(key, b'{"input":"%d"}' % n) for n, key in enumerate(keys)]
    try:
        for n, key in enumerate(keys):  # out of order: the first bit grows back to index 3
            body = b'{"input":"%d"}' % n
            attempt = 2 if key.index == 71 else 1  # one line of a journal in another round
            tag = None if n % 2 else bytes([n]) * 16  # an input digest kept beside some
            job.add(key, batch_line(ids[n], body), attempt, 10 + n, digests[n], tag)
        assert len(job.owed) == 5 and StageKey(4) not in job.owed and StageKey(9) not in job.owed
        assert job.owed.discard(StageKey(64)) and not job.owed.discard(StageKey(64))
        assert job.owed.discard(StageKey(9, "extraction", 2))
        owing = list(job.owing())
        assert [line.key for line in owing] == [StageKey(70), StageKey(3), StageKey(71)]
        assert [line.tokens for line in owing] == [10, 12, 14]
        assert [line.digest for line in owing] == [digests[0], digests[2], digests[4]]
        assert [line.input_digest for line in owing] == [bytes(16), b"\x02" * 16, b"\x04" * 16]
        assert [line.line_id for line in owing] == [ids[0], ids[2], ids[4]]
        assert [job.attempt_of(line.key) for line in owing] == [1, 1, 2]
        for line in owing:
            job.owed.discard(line.key)
        assert not job.owed and list(job.owing()) == []
        assert (job.spool.lines, job.spool.tokens) == (5, 60), "the file keeps every line"
    finally:
        job.spool.remove()


async def test_grouped_lines_hold_no_slot_all_in_one_batch(emulator: Emulator) -> None:
    """At concurrency 1, every prompt's line is in the one batch file: a line waiting on its
    batch holds no slot."""
    prompts = [f"grouped {i}" for i in range(6)]
    request = request_for(emulator, prompts, max_concurrent_requests=1)
    out = await ResponsesProcessor().process_batch(
        request, batch_api=BatchAPI(poll_interval_secs=0.01)
    )
    assert out["total_success"] == 6
    assert emulator.stats.files_uploaded == 1 and emulator.stats.batches_created == 1
    assert len({r["batch_id"] for r in out["results"]}) == 1
    keys = [key_of(r["custom_id"]) for r in out["results"]]
    assert sorted(key.index for key in keys if key is not None) == list(range(6))


def uploads(emulator: Emulator) -> int:
    return sum(emulator.stats.submissions_by_digest.values())


def polled_jobs(emulator: Emulator) -> set[str]:
    """The Datalab jobs polled so far (the emulator's request log)."""
    return {what.split()[-1] for _, _, what in emulator.stats.events if what.startswith("poll ")}


PAGE_SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "invoice_number": {"type": "string"}},
}


def paged(emulator: Emulator, schema: dict[str, Any] = PAGE_SCHEMA) -> ExtractionPipeline:
    """A pipeline extracting each page on its own (`per_page`, the OCR's pages as JSON)."""
    return pipeline_for(emulator, per_page=True, schema=schema, ocr={"output_format": "json"})


async def interrupted_pipeline(emulator: Emulator, journal: Path) -> list[bytes]:
    """A `per_page` pipeline run cancelled once its first document's row (OCR, then both
    pages' extractions) is journaled and the other three OCR jobs were accepted and
    journaled, unfinished."""
    emulator.config.seconds_per_page = 0.1  # the 2-page document is ready long before the rest
    docs = [invoice_pdf(0, 2), *(invoice_pdf(i, 6) for i in (1, 2, 3))]
    stream = paged(emulator).stream(docs, journal=journal)
    first = await anext(stream)
    assert first["index"] == 0 and first["success"]
    consumer = asyncio.ensure_future(anext(stream))
    # Polled: accepted and journaled (a job is journaled before its first poll).
    await until(consumer, lambda: len(polled_jobs(emulator)) == 4, "four OCR jobs polled")
    consumer.cancel()  # what Ctrl-C does to the batch
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    await stream.aclose()
    assert posts(emulator) == 2 and sum(emulator.stats.completed_by_digest.values()) == 2
    return docs


async def test_a_pipeline_rerun_polls_its_accepted_ocr_jobs_and_buys_nothing_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Each stage's submission is journaled under its `StageKey`: the rerun polls the OCR
    jobs the killed run had accepted and sends each page's extraction once."""
    journal = tmp_path / "pipeline.journal"
    docs = await interrupted_pipeline(emulator, journal)

    rows = await paged(emulator).process(docs, journal=journal)

    assert all(row["success"] for row in rows)
    assert [bool(row.get("from_journal")) for row in rows] == [True, False, False, False]
    assert [row["fields"]["invoice_number"] for row in rows] == [f"INV-100{i}" for i in range(4)]
    assert uploads(emulator) == 4 and set(emulator.stats.submissions_by_digest.values()) == {1}
    assert posts(emulator) == 2 + 3 * 6, "an extraction was bought twice"


async def test_an_accepted_ocr_job_is_polled_even_when_the_extraction_changed(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The OCR job is journaled under its own stage and digest, not the row's: a rerun with
    another schema polls the jobs the killed run had paid for instead of uploading again."""
    journal = tmp_path / "pipeline.journal"
    docs = await interrupted_pipeline(emulator, journal)
    narrower = {"type": "object", "properties": {"vendor": {"type": "string"}}}

    rows = await paged(emulator, schema=narrower).process(docs, journal=journal)

    assert all(row["success"] for row in rows)
    assert [row["ocr"]["from_journal"] for row in rows] == [True, False, False, False]
    assert uploads(emulator) == 4, "an accepted OCR job was uploaded again"


async def test_max_waiting_bounds_the_background_responses_running_at_openai(
    emulator: Emulator,
) -> None:
    """max_waiting=1 at concurrency 1: one response polls without the slot, the next polls
    in it, so at most 2 run at OpenAI at once (before, all five were POSTed at once)."""
    emulator.config.background_queue_seconds = 0.1
    request = request_for(
        emulator,
        [f"waiting {i}" for i in range(5)],
        background=True,
        poll_interval_secs=0.01,
        max_concurrent_requests=1,
        max_waiting=1,
    )
    task = asyncio.ensure_future(ResponsesProcessor().process_batch(request))
    running = 0
    while not task.done():  # what runs at OpenAI: POSTed and not yet completed there
        completed = sum(emulator.stats.completed_by_digest.values())
        running = max(running, posts(emulator) - completed)
        await asyncio.sleep(0.002)
    out = await task
    assert out["total_success"] == 5 and posts(emulator) == 5
    assert running == 2


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)]
)
def test_max_waiting_is_validated_on_both_configs(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_waiting"):
        DocumentConfig(api_key="k", max_waiting=value)  # type: ignore[arg-type]
    with pytest.raises(error, match="max_waiting"):
        ResponsesRequest(
            system_prompt="",
            user_prompts=["x"],
            model="gpt-4o-mini",
            response_format=None,
            api_key="k",
            max_waiting=value,  # type: ignore[arg-type]
        )


async def test_a_background_extraction_is_polled_by_the_rerun_not_posted_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The pipeline's extraction as a background stage: its response id is journaled under
    `StageKey(0, "extraction", 0)` when the POST returns; a run killed while it is queued at
    OpenAI is rerun by polling that response."""
    emulator.config.seconds_per_page = 0.01
    emulator.config.background_queue_seconds = 0.3
    journal = tmp_path / "pipeline.journal"
    options = {"background": True, "poll_interval_secs": 0.01}
    docs = [invoice_pdf(0)]
    task = asyncio.ensure_future(
        pipeline_for(emulator, request=options).process(docs, journal=journal)
    )
    # Polled: the POST returned and its id was journaled (before the first poll).
    await until(task, lambda: emulator.stats.total("responses_poll") > 0, "a poll")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert posts(emulator) == 1 and not emulator.stats.completed_by_digest

    [row] = await pipeline_for(emulator, request=options).process(docs, journal=journal)

    assert row["success"] and row["fields"]["invoice_number"] == "INV-1000"
    assert row["ocr"]["from_journal"] and not row.get("from_journal")
    assert posts(emulator) == 1, "the extraction was POSTed again"


async def test_a_background_extraction_polls_without_its_extraction_slot(
    emulator: Emulator,
) -> None:
    """At extraction concurrency 1 the background extractions of four documents run at
    OpenAI together: each one's poll leaves the extraction slot to the next POST (before,
    the poll kept it, so one ran at a time)."""
    emulator.config.seconds_per_page = 0.01
    emulator.config.background_queue_seconds = 0.1
    options = {"background": True, "poll_interval_secs": 0.01, "max_concurrent_requests": 1}
    pipeline = pipeline_for(emulator, ocr={"max_concurrent_requests": 4}, request=options)
    task = asyncio.ensure_future(pipeline.process([invoice_pdf(i) for i in range(4)]))
    running = 0
    while not task.done():  # what runs at OpenAI: POSTed and not yet completed there
        completed = sum(emulator.stats.completed_by_digest.values())
        running = max(running, posts(emulator) - completed)
        await asyncio.sleep(0.002)
    rows = await task
    assert all(row["success"] for row in rows) and posts(emulator) == 4
    assert running > 1, "each background extraction kept the extraction slot while polled"


class TwoLineAdapter(BatchAPIAdapter):
    """An item of two Batch API lines: its `then` sends the second once the first is
    answered, and the second's outcome is the item's."""

    async def execute(self, run: ItemRun, prepared: Prepared) -> Deferred:
        key = StageKey(run.index)
        second = await self.prepare(run.index, f"second {run.index}")
        assert not isinstance(second, Failure)

        def then(first: list[Outcome[Any]]) -> Outcome[Any] | Deferred:
            assert isinstance(first[0], Answered), first
            self.firsts.append(first[0])
            return Deferred(self.stage, [Line(key, second)])

        return Deferred(self.stage, [Line(key, prepared)], then)

    firsts: list[Answered[Any]]


async def test_a_grouped_stage_continues_into_the_next_without_a_slot(
    emulator: Emulator,
) -> None:
    """At concurrency 1, the six items' first lines all go into one file (none holds the
    only slot), each `then` turns its answer into a second line, and the item ends with the
    second line's answer."""
    prompts = [f"first {i}" for i in range(6)]
    request = request_for(emulator, prompts, max_concurrent_requests=1)
    limits = KeyLimits(MemoryStore())
    direct = DirectAdapter(request, key_limiter(request, limits))
    options = BatchAPI(poll_interval_secs=0.01, flush_idle_secs=0.05)
    adapter = TwoLineAdapter(request, options, direct, limits)
    adapter.firsts = []
    options = BatchOptions(concurrency=1, headers=request_headers(request))

    results = [result async for result in Driver(adapter, prompts, options).stream()]

    assert sorted(r["index"] for r in results) == list(range(6))
    assert all(r["success"] for r in results)
    assert len(adapter.firsts) == 6
    first_batches = {first.ids.group for first in adapter.firsts if first.ids is not None}
    assert len(first_batches) == 1, "an item waiting on its line held the only slot"
    assert all(r["batch_id"] not in first_batches for r in results)
    assert len({r["batch_id"] for r in results}) == 1, "lines after the input's end: one file"
    lines = emulator.stats.batch_executions_by_custom_id
    assert sum(lines.values()) == 12 and set(lines.values()) == {1}


class ThenPostsAdapter(BatchAPIAdapter):
    """An item of a Batch API line whose continuation is async: it POSTs a second request
    on the synchronous path, whose answer is the item's."""

    async def execute(self, run: ItemRun, prepared: Prepared) -> Deferred:
        batch, index = run.batch, run.index

        async def then(first: list[Outcome[Any]]) -> Outcome[Any]:
            assert isinstance(first[0], Answered), first
            second = await self.prepare(index, f"second {index}")
            assert not isinstance(second, Failure)
            return await self.context.direct.execute(ItemRun(index, batch, 0.0), second)

        return Deferred(self.stage, [Line(StageKey(index, "first"), prepared)], then)


async def test_an_async_continuation_runs_a_direct_request_after_its_line(
    emulator: Emulator,
) -> None:
    """Six items' first lines, named `StageKey(i, "first")`, go in one batch file at
    concurrency 1; each continuation then POSTs its second request (the item's answer)."""
    prompts = [f"first {i}" for i in range(6)]
    request = request_for(emulator, prompts, max_concurrent_requests=1)
    limits = KeyLimits(MemoryStore())
    direct = DirectAdapter(request, key_limiter(request, limits))
    adapter = ThenPostsAdapter(request, BatchAPI(poll_interval_secs=0.01), direct, limits)
    options = BatchOptions(concurrency=1, headers=request_headers(request))

    results = [result async for result in Driver(adapter, prompts, options).stream()]

    assert sorted(r["index"] for r in results) == list(range(6))
    assert all(r["success"] and r["service_tier"] != "batch" for r in results)
    assert emulator.stats.batches_created == 1 and posts(emulator) == 6
    lines = emulator.stats.batch_executions_by_custom_id
    assert {key_of(line) for line in lines} == {StageKey(i, "first") for i in range(6)}
