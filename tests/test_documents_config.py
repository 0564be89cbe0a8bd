"""DocumentConfig: the seed's parameters and defaults, validation naming the parameter,
no key in sight."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from genai_coroutines import DocumentConfig, DocumentProcessor
from genai_coroutines.documents.form import settings_fields
from tests.documents_support import config

SEED_DEFAULTS = {
    "api_url": None,  # the seed's /marker is deprecated upstream: None chooses (see below)
    "output_format": "json",
    "mode": "accurate",
    "max_concurrent_requests": 10,
    "poll_interval_secs": 2,
    "max_poll_attempts": 60,
    "max_retries": 5,
    "base_retry_delay_secs": 5,
    "jitter_percent": 200,
    "page_schema": None,
    "paginate": False,
    "page_range": None,
    "max_pages": None,
    "disable_image_extraction": False,
    "extras": None,
    "webhook_url": None,
}


def test_seed_parameters_keep_their_names_order_and_defaults() -> None:
    config = DocumentConfig(api_key="k")
    names = [f.name for f in dataclasses.fields(config)]
    assert names[: 1 + len(SEED_DEFAULTS)] == ["api_key", *SEED_DEFAULTS]
    assert {name: getattr(config, name) for name in SEED_DEFAULTS} == SEED_DEFAULTS
    assert (config.requests_per_minute, config.max_pages_in_flight) == (None, 5000)
    assert config.url == "https://www.datalab.to/api/v1/convert"


def test_seed_parameters_can_be_passed_positionally() -> None:
    config = DocumentConfig("k", "http://127.0.0.1:1/api/v1/marker", "html", "fast", 3)
    assert (config.output_format, config.mode, config.max_concurrent_requests) == (
        "html",
        "fast",
        3,
    )


def test_waits_accept_fractions_of_a_second() -> None:
    config = DocumentConfig(api_key="k", poll_interval_secs=0.01, base_retry_delay_secs=0.01)
    assert (config.poll_interval_secs, config.base_retry_delay_secs) == (0.01, 0.01)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("output_format", "pdf"),
        ("mode", "slow"),
        ("page_schema", "{not json"),
        ("extras", "{'single': 'quotes'}"),
        ("extras", "[1, 2]"),
        ("extras", '{"mode": "fast"}'),
        ("page_range", "0-"),
        ("page_range", "5-2"),
        ("page_range", "a,b"),
        ("max_pages", 0),
        ("max_pages", -3),
        ("max_concurrent_requests", 0),
        ("poll_interval_secs", 0),
        ("poll_interval_secs", -1),
        ("max_poll_attempts", 0),
        ("max_retries", -1),
        ("base_retry_delay_secs", -0.5),
        ("jitter_percent", -1),
        ("webhook_url", "ftp://example.com/hook"),
        ("webhook_url", "not a url"),
        ("api_url", "www.datalab.to/api/v1/marker"),
        ("requests_per_minute", 0),
        ("max_pages_in_flight", 0),
        ("timeout_secs", 0),
        ("segmentation_schema", "[1, 2]"),
        ("segmentation_schema", '{"segments": []}'),
        ("segmentation_schema", {"segments": [{"description": "no name"}]}),
        ("presigned_upload_min_bytes", 0),
    ],
)
def test_bad_values_raise_value_error_naming_the_parameter(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name) as caught:
        DocumentConfig(api_key="k", **{name: value})
    assert not isinstance(caught.value, TypeError)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("api_key", 123),
        ("api_url", b"https://www.datalab.to/api/v1/convert"),
        ("output_format", None),
        ("mode", 1),
        ("max_concurrent_requests", 2.5),
        ("max_concurrent_requests", "10"),
        ("poll_interval_secs", "2"),
        ("max_retries", True),
        ("page_schema", {"type": "object"}),
        ("paginate", "yes"),
        ("page_range", 5),
        ("max_pages", 1.5),
        ("disable_image_extraction", 1),
        ("extras", {"force_ocr": True}),
        ("webhook_url", 7),
        ("requests_per_minute", "60"),
        ("max_pages_in_flight", 10.0),
        ("timeout_secs", None),
        ("skip_cache", "no"),
        ("schema_id", 3),
        ("schema_version", "1"),
        ("additional_config", {"a": 1}),
        ("segmentation_schema", ["Invoice"]),
        ("segmentation_schema", {"segments": [{"name": b"bytes"}]}),
        ("presigned_upload_min_bytes", 1.5),
    ],
)
def test_a_value_of_the_wrong_type_raises_type_error_naming_the_parameter(
    name: str, value: Any
) -> None:
    """One rule with `ResponsesRequest`: a wrong type is a TypeError, not a ValueError."""
    with pytest.raises(TypeError, match=name) as caught:
        DocumentConfig(api_key="k", **{name: value})
    assert not isinstance(caught.value, ValueError)


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_API_KEY", "dl-from-env")
    assert DocumentConfig().api_key == "dl-from-env"
    monkeypatch.delenv("DATALAB_API_KEY")
    with pytest.raises(ValueError, match="api_key.*DATALAB_API_KEY"):
        DocumentConfig()


def test_repr_never_shows_the_key() -> None:
    config = DocumentConfig(api_key="dl-secret-123", page_range="0-5")
    for text in (repr(config), str(config), repr(DocumentProcessor(config))):
        assert "dl-secret-123" not in text
        assert "page_range='0-5'" in text


def test_settings_fields_send_every_setting_as_form_text() -> None:
    config = DocumentConfig(
        api_key="k",
        api_url="https://www.datalab.to/api/v1/marker",  # /extract takes no paginate
        page_schema='{"type": "object"}',
        paginate=True,
        page_range="0,2-3",
        max_pages=4,
        webhook_url="https://example.com/hook",
        extras='{"force_ocr": true, "langs": "English", "additional_config": {"a": 1}, "x": null}',
    )
    assert dict(settings_fields(config)) == {
        "output_format": "json",
        "mode": "accurate",
        "paginate": "true",
        "disable_image_extraction": "false",
        "page_schema": '{"type": "object"}',
        "page_range": "0,2-3",
        "max_pages": "4",
        "webhook_url": "https://example.com/hook",
        "force_ocr": "true",
        "langs": "English",
        "additional_config": '{"a":1}',
    }


def test_processor_needs_a_document_config() -> None:
    with pytest.raises(TypeError, match="config must be a DocumentConfig"):
        DocumentProcessor({"api_key": "k"})  # type: ignore[arg-type]


def test_a_segmentation_schema_chooses_segment_and_is_checked_against_the_endpoint() -> None:
    schema = {"segments": [{"name": "Invoice", "description": "a bill"}]}
    config = DocumentConfig(api_key="k", segmentation_schema=schema)
    assert config.url == "https://www.datalab.to/api/v1/segment"
    assert config.segmentation_schema == '{"segments":[{"name":"Invoice","description":"a bill"}]}'
    assert dict(settings_fields(config)) == {
        "mode": "accurate",
        "segmentation_schema": config.segmentation_schema,
    }  # /segment takes no output_format
    segment = "https://www.datalab.to/api/v1/segment"
    with pytest.raises(ValueError, match="segmentation_schema: /segment"):
        DocumentConfig(api_key="k", api_url=segment)
    with pytest.raises(ValueError, match="paginate"):
        DocumentConfig(api_key="k", api_url=segment, segmentation_schema=schema, paginate=True)
    with pytest.raises(ValueError, match="segmentation_schema"):
        DocumentConfig(
            api_key="k",
            api_url="https://www.datalab.to/api/v1/convert",
            segmentation_schema=schema,
        )
    with pytest.raises(ValueError, match="segments or extracts"):
        DocumentConfig(api_key="k", segmentation_schema=schema, page_schema='{"type": "object"}')
    from_checkpoint = DocumentConfig(api_key="k", segmentation_schema=schema, checkpoint_id="c1")
    assert not from_checkpoint.needs_file


@pytest.mark.parametrize(
    ("text", "kind"), [("[1, 2]", "array"), ('"a"', "string"), ("3", "number"), ("null", "null")]
)
def test_a_page_schema_that_is_json_but_not_an_object_is_refused(text: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"page_schema must be a JSON object, not a JSON {kind}"):
        config(page_schema=text)


def test_a_page_schema_with_nan_is_not_json() -> None:
    with pytest.raises(ValueError, match="page_schema is not valid JSON"):
        config(page_schema='{"type": "object", "maximum": NaN}')
    config(page_schema='{"type": "object"}')


@pytest.mark.parametrize("page_range", ["0-99999999999", "1000000", "0,5,1000000-1000001"])
def test_an_absurd_page_range_is_refused_with_the_bound(page_range: str) -> None:
    with pytest.raises(ValueError, match="page_range names page .* from 0 to 999,999"):
        config(page_range=page_range)


def test_a_page_range_up_to_the_bound_passes() -> None:
    config(page_range="0-999999")
    config(page_range="0,2,4-6")
