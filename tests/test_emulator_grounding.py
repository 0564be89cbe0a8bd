"""Structured outputs grounded in the input text: the emulated model is a deterministic
extractor, so a schema is filled with what the text states and only the rest is made up.

`schema_fill.instance(..., text=...)` is checked directly, then end to end: each bundled
sample is OCR'd by the emulated Datalab `/convert` and its markdown sent to the emulated
`/v1/responses` with an invoice schema, which must answer the invoice's real values.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import jsonschema  # type: ignore[import-untyped]
import orjson
import pytest

from genai_coroutines.emulator import Emulator
from genai_coroutines.emulator.schema_fill import instance
from tests.pipeline_support import INVOICE_SCHEMA

TRUTH = {
    "invoice-acme.pdf": {
        "vendor": "ACME Supplies Ltd",
        "invoice_number": "INV-1042",
        "date": "2026-10-03",
        "total": 320.0,
        "currency": "EUR",
    },
    "invoice-globex.pdf": {
        "vendor": "Globex Corporation",
        "invoice_number": "G-77",
        "date": "2026-09-18",
        "total": 14400.0,
        "currency": "USD",
    },
    "receipt-initech.pdf": {
        "vendor": "Initech",
        "invoice_number": "5531",
        "date": "2026-11-02",
        "total": 45.0,
        "currency": "USD",
    },
}


def fill(schema: dict[str, Any], text: str | None, seed: int = 7) -> Any:
    value = instance(schema, random.Random(seed), ["alpha", "beta"], text=text)
    jsonschema.validate(value, schema)
    return value


def one(name: str, schema: dict[str, Any], text: str) -> Any:
    """The value `text` gives the single property `name`."""
    return fill({"type": "object", "properties": {name: schema}, "required": [name]}, text)[name]


# -- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Invoice number: A-17",
        "INVOICE NUMBER: A-17",
        "invoice_number: A-17",
        "Invoice No.: A-17",
        "Invoice #: A-17",
        "Customer: Ada - Invoice A-17",
        "| Invoice number | A-17 |",
        "<p><strong>Invoice number:</strong> A-17</p>",
        "**Invoice number:** A-17",
    ],
)
def test_a_label_names_its_field(text: str) -> None:
    assert one("invoice_number", {"type": "string"}, text) == "A-17"


def test_the_best_label_wins_not_the_first() -> None:
    text = "Subtotal: 10.00\nInvoice date: 2026-01-05\nTotal due: 12.00 EUR\nTotal: 12.50"
    assert one("total", {"type": "number"}, text) == 12.5  # same words beat "Total due"
    assert one("total_amount", {"type": "number"}, "Subtotal: 10.00\nTotal due: 12.00") == 12.0
    assert one("invoice_number", {"type": "string"}, text) != "2026-01-05"  # "date" ≠ "number"


def test_title_and_description_name_a_field_too() -> None:
    text = "Balance: 3.00\nAmount payable: 12.50\nRef: Q-9"
    described = {"type": "number", "description": "Amount payable"}
    assert one("x", described, text) == 12.5
    assert one("y", {"type": "string", "title": "Ref"}, text) == "Q-9"


def test_nested_objects_are_grounded() -> None:
    schema = {
        "type": "object",
        "properties": {
            "customer": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "city": {"type": "string"}},
                "required": ["name", "city"],
            }
        },
        "required": ["customer"],
    }
    text = "Name: Ada Lovelace\nCity: London"
    assert fill(schema, text)["customer"] == {"name": "Ada Lovelace", "city": "London"}


# -- kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Date: 2026-10-03",
        "Date: 2026/10/03",
        "Date: 03.10.2026",
        "Date: 03/10/2026",
        "Date: 3 October 2026",
        "Date: 3rd Oct. 2026",
        "Date: October 3, 2026",
        "Issued on 3 October 2026 in Utrecht",
        "Date 2026-10-03",
    ],
)
def test_dates_are_iso_normalised(text: str) -> None:
    assert one("date", {"type": "string", "format": "date"}, text) == "2026-10-03"


def test_month_first_when_day_first_is_no_date() -> None:
    assert one("date", {"type": "string", "format": "date"}, "Date: 10/23/2026") == "2026-10-23"
    stamp = {"type": "string", "format": "date-time"}
    assert one("created", stamp, "Created: 2026-10-03 09:30") == "2026-10-03T09:30:00Z"
    assert one("created", stamp, "Created: 2026-10-03") == "2026-10-03T00:00:00Z"


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("Total: 14,400.00 USD", 14400.0),
        ("Total: 1.234,56 EUR", 1234.56),
        ("Total: € 99", 99.0),
        ("Total: $1,000", 1000.0),
        ("Total: -5.25", -5.25),
        ("Gloves x 40 ... 320.00 EUR", 320.0),  # no label: the first amount of money
    ],
)
def test_amounts(text: str, amount: float) -> None:
    assert one("total", {"type": "number"}, text) == amount


def test_integers_and_bounds() -> None:
    assert one("quantity", {"type": "integer"}, "Quantity: 40 boxes") == 40
    assert one("quantity", {"type": "integer"}, "Quantity: 4.5") != 4.5
    bounded = {"type": "number", "maximum": 100}
    assert one("total", bounded, "Total: 320.00") != 320.0  # out of bounds: made up
    stepped = {"type": "number", "multipleOf": 0.5}
    assert one("total", stepped, "Total: 12.25\nTotal: 12.50") == 12.5


def test_enums_and_currencies() -> None:
    status = {"type": "string", "enum": ["draft", "sent", "paid"]}
    assert one("status", status, "This invoice was sent on Monday; it is not paid.") == "sent"
    assert one("status", status, "Status: PAID") == "paid"
    currency = {"type": "string", "enum": ["EUR", "USD", "GBP"]}
    assert one("currency", currency, "Total: £12.00") == "GBP"
    assert one("currency", currency, "Paid 12.00 USD, i.e. about 11 EUR") == "USD"
    assert one("currency", {"type": "string"}, "Try to pay 5 CHF") == "CHF"  # not "Try"


def test_booleans_emails_and_urls() -> None:
    assert one("paid", {"type": "boolean"}, "Paid: yes") is True
    assert one("paid", {"type": "boolean"}, "Paid: no") is False
    email = {"type": "string", "format": "email"}
    assert one("contact", email, "Questions? Mail billing@acme.example today") == (
        "billing@acme.example"
    )
    uri = {"type": "string", "format": "uri"}
    assert one("site", uri, "Site: https://acme.example/pay now") == "https://acme.example/pay"


def test_string_limits_and_patterns_are_kept() -> None:
    assert one("code", {"type": "string", "maxLength": 4}, "Code: ABCDEFG") == "ABCD"
    assert one("code", {"type": "string", "minLength": 5}, "Code: AB") != "AB"
    patterned = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[0-9]+$"}},
    }
    value = instance(patterned, random.Random(1), ["alpha"], text="Code: AB")
    assert value == {"code": "alpha"}  # made up, and made-up strings ignore patterns


def test_vendor_and_document_number_from_the_header() -> None:
    text = "Initech - Receipt 5531\nDate: 2026-11-02"
    schema = {
        "type": "object",
        "properties": {"vendor": {"type": "string"}, "document_number": {"type": "string"}},
        "required": ["vendor", "document_number"],
    }
    assert fill(schema, text) == {"vendor": "Initech", "document_number": "5531"}
    assert one("vendor", {"type": "string"}, "Supplier: Foo GmbH\nBill to: Bar BV") == "Foo GmbH"


def test_what_the_text_does_not_state_is_generated_as_without_text() -> None:
    schema = {
        "type": "object",
        "properties": {
            "colour": {"type": "string"},
            "count": {"type": "integer", "minimum": 1, "maximum": 9},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["colour", "count", "flag", "tags"],
    }
    text = "Nothing here names any of those fields: 12 apples."
    assert fill(schema, text) == fill(schema, None)
    assert fill(schema, text) == fill(schema, text)  # deterministic
    assert fill(schema, text)["colour"] in ("alpha", "beta")


def test_emulator_placeholders_are_not_content() -> None:
    text = "[emulated OCR: no text layer] Page 0 of scan.png, digest ab12."
    assert one("vendor", {"type": "string"}, text) in ("alpha", "beta")


# -- end to end: Datalab OCR, then a json_schema response ----------------------------------


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def ocr(http: aiohttp.ClientSession, emulator: Emulator, name: str) -> str:
    data = (resources.files("genai_coroutines") / "samples" / name).read_bytes()
    body = aiohttp.FormData()
    body.add_field("file", data, filename=name, content_type="application/pdf")
    body.add_field("output_format", "markdown")
    headers = {"X-Api-Key": emulator.config.datalab_api_key}
    url = f"{emulator.datalab_base_url}/api/v1/convert"
    async with http.post(url, data=body, headers=headers) as response:
        assert response.status == 200
        check_url = (await response.json())["request_check_url"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        async with http.get(check_url, headers=headers) as response:
            result = await response.json()
        if result["status"] == "complete":
            markdown: str = result["markdown"]
            return markdown
        await asyncio.sleep(0.005)
    raise AssertionError("conversion did not finish")


async def respond(
    http: aiohttp.ClientSession, emulator: Emulator, text: str, instructions: str
) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "instructions": instructions,
        "input": [{"role": "user", "content": text}],
        "text": {
            "format": {
                "type": "json_schema",
                "name": "invoice",
                "schema": INVOICE_SCHEMA,
                "strict": True,
            }
        },
    }
    headers = {"Authorization": f"Bearer {emulator.config.openai_api_key}"}
    url = f"{emulator.openai_base_url}/responses"
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    [message] = [item for item in answer["output"] if item["type"] == "message"]
    value: dict[str, Any] = orjson.loads(message["content"][0]["text"])
    jsonschema.validate(value, INVOICE_SCHEMA)
    return value


@pytest.mark.parametrize("name", sorted(TRUTH))
async def test_ocr_then_extraction_gets_the_real_values(
    emulator: Emulator, http: aiohttp.ClientSession, name: str
) -> None:
    truth = TRUTH[name]
    markdown = await ocr(http, emulator, name)
    for value in truth.values():
        shown = f"{value:,.2f}" if isinstance(value, float) else value
        assert shown in markdown
    answer = await respond(http, emulator, markdown, "Extract the invoice fields.")
    assert answer == truth


async def test_instructions_count_after_the_input(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    text = "Vendor: Hooli\nInvoice number: H-1\nDate: 2026-01-02\nTotal: 5.00"
    answer = await respond(http, emulator, text, "Currency: GBP unless the text says otherwise.")
    assert answer["currency"] == "GBP" and answer["vendor"] == "Hooli"
    said = await respond(http, emulator, text + "\nCurrency: USD", "Currency: GBP unless stated.")
    assert said["currency"] == "USD"  # two labels: the input's comes first
