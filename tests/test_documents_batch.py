"""Whole batches: the seed's example, 200 documents under faults, streaming, rate limits,
and the seams a journal builds on (on_submitted, resume)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import DocumentConfig, DocumentProcessor, parse_documents
from genai_coroutines.documents import Submission, job
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from genai_coroutines.engine import Failure, Reply
from tests import samples
from tests.documents_support import config_for

SEED_EXAMPLE = """
import asyncio
from genai_coroutines import DocumentConfig, DocumentProcessor, parse_documents

async def main():
    config = DocumentConfig(
        api_key="YOUR_DATALAB_KEY",
        mode="accurate",
        max_concurrent_requests=10,
        page_range="0-5",   # Only process first 6 pages
        max_pages=10        # Safety cap
    )
    processor = DocumentProcessor(config)

    # Load documents
    files = ["report1.pdf", "report2.pdf", "scan.png"]
    batch = []
    for f in files:
        with open(f, "rb") as fh:
            batch.append(fh.read())

    # Process
    results = await processor.process_multiparts(batch)

    # Parse consolidated HTML from each document
    html_list = parse_documents(results)
    for i, html in enumerate(html_list):
        print(f"Doc {i}: {len(html)} chars of HTML")

    # Access cost breakdown (native Python dict)
    for r in results:
        if r["success"] and r.get("cost_breakdown"):
            cost = r["cost_breakdown"]  # Already a dict, no json.loads needed
            print(f"Cost: {cost['final_cost_cents']} cents")

