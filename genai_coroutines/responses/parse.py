"""Clean text (or pydantic models) out of a batch's results.

`parse_responses` returns one string per result, in order:

==========================================  ==============================================
The response holds                          The string
==========================================  ==============================================
message text (`output_text` parts)          all of it, joined without separators (as the
                                            SDK's `output_text`), partial text included
                                            when `status` is "incomplete"
no text, but tool calls, a refusal or       the raw response JSON, so tool calls and the
any other output item                       refusal can be inspected and nothing is lost
only reasoning items (summaries), or        "" (reasoning is never the answer)
no output at all
a failed item                               ""
==========================================  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

if TYPE_CHECKING:
    from pydantic import BaseModel

Results = Mapping[str, Any] | Iterable[Mapping[str, Any]]
"""What `process_batch` returns, or its `results` list (or any iterable of result dicts)."""

M = TypeVar("M", bound="BaseModel")


def parse_responses(results: Results) -> list[str]:
    """The assistant's text for every result, in order ("" for failures); see the module doc."""
    return [_text_of(result) for result in _items(results)]


def parse_responses_as(results: Results, model: type[M]) -> list[M | None]:
    """Every result's text validated into `model` (a pydantic model class).

    None stands for an item that failed, was refused, called tools instead of
    answering, or whose text does not validate, so one bad item never costs the others.
    """
    import pydantic

    parsed: list[M | None] = []
    for text in parse_responses(results):
        try:
            parsed.append(model.model_validate_json(text) if text else None)
        except pydantic.ValidationError:
            parsed.append(None)
    return parsed


def _items(results: Results) -> Iterable[Mapping[str, Any]]:
    if isinstance(results, Mapping):
        items: Iterable[Mapping[str, Any]] = results["results"]
        return items
    return results


def _text_of(result: Mapping[str, Any]) -> str:
    raw = result.get("raw_response")
    if not result.get("success") or not isinstance(raw, str):
        return ""
    return answer_text(raw)


def answer_text(raw: str) -> str:
    """The assistant's text of one response, from its raw JSON (`Answer.raw`)."""
    try:
        response = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    output = response.get("output") if isinstance(response, dict) else None
    texts: list[str] = []
    other = False
    for item in output if isinstance(output, list) else ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                else:
                    other = True
        elif kind != "reasoning":
            other = True
    if texts:
        return "".join(texts)
    return raw if other else ""
