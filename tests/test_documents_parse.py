"""parse_documents on each payload shape, and the page budget a job reserves."""

from __future__ import annotations

import json
from typing import Any

import pytest

from genai_coroutines import DocumentConfig, parse_documents
from genai_coroutines.documents.job import page_weight
from genai_coroutines.documents.sources import Upload


def ok(payload: Any) -> dict[str, Any]:
    return {"success": True, "json_response": json.dumps(payload)}


def ref(block_id: str) -> str:
    return f"<content-ref src='{block_id}'></content-ref>"


NESTED_JSON = {
    "status": "complete",
    "json": {
        "children": [
            {
                "id": "/page/0/Page/0",
                "html": ref("/page/0/Text/0") + ref("/page/0/List/1"),
                "children": [
                    {"id": "/page/0/Text/0", "html": "<p>Hello</p>", "children": None},
                    {
                        "id": "/page/0/List/1",
                        "html": "<ul>" + ref("/page/0/Item/2") + "</ul>",
                        "children": [{"id": "/page/0/Item/2", "html": "<li>one</li>"}],
                    },
                ],
            },
            {"id": "/page/1/Page/1", "html": "<p>Plain page</p>", "children": []},
        ]
    },
}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (NESTED_JSON, "<p>Hello</p><ul><li>one</li></ul>\n<p>Plain page</p>"),
        ({"status": "complete", "html": "<h1>T</h1>"}, "<h1>T</h1>"),
        ({"status": "complete", "markdown": "# T\n\ntext"}, "# T\n\ntext"),
        (
            {"chunks": {"blocks": [{"html": "<p>a</p>"}, {"html": ""}, {"html": "<p>b</p>"}]}},
            "<p>a</p>\n<p>b</p>",
        ),
        ({"pages": [{"html": "<p>1</p>"}, {"markdown": "two"}, "three"]}, "<p>1</p>\ntwo\nthree"),
        (
            {"json": NESTED_JSON["json"], "extraction_schema_json": '{"name": "Ada"}'},
            '{"name": "Ada"}',
        ),
    ],
)
def test_each_payload_shape(payload: dict[str, Any], expected: str) -> None:
    assert parse_documents([ok(payload)]) == [expected]


def test_failed_items_give_empty_strings_and_unknown_shapes_the_raw_json() -> None:
    unknown = ok({"status": "complete", "something_new": [1, 2]})
    results = [
        {"success": False, "error": "boom", "json_response": None},
        unknown,
        {"success": True, "json_response": "not json at all"},
        {"success": True, "json_response": None},
    ]
    assert parse_documents(results) == ["", unknown["json_response"], "not json at all", ""]


@pytest.mark.parametrize(
    ("pages", "options", "expected"),
    [
        (10, {}, 10),
        (10, {"max_pages": 4}, 4),
        (10, {"page_range": "0-5", "max_pages": 2}, 6),  # page_range wins, as on Datalab
        (3, {"page_range": "0-5"}, 3),
        (3, {"page_range": "0,0-1,7"}, 2),
        (None, {}, 1),
        (None, {"max_pages": 6}, 6),
        (None, {"page_range": "0-999999"}, 1),
        (None, {"page_range": "0-2", "max_pages": 8}, 3),
    ],
)
def test_page_budget(pages: int | None, options: dict[str, Any], expected: int) -> None:
    config = DocumentConfig(api_key="k", **options)
    assert page_weight(Upload(b"x", "d", "application/pdf", pages=pages), config) == expected
