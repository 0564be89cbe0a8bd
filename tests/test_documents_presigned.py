"""Large files: PUT once to Datalab's storage through a presigned URL, then submitted by their
`datalab://` reference, however often the submission is retried or the batch resumed.

The emulator counts what reached its storage (`storage_puts_by_digest`, `storage_bytes`), the
key sent there anyway (`storage_key_leaks`) and the jobs each reference served
(`references_used`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import DocumentProcessor
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from tests import samples
from tests.documents_support import config_for

LARGE = 1_000_000
"""The tests' threshold: the large document (1.2 MB) goes by reference, a small one does not."""


def large(tag: str = "large") -> bytes:
    return samples.pdf(2, tag=tag, extra=b"%" + b"x" * 1_200_000 + b"\n")


async def run(emulator: Emulator, documents: list[bytes], **options: Any) -> list[dict[str, Any]]:
    journal = options.pop("journal", None)
    config = config_for(emulator, presigned_upload_min_bytes=LARGE, **options)
    return await DocumentProcessor(config).process(documents, journal=journal)


def file_requests(emulator: Emulator) -> int:
    """Upload URLs granted (`POST /api/v1/files/upload`)."""
    events = emulator.stats.events
    return sum(1 for _, where, what in events if where == "files" and what.startswith("upload url"))


async def test_a_large_file_is_put_once_even_when_its_first_submit_fails(
    emulator: Emulator,
) -> None:
    emulator.faults.schedule("marker_submit", "503")
    big, small = large(), samples.pdf(1, tag="small")
    results = await run(emulator, [big, small], max_concurrent_requests=1)

    assert [r["success"] for r in results] == [True, True], [r["error"] for r in results]
    assert results[0]["attempts"] == 2  # the 503, then the same reference again
    stats = emulator.stats
    assert stats.storage_puts_by_digest == {digest(big): 1}
    assert stats.storage_bytes == len(big)
    assert stats.storage_key_leaks == 0
    assert stats.references_used == {"datalab://file-1": 1}
    # The job read the stored bytes; the small document went multipart, as before.
    assert stats.submissions_by_digest == {digest(big): 1, digest(small): 1}
    assert results[0]["page_count"] == 2


async def test_a_resumed_batch_reuses_the_journaled_reference(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "large.journal"
    big = large()
    emulator.faults.schedule("marker_submit", "503")
    [failed] = await run(emulator, [big], journal=journal, max_retries=0)
    assert failed["error_type"] == "server_error"
    assert emulator.stats.storage_puts_by_digest == {digest(big): 1}

    [result] = await run(emulator, [big], journal=journal)
    assert result["success"], result["error"]
    assert emulator.stats.storage_puts_by_digest == {digest(big): 1}  # not sent again
    assert file_requests(emulator) == 1
    assert emulator.stats.references_used == {"datalab://file-1": 1}


async def test_an_upload_url_refused_by_storage_is_asked_for_again(emulator: Emulator) -> None:
    big = large()
    emulator.faults.schedule("storage_put", "403")  # as storage answers an expired URL
    [result] = await run(emulator, [big])

    assert result["success"], result["error"]
    assert file_requests(emulator) == 2
    assert emulator.stats.storage_puts_by_digest == {digest(big): 1}
    assert emulator.stats.references_used == {"datalab://file-2": 1}


async def test_upload_urls_that_keep_expiring_end_the_item_bounded(emulator: Emulator) -> None:
    emulator.config.datalab_upload_url_ttl = 0.0  # expired before any PUT
    [result] = await run(emulator, [large()], max_retries=0)

    assert not result["success"] and result["attempts"] == 0  # never submitted
    assert "storage refused the upload [403]: AccessDenied" in result["error"]
    assert file_requests(emulator) == 3  # the first URL and two fresh ones
    assert not emulator.stats.storage_puts_by_digest
    assert emulator.stats.storage_key_leaks == 0


async def test_an_endpoint_refusing_references_is_sent_multipart_said_once(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.config.datalab_refuse_references = ["marker"]
    documents = [large("first"), large("second")]
    with caplog.at_level(logging.WARNING, logger="genai_coroutines.ocr"):
        results = await run(emulator, documents, max_concurrent_requests=1)

    assert [r["success"] for r in results] == [True, True], [r["error"] for r in results]
    refused = [rec for rec in caplog.records if "references_refused" in rec.getMessage()]
    assert len(refused) == 1 and "file_url must be an http or https URL." in refused[0].getMessage()
    # The first was stored before the refusal; the second went multipart straight away.
    assert emulator.stats.storage_puts_by_digest == {digest(documents[0]): 1}
    assert not emulator.stats.references_used
    assert emulator.stats.submissions_by_digest == {digest(d): 1 for d in documents}


async def test_a_journaled_reference_the_api_lost_is_stored_afresh_once(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "lost.journal"
    big = large()
    emulator.faults.schedule("marker_submit", "503")
    await run(emulator, [big], journal=journal, max_retries=0)
    emulator.datalab.files.files.clear()  # the stored file is gone: "File ... not found." (404)

    [result] = await run(emulator, [big], journal=journal, max_retries=0)
    assert result["success"], result["error"]
    assert result["attempts"] == 2  # the lost reference, then the fresh one
    assert emulator.stats.storage_puts_by_digest == {digest(big): 2}
    assert emulator.stats.references_used == {"datalab://file-1": 1}
