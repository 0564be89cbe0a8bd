"""What reaches Datalab: every output format and parameter, every kind of input, and
what `parse_documents` makes of each answer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest

from genai_coroutines import DocumentConfig, DocumentProcessor, parse_documents
from genai_coroutines.documents.parse import segment_pages
from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.state import digest
from tests import samples
from tests.documents_support import accepted_forms, config_for


async def test_every_parameter_reaches_the_wire(emulator: Emulator) -> None:
    schema = json.dumps({"type": "object", "properties": {"title": {"type": "string"}}})
    config = config_for(
        emulator,
        output_format="markdown",
        mode="balanced",
        page_schema=schema,
        paginate=True,
        page_range="0,2-3",
        max_pages=3,
        disable_image_extraction=True,
        webhook_url="http://127.0.0.1:9/hook",
        extras=json.dumps({"force_ocr": True, "langs": "English", "add_block_ids": False}),
    )
    [result] = await DocumentProcessor(config).process_multiparts([samples.pdf(5)])

    assert result["success"], result["error"]
    assert accepted_forms(emulator) == [
        {
            "output_format": "markdown",
            "mode": "balanced",
            "paginate": "true",
            "disable_image_extraction": "true",
            "page_schema": schema,
            "page_range": "0,2-3",
            "max_pages": "3",
            "webhook_url": "http://127.0.0.1:9/hook",
            "force_ocr": "true",
            "langs": "English",
            "add_block_ids": "false",
        }
    ]
    assert result["page_count"] == 3  # pages 0, 2 and 3: page_range wins over max_pages


@pytest.mark.parametrize("output_format", ["json", "html", "markdown", "chunks"])
@pytest.mark.parametrize("paginate", [False, True])
async def test_each_output_format_is_asked_for_and_parsed(
    emulator: Emulator, output_format: str, paginate: bool
) -> None:
    config = config_for(emulator, output_format=output_format, paginate=paginate)
    document = samples.pdf(2, tag=output_format)
    results = await DocumentProcessor(config).process_multiparts([document])
    [text] = parse_documents(results)

    assert accepted_forms(emulator)[0]["output_format"] == output_format
    assert accepted_forms(emulator)[0]["paginate"] == str(paginate).lower()
    payload = json.loads(results[0]["json_response"])
    assert payload["output_format"] == output_format and output_format in payload
    for page in (0, 1):
        assert f"Page {page} of document.pdf, digest {digest(document)}." in text
    assert "content-ref" not in text and '"status"' not in text
    if paginate and output_format == "markdown":
        assert "{1}" + "-" * 48 in text


async def test_page_schema_results_parse_to_the_extraction_json(emulator: Emulator) -> None:
    schema = {
        "type": "object",
        "properties": {"patient_name": {"type": "string"}, "diagnosis": {"type": "string"}},
        "required": ["patient_name", "diagnosis"],
    }
    config = config_for(emulator, page_schema=json.dumps(schema))
    results = await DocumentProcessor(config).process_multiparts([samples.pdf(1)])
    [text] = parse_documents(results)

    jsonschema.validate(json.loads(text), schema)
    assert text == json.loads(results[0]["json_response"])["extraction_schema_json"]


async def test_results_carry_the_seed_fields_and_more(emulator: Emulator) -> None:
    results = await DocumentProcessor(config_for(emulator)).process_multiparts(
        [samples.pdf(3), samples.png()]
    )
    for index, (result, pages) in enumerate(zip(results, (3, 1), strict=True)):
        payload = orjson.loads(result["json_response"])
        assert payload["status"] == "complete"
        assert result["index"] == index and result["success"] and result["error"] is None
        assert result["cost_breakdown"] == payload["cost_breakdown"]
        assert result["cost_breakdown"]["final_cost_cents"] > 0
        assert result["processing_time_secs"] > 0
        assert result["page_count"] == pages and result["attempts"] == 1
        assert payload["status"] and result["request_id"]


async def test_paths_open_files_and_urls_in_one_batch(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scan = tmp_path / "scan"  # no suffix: the detected one is added
    scan.write_bytes(samples.png(tag="path"))
    report = tmp_path / "report.pdf"
    report.write_bytes(samples.pdf(2, tag="file"))
    url = "https://files.example.com/doc.pdf?X-Amz-Signature=very-secret"
    caplog.set_level(logging.DEBUG, logger="genai_coroutines")

    with report.open("rb") as handle:
        results = await DocumentProcessor(config_for(emulator)).process(
            [str(scan), handle, url, samples.jpeg(tag="bytes"), tmp_path / "missing.pdf"]
        )

    assert [r["success"] for r in results] == [True, True, True, True, False]
    assert results[4]["error_type"] == "read_error" and "missing.pdf" in results[4]["error"]
    assert results[4]["attempts"] == 0
    seen = [s for s in emulator.stats.received if s.get("status") == 200]
    assert {(s["filename"], s["content_type"]) for s in seen} == {
        ("scan.png", "image/png"),
        ("report.pdf", "application/pdf"),
        (None, None),  # the URL: Datalab fetches it
        ("document.jpg", "image/jpeg"),
    }
    assert [s["form"]["file_url"] for s in seen if "file_url" in s["form"]] == [url]
    assert "very-secret" not in caplog.text


async def test_files_are_read_only_when_their_turn_comes(
    emulator: Emulator, tmp_path: Path
) -> None:
    paths = [tmp_path / f"doc{i}.pdf" for i in range(4)]
    paths[0].write_bytes(samples.pdf(1, tag="0"))

    class WritesTheNextFile(DocumentProcessor):
        def on_submitted(self, index: int, request_id: str, request_check_url: str) -> None:
            if index + 1 < len(paths):
                paths[index + 1].write_bytes(samples.pdf(1, tag=str(index + 1)))

    processor = WritesTheNextFile(config_for(emulator, max_concurrent_requests=1))
    results = await processor.process(iter(paths))
    assert [r["success"] for r in results] == [True] * 4, [r["error"] for r in results]


async def test_non_bytes_item_raises_naming_its_index_before_anything_is_sent(
    emulator: Emulator,
) -> None:
    """A wrong type is a TypeError, an empty document a ValueError (the package's rule)."""
    processor = DocumentProcessor(config_for(emulator))
    with pytest.raises(TypeError, match=r"multiparts\[1\] is not bytes"):
        await processor.process_multiparts([samples.pdf(1), "report.pdf", samples.png()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="multiparts must be a list of bytes"):
        await processor.process_multiparts(samples.pdf(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"multiparts\[0\] is empty"):
        await processor.process_multiparts([b""])
    with pytest.raises(TypeError, match=r"inputs\[2\] is int"):
        await processor.process([samples.pdf(1), samples.png(), 42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="inputs must be a list of documents"):
        await processor.process(samples.pdf(1))  # type: ignore[arg-type]
    assert emulator.stats.total("marker_submit") == 0


async def test_keys_stay_out_of_logs_and_errors(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="genai_coroutines")
    key = emulator.config.datalab_api_key
    emulator.faults.schedule("marker_poll", "503")
    good = await DocumentProcessor(config_for(emulator)).process_multiparts(
        [samples.pdf(1, extra=samples.FAIL_MARKER), samples.pdf(1)]
    )
    bad_key = DocumentConfig(api_key="dl-wrong-key", api_url=emulator.marker_url)
    bad = await DocumentProcessor(bad_key).process_multiparts([samples.pdf(1)])

    assert bad[0]["error_type"] == "authentication_error"
    text = caplog.text + repr(good) + repr(bad)
    assert key not in text and "dl-wrong-key" not in text


async def test_inputs_may_come_from_an_async_iterable(emulator: Emulator) -> None:
    documents = [samples.png(tag=str(i)) for i in range(5)]

    async def arriving() -> AsyncIterator[bytes]:
        for document in documents:
            yield document

    results = await DocumentProcessor(config_for(emulator, max_concurrent_requests=2)).process(
        arriving()
    )
    texts = parse_documents(results)
    assert [f"digest {digest(d)}." in text for d, text in zip(documents, texts, strict=True)] == [
        True
    ] * 5


SECTIONS = {
    "segments": [
        {"name": "Invoice", "description": "an invoice"},
        {"name": "Receipt", "description": "a receipt"},
    ]
}


@pytest.mark.parametrize("named_by", ["pages", "page_range"])
async def test_segment_results_carry_the_segments_as_datalab_names_them(
    emulator: Emulator, named_by: str
) -> None:
    emulator.config.datalab_segment_pages = named_by  # type: ignore[assignment]
    config = DocumentConfig(
        api_key=emulator.config.datalab_api_key,
        api_url=f"{emulator.datalab_base_url}/api/v1/segment",
        segmentation_schema=SECTIONS,  # a dict, sent as its JSON
        poll_interval_secs=0.01,
    )
    [result] = await DocumentProcessor(config).process([samples.bundle()])

    assert result["success"], result["error"]
    [sent] = accepted_forms(emulator)
    assert sent == {
        "mode": "accurate",
        "segmentation_schema": json.dumps(SECTIONS, separators=(",", ":")),
    }
    names = [segment["name"] for segment in result["segments"]]
    assert names == ["Invoice", "Receipt"]
    assert {named_by} <= result["segments"][0].keys()  # as the API returned them
    assert [segment_pages(segment) for segment in result["segments"]] == [[0, 1], [2, 3, 4]]
    assert orjson.loads(parse_documents([result])[0])["segments"] == result["segments"]


async def test_segment_from_a_checkpoint_reads_the_parse_again_without_parsing(
    emulator: Emulator,
) -> None:
    data = samples.bundle()
    convert = DocumentConfig(
        api_key=emulator.config.datalab_api_key,
        api_url=f"{emulator.datalab_base_url}/api/v1/convert",
        save_checkpoint=True,
        poll_interval_secs=0.01,
    )
    [converted] = await DocumentProcessor(convert).process([data])
    checkpoint = orjson.loads(converted["json_response"])["checkpoint_id"]
    segment = DocumentConfig(
        api_key=emulator.config.datalab_api_key,
        api_url=f"{emulator.datalab_base_url}/api/v1/segment",
        segmentation_schema=json.dumps(SECTIONS),
        checkpoint_id=checkpoint,
        poll_interval_secs=0.01,
    )
    [result] = await DocumentProcessor(segment).process([None])

    assert result["success"], result["error"]
    assert [s["name"] for s in result["segments"]] == ["Invoice", "Receipt"]
    assert emulator.stats.parses_by_digest == {digest(data): 1}
    assert emulator.stats.checkpoint_reads_by_digest == {digest(data): 1}
    assert orjson.loads(result["json_response"])["cost_breakdown"]["operations"] == {"segment": 1.0}