asyncio.run(main())
"""


async def test_the_seed_example_runs_unchanged(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.config.datalab_api_key = "YOUR_DATALAB_KEY"
    (tmp_path / "report1.pdf").write_bytes(samples.pdf(8, tag="report1"))
    (tmp_path / "report2.pdf").write_bytes(samples.pdf(2, tag="report2"))
    (tmp_path / "scan.png").write_bytes(samples.png(tag="scan"))
    monkeypatch.chdir(tmp_path)
    code = SEED_EXAMPLE.replace(
        'api_key="YOUR_DATALAB_KEY",',
        f'api_key="YOUR_DATALAB_KEY", api_url="{emulator.marker_url}",',
    )

    await asyncio.to_thread(exec, code, {"__name__": "__main__"})

    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"\d+(\.\d+)?", "N", line) for line in lines] == (
        ["Doc N: N chars of HTML"] * 3 + ["Cost: N cents"] * 3
    )
    assert [form["page_range"] for form in (s["form"] for s in emulator.stats.received)] == [
        "0-5"
    ] * 3


async def test_200_mixed_documents_under_faults_all_accounted_for_in_order(
    emulator: Emulator,
) -> None:
    emulator.config.fault_rates = {
        "marker_submit": {"503": 0.05, "reset": 0.05},
        "marker_poll": {"503": 0.04, "reset": 0.03, "malformed": 0.03},
    }
    documents: list[bytes] = []
    doomed = set()
    for i in range(200):
        if i % 25 == 7:
            doomed.add(i)
            documents.append(samples.pdf(1, tag=str(i), extra=samples.FAIL_MARKER))
        else:
            kind = i % 3
            documents.append(
                samples.pdf(1 + i % 5, tag=str(i))
                if kind == 0
                else samples.png(tag=str(i))
                if kind == 1
                else samples.jpeg(tag=str(i))
            )
    config = config_for(emulator, max_concurrent_requests=50, max_retries=8)

    results = await DocumentProcessor(config).process_multiparts(documents)
    texts = parse_documents(results)

    assert [r["index"] for r in results] == list(range(200))
    for i, (result, text) in enumerate(zip(results, texts, strict=True)):
        assert result["success"] == (i not in doomed), (i, result["error"])
        if i in doomed:
            assert result["error_type"] == "job_failed" and text == ""
        else:
            assert f"digest {digest(documents[i])}." in text
    stats = emulator.stats.snapshot()
    assert stats["duplicate_submissions"] == 0
    assert stats["submissions_by_digest"] == {digest(d): 1 for d in documents}
    assert sum(stats["faults"].values()) >= 40  # about 10% of ~1,000 requests


async def test_stream_yields_each_result_as_it_finishes(emulator: Emulator) -> None:
    slow, fast = samples.pdf(30, tag="slow"), samples.pdf(1, tag="fast")
    processor = DocumentProcessor(config_for(emulator))
    order = [result["index"] async for result in processor.stream([slow, fast])]
    assert order == [1, 0]


async def test_client_rate_limit_keeps_uploads_under_the_server_limit(
    emulator: Emulator,
) -> None:
    emulator.config.datalab_rpm = 2400  # 40 per second...
    emulator.config.burst_seconds = 0.25  # ...with room for a burst of 10
    documents = [samples.png(tag=str(i)) for i in range(30)]
    results = await DocumentProcessor(
        config_for(emulator, max_concurrent_requests=30, requests_per_minute=2400)
    ).process_multiparts(documents)

    assert all(r["success"] for r in results)
    assert emulator.stats.rate_limited == 0
    assert emulator.stats.requests["marker_submit 200"] == 30


def record_uploads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float, int | None]]:
    """(started, ended, status) of every upload from now on, timed on the client side."""
    log: list[tuple[float, float, int | None]] = []
    real_send = job.send

    async def timed_send(session: Any, method: str, url: str, **kwargs: Any) -> Reply | Failure:
        started = time.monotonic()
        reply = await real_send(session, method, url, **kwargs)
        if method == "POST":
            status = reply.status if isinstance(reply, Reply) else None
            log.append((started, time.monotonic(), status))
        return reply

    monkeypatch.setattr(job, "send", timed_send)
    return log


async def test_a_429_pauses_every_upload_on_the_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads = record_uploads(monkeypatch)
    emulator.config.fault_retry_after = 0.3
    emulator.faults.schedule("marker_submit", "429-retry-after")
    documents = [samples.png(tag=str(i)) for i in range(6)]
    results = await DocumentProcessor(
        config_for(emulator, max_concurrent_requests=3)
    ).process_multiparts(documents)

    assert all(r["success"] for r in results)
    assert sum(r["rate_limited"] for r in results) == 1
    limited = next(u for u in uploads if u[2] == 429)
    later = [u for u in uploads if u[0] > limited[1]]
    assert len(later) >= 3
    assert min(started for started, _, _ in later) >= limited[1] + 0.29


@pytest.mark.parametrize("seconds", [1800, 86400])
async def test_a_429_asking_half_an_hour_ends_its_item_and_pauses_nobody(
    emulator: Emulator, seconds: int
) -> None:
    emulator.config.fault_retry_after = seconds
    emulator.faults.schedule("marker_submit", "429-retry-after")
    documents = [samples.png(tag=str(i)) for i in range(6)]
    processor = DocumentProcessor(config_for(emulator, max_concurrent_requests=2))
    results = await asyncio.wait_for(processor.process_multiparts(documents), 10.0)

    refused = [r for r in results if not r["success"]]
    assert len(refused) == 1 and refused[0]["error_type"] == "rate_limit_error"
    assert "[429]" in refused[0]["error"]
    assert sum(r["success"] for r in results) == 5


class Recorder(DocumentProcessor):
    def __init__(self, config: DocumentConfig, emulator: Emulator) -> None:
        super().__init__(config)
        self.emulator = emulator
        self.calls: list[tuple[int, str, str, int]] = []

    def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
        polls = self.emulator.stats.total("marker_poll")
        self.calls.append((index, request_id, request_check_url, polls))


async def test_on_submitted_is_called_before_the_first_poll(emulator: Emulator) -> None:
    processor = Recorder(config_for(emulator), emulator)
    [result] = await processor.process_multiparts([samples.pdf(1)])

    [(index, request_id, check_url, polls)] = processor.calls
    assert (index, request_id, polls) == (0, result["request_id"], 0)
    assert check_url == f"{emulator.marker_url}/{request_id}"


async def test_resume_polls_a_known_job_instead_of_uploading_again(emulator: Emulator) -> None:
    emulator.config.seconds_per_page = 0.3
    document = samples.pdf(1)
    first = Recorder(config_for(emulator, max_poll_attempts=1), emulator)
    [interrupted] = await first.process_multiparts([document])
    assert interrupted["error_type"] == "poll_timeout"
    [(_, request_id, check_url, _)] = first.calls

    resumed = [
        r
        async for r in DocumentProcessor(config_for(emulator)).stream(
            [document], resume={0: Submission(request_id, check_url)}
        )
    ]

    assert resumed[0]["success"] and resumed[0]["request_id"] == request_id
    assert resumed[0]["attempts"] == 0
    assert emulator.stats.submissions_by_digest == {digest(document): 1}


async def test_resuming_an_expired_job_uploads_it_again(emulator: Emulator) -> None:
    document = samples.pdf(1)
    gone = Submission("expired-id", f"{emulator.marker_url}/expired-id")
    [result] = [
        r
        async for r in DocumentProcessor(config_for(emulator)).stream([document], resume={0: gone})
    ]

    assert result["success"] and result["request_id"] != "expired-id"
    assert result["attempts"] == 1
    assert emulator.stats.submissions_by_digest == {digest(document): 1}


async def test_a_bad_item_in_a_lazy_input_fails_alone(emulator: Emulator) -> None:
    def documents() -> Iterator[object]:
        yield samples.pdf(1, tag="first")
        yield 42
        yield samples.pdf(1, tag="last")

    processor = DocumentProcessor(config_for(emulator))
    results = await processor.process(documents())  # type: ignore[arg-type]

    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["error_type"] == "invalid_input" and "inputs[1]" in results[1]["error"]
