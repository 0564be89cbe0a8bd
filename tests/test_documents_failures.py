"""The job state machine against the emulator's faults: what is retried, what is never
uploaded twice, and how each failure ends."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import DocumentConfig, DocumentProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from genai_coroutines.engine import KeyLimits, MemoryStore
from tests import samples
from tests.documents_support import ServerPages, config_for, pages_admitted


async def run(emulator: Emulator, documents: list[bytes], **options: Any) -> list[dict[str, Any]]:
    return await DocumentProcessor(config_for(emulator, **options)).process_multiparts(documents)


async def test_a_429_waits_exactly_its_retry_after(emulator: Emulator) -> None:
    emulator.config.datalab_rpm = 60  # one upload per second...
    emulator.config.burst_seconds = 0.01  # ...and no burst: the second upload gets a 429
    started = time.monotonic()
    results = await run(emulator, [samples.pdf(1, tag="a"), samples.pdf(1, tag="b")])
    elapsed = time.monotonic() - started

    assert [r["success"] for r in results] == [True, True]
    # Retrying after the 0.01 s backoff instead would have drawn more 429s.
    assert emulator.stats.rate_limited == 1
    assert sorted(r["rate_limited"] for r in results) == [0, 1]
    assert sorted(r["attempts"] for r in results) == [1, 2]
    assert elapsed >= 1.0  # the emulator's Retry-After: 1


async def test_submission_retried_on_5xx_reset_and_timeout_then_succeeds(
    emulator: Emulator,
) -> None:
    emulator.config.hang_seconds = 2
    for kind in ("503", "reset", "502", "hang", "429"):
        emulator.faults.schedule("marker_submit", kind)
    [result] = await run(emulator, [samples.pdf(1)], timeout_secs=0.8)

    assert result["success"], result["error"]
    assert result["attempts"] == 6 and result["rate_limited"] == 1
    assert emulator.stats.snapshot()["duplicate_submissions"] == 0


@pytest.mark.parametrize("status", ["400", "403", "404", "413", "422"])
async def test_client_errors_on_submission_are_not_retried(emulator: Emulator, status: str) -> None:
    emulator.faults.schedule("marker_submit", status, times=3)
    [result] = await run(emulator, [samples.pdf(1)])

    assert not result["success"] and result["attempts"] == 1
    assert f"[{status}]" in result["error"]
    assert emulator.stats.total("marker_submit") == 1


async def test_a_validation_error_names_the_field(emulator: Emulator) -> None:
    [result] = await run(emulator, [samples.pdf(1)], extras=json.dumps({"force_ocr": "maybe"}))

    assert result["error_type"] == "unprocessable_entity_error" and result["attempts"] == 1
    assert "[422]" in result["error"] and "force_ocr" in result["error"]


async def test_a_bad_key_ends_the_whole_batch_at_once(emulator: Emulator) -> None:
    config = DocumentConfig(
        api_key="dl-wrong", api_url=emulator.marker_url, max_concurrent_requests=1
    )
    results = await DocumentProcessor(config).process_multiparts(
        [samples.pdf(1, tag=str(i)) for i in range(5)]
    )

    assert [r["attempts"] for r in results] == [1, 0, 0, 0, 0]
    assert {r["error_type"] for r in results} == {"authentication_error"}
    assert emulator.stats.total("marker_submit") == 1


async def test_transient_poll_failures_never_upload_again(emulator: Emulator) -> None:
    emulator.config.hang_seconds = 2
    for kind in ("503", "reset", "malformed", "502", "hang", "stall", "500", "429"):
        emulator.faults.schedule("marker_poll", kind)
    documents = [samples.pdf(2, tag=str(i)) for i in range(3)]
    results = await run(emulator, documents, timeout_secs=0.8, max_retries=8)

    assert [r["success"] for r in results] == [True] * 3, [r["error"] for r in results]
    assert [r["attempts"] for r in results] == [1, 1, 1]
    assert emulator.stats.submissions_by_digest == {digest(d): 1 for d in documents}
    assert sum(emulator.stats.faults.values()) == 8


async def test_transient_poll_failures_are_bounded(emulator: Emulator) -> None:
    emulator.faults.schedule("marker_poll", "503", times=3)
    [result] = await run(emulator, [samples.pdf(1)], max_retries=2, max_poll_attempts=1)

    assert not result["success"]
    assert result["error_type"] == "server_error"
    assert "failed 3 times in a row" in result["error"] and result["request_id"] in result["error"]
    assert result["attempts"] == 1 and emulator.stats.total("marker_submit") == 1


async def test_transient_poll_failures_are_not_poll_attempts(emulator: Emulator) -> None:
    emulator.config.seconds_per_page = 0.0
    emulator.faults.schedule("marker_poll", "503", times=4)
    [result] = await run(emulator, [samples.pdf(1)], max_poll_attempts=1, max_retries=4)

    assert result["success"], result["error"]


async def test_page_limit_refusal_is_resubmitted(emulator: Emulator) -> None:
    emulator.config.datalab_max_pages_in_flight = 4
    emulator.config.seconds_per_page = 0.02
    documents = [samples.pdf(3, tag=str(i)) for i in range(3)]
    results = await run(emulator, documents, max_pages_in_flight=None, max_retries=30)

    assert [r["success"] for r in results] == [True] * 3, [r["error"] for r in results]
    assert max(r["attempts"] for r in results) > 1  # some were refused, then resubmitted
    counts = emulator.stats.submissions_by_digest
    assert sum(counts.values()) == sum(r["attempts"] for r in results)


async def test_pages_in_flight_bound_avoids_page_limit_refusals(emulator: Emulator) -> None:
    emulator.config.datalab_max_pages_in_flight = 8
    emulator.config.seconds_per_page = 0.02
    documents = [samples.pdf(3, tag=str(i)) for i in range(6)]
    results = await run(emulator, documents, max_pages_in_flight=8)

    assert [r["attempts"] for r in results] == [1] * 6, [r["error"] for r in results]
    assert emulator.stats.submissions_by_digest == {digest(d): 1 for d in documents}


async def test_a_page_limit_refusal_draws_on_max_retries(emulator: Emulator) -> None:
    emulator.config.datalab_max_pages_in_flight = 2
    [result] = await run(emulator, [samples.pdf(3)], max_retries=2)

    assert not result["success"] and result["error_type"] == "page_limit"
    assert "Page rate limit exceeded" in result["error"] and result["attempts"] == 3


async def test_a_page_limit_the_client_does_not_know_is_learned_and_loses_nothing(
    emulator: Emulator,
) -> None:
    emulator.config.datalab_max_pages_in_flight = 30  # the client keeps its default 5,000
    emulator.config.seconds_per_page = 0.05  # jobs long enough to overlap on a busy machine
    store = MemoryStore()
    limits = KeyLimits(store)
    documents = [samples.pdf(2 + i % 5, tag=str(i)) for i in range(80)]
    results = await DocumentProcessor(config_for(emulator), limits=limits).process_multiparts(
        documents
    )

    assert [r["error_type"] for r in results] == [None] * 80
    attempts = [r["attempts"] for r in results]
    assert max(attempts) > 1  # refused, then resubmitted as a counted retry
    assert sum(attempts) == sum(emulator.stats.submissions_by_digest.values())
    # Some refusals taught the ceiling: polls hold no driver slot, so the documents go out
    # before the first refusal comes back, bounded by the pages in flight, not concurrency.
    assert sum(attempts) - len(documents) <= 30
    ceiling = await pages_admitted(store, emulator)
    assert 20 <= ceiling <= 30

    # Learned, the ceiling holds for the key's next batch: nothing refused, never above it.
    after = ServerPages(config_for(emulator), emulator, limits=limits)
    more = [samples.pdf(2 + i % 5, tag=f"again {i}") for i in range(30)]
    again = await after.process_multiparts(more)
    assert [r["attempts"] for r in again] == [1] * 30, [r["error"] for r in again]
    assert 0 < max(after.seen) <= ceiling


async def test_failed_jobs_end_with_datalabs_error(emulator: Emulator) -> None:
    documents = [samples.pdf(1, extra=samples.FAIL_MARKER), samples.pdf(1)]
    results = await run(emulator, documents)

    assert [r["success"] for r in results] == [False, True]
    assert results[0]["error_type"] == "job_failed"
    assert "could not be converted" in results[0]["error"]
    assert results[0]["request_id"] in results[0]["error"]
    assert results[0]["json_response"] is None and results[0]["attempts"] == 1


async def test_expired_results_end_with_a_clear_error(emulator: Emulator) -> None:
    emulator.config.result_ttl = 0.0
    [result] = await run(emulator, [samples.pdf(1)], poll_interval_secs=0.05)

    assert result["error_type"] == "not_found_error" and "expired" in result["error"]
    assert emulator.stats.total("marker_submit") == 1


async def test_poll_timeout_names_the_request(emulator: Emulator) -> None:
    emulator.config.seconds_per_page = 60.0
    [result] = await run(emulator, [samples.pdf(1)], max_poll_attempts=3)

    assert result["error_type"] == "poll_timeout"
    assert f"request {result['request_id']} still processing after 3 polls" in result["error"]
    assert emulator.stats.requests["marker_poll 200"] == 3


async def test_credits_running_out_end_the_batch_and_keep_what_finished(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.config.datalab_credits_cents = 1.3  # two 1-page "accurate" conversions at 0.6
    documents = [samples.pdf(1, tag=f"credit {i}") for i in range(5)]
    journal = tmp_path / "credits.journal"
    processor = DocumentProcessor(config_for(emulator, max_concurrent_requests=1))
    results = await processor.process_multiparts(documents, journal=journal)

    assert [r["success"] for r in results] == [True, True, False, False, False]
    assert [r["attempts"] for r in results] == [1, 1, 1, 0, 0]  # the rest were never sent
    assert {r["error_type"] for r in results[2:]} == {"insufficient_quota"}
    assert all(
        "[403]: You need an active, paid subscription to use this API." in r["error"]
        for r in results[2:]
    )
    assert emulator.stats.requests["marker_submit 403"] == 1  # never retried

    emulator.config.datalab_credits_cents = 10.0  # topped up: the rerun pays for the rest only
    again = await processor.process_multiparts(documents, journal=journal)
    assert [r["success"] for r in again] == [True] * 5
    assert [bool(r.get("from_journal")) for r in again] == [True, True, False, False, False]
    assert emulator.stats.submissions_by_digest == {digest(d): 1 for d in documents}


async def test_a_poll_refused_for_credits_ends_its_item_and_the_batch_without_looping(
    emulator: Emulator,
) -> None:
    emulator.config.datalab_credits_cents = 0.6  # one 1-page conversion
    emulator.config.datalab_polls_need_credits = True  # once a submission is refused
    emulator.config.seconds_per_page = 0.5  # the accepted job still runs when the other is refused
    documents = [samples.pdf(1, tag=f"poll {i}") for i in range(2)]
    results = await run(emulator, documents, max_concurrent_requests=2, max_retries=5)

    assert [r["error_type"] for r in results] == ["insufficient_quota"] * 2
    assert sorted(r["attempts"] for r in results) == [1, 1]
    accepted = next(r for r in results if r["request_id"] is not None)
    assert "You need an active, paid subscription" in accepted["error"]
    assert emulator.stats.requests["marker_poll 403"] == 1  # asked once, never again
    assert emulator.stats.requests["marker_submit 403"] == 1


async def test_datalab_concurrency_429s_cost_no_document(emulator: Emulator) -> None:
    """Datalab allows 3 jobs at once and the batch sends 8: its 429s wait their turn and
    spend no retry, so even with max_retries=0 every document is converted once."""
    emulator.config.datalab_max_concurrent = 3
    emulator.config.seconds_per_page = 0.05
    documents = [samples.pdf(1, tag=str(i)) for i in range(12)]
    results = await DocumentProcessor(
        config_for(emulator, max_concurrent_requests=8, max_retries=0)
    ).process_multiparts(documents)

    assert all(r["success"] for r in results)
    assert emulator.stats.rate_limited > 0
    assert emulator.stats.snapshot()["duplicate_submissions"] == 0
