"""`parse_responses` and `parse_responses_as`: what every kind of output yields."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from genai_coroutines import parse_responses
from genai_coroutines.emulator import Emulator
from genai_coroutines.parsing import parse_responses as parse_responses_from_parsing
from genai_coroutines.responses import parse_responses_as
from tests.responses_support import run


def ok(*output: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = {"id": "resp_1", "status": "completed", "output": list(output), **fields}
    return {"success": True, "raw_response": orjson.dumps(response).decode(), "usage": {}}


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "output_text", "text": value, "annotations": []}


REASONING = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking..."}]}
CALL = {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c1"}
REFUSAL = {"type": "refusal", "refusal": "I can't help with that."}
FAILED = {"success": False, "error": "500 Internal Server Error", "attempts": 3}


def test_each_kind_of_output() -> None:
    cases = [
        (ok(message(text("Hello, "), text("world"))), "Hello, world"),
        (ok(message(text("a")), message(text("b"))), "ab"),
        (ok(REASONING, message(text("answer"))), "answer"),
        (ok(REASONING), ""),
        (ok(), ""),
        (ok(CALL, message(text("and some text"))), "and some text"),
        (FAILED, ""),
    ]
    results = [result for result, _ in cases]
    assert parse_responses({"results": results}) == [expected for _, expected in cases]


def test_tool_calls_refusals_and_unknown_items_return_the_raw_json() -> None:
    for result in (
        ok(CALL),
        ok(message(REFUSAL)),
        ok({"type": "web_search_call", "id": "ws_1", "status": "completed"}),
    ):
        [parsed] = parse_responses([result])
        assert parsed == result["raw_response"]


def test_raw_response_that_is_not_json_is_returned_as_is() -> None:
    assert parse_responses([{"success": True, "raw_response": "plain"}]) == ["plain"]


def test_seed_import_path_is_the_same_function() -> None:
    assert parse_responses_from_parsing is parse_responses


class Answer(BaseModel):
    answer: str
    words: int


async def test_against_the_emulator_refusal_truncation_and_models(emulator: Emulator) -> None:
    emulator.faults.schedule("responses", "400")
    results = await run(
        emulator,
        ["fails", "please JSON", "JSON please [[refuse]]"],
        response_format={"type": "json_object"},
        max_concurrent_requests=1,
    )
    failed, answered, refused = parse_responses(results)
    assert failed == ""
    assert Answer.model_validate_json(answered).answer.startswith("Emulated answer")
    assert orjson.loads(refused)["output"][0]["content"][0]["type"] == "refusal"
    assert parse_responses_as(results, Answer) == [None, Answer.model_validate_json(answered), None]

    cut = await run(emulator, ["a long question " * 20], max_output_tokens=16)
    response = orjson.loads(cut["results"][0]["raw_response"])
    assert response["status"] == "incomplete"
    partial = parse_responses(cut)[0]
    assert partial and 'Emulated answer to "a long question'.startswith(partial[:30])
