"""What the emulated model answers: output items, usage, the Response object and its SSE events.

Answers are deterministic: a hash of the request's model and input seeds every choice,
so the same request always gets the same text, JSON instance or tool arguments, and a
test can predict them. The rules, chosen to make client behaviour testable:

- Text answers quote the last input message: `Emulated answer to "<first 200 chars>".`
- `text.format` json_schema: a JSON instance generated from the schema (every property,
  enum/const honoured, `$ref`/`$defs` followed, first `anyOf`/`oneOf` branch, numeric
  bounds and min/max lengths kept; `pattern` is ignored). json_object: a small object.
- Function tools: `tool_choice` "required" calls the tool named in the input (else the
  first), a named function calls that one, "auto" calls a tool only when its name
  appears in the input text and no `function_call_output` is in the input yet.
- The marker `[[refuse]]` anywhere in the input yields a `refusal` content part.
- Reasoning (model "o…"/"gpt-5…" or any `reasoning` field) adds a `reasoning` item and
  `REASONING_TOKENS[effort]` reasoning tokens; a summary part when `reasoning.summary` is set.
- Tokens are estimated at 4 characters each: input = instructions + the JSON text of
  `input` (a plain string counts as itself), output = the visible text or arguments.
- `max_output_tokens` caps output tokens (reasoning first): an answer that does not fit
  ends `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"`, with the
  text cut off (so a cut JSON answer does not parse, as with the real API).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from .openai_validate import message_texts

REFUSAL_MARKER = "[[refuse]]"
REFUSAL_TEXT = "I'm sorry, but I can't help with that."
CHARS_PER_TOKEN = 4
DEFAULT_EFFORT = "medium"
REASONING_TOKENS = {
    "none": 0,
    "minimal": 8,
    "low": 32,
    "medium": 64,
    "high": 128,
    "xhigh": 256,
    "max": 512,
}
MAX_DEPTH = 6
"""Schema depth past which optional branches and arrays stay empty, so recursive schemas end."""

NewId = Callable[[str], str]
Json = dict[str, Any]


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def input_tokens(body: Json) -> int:
    """Estimated prompt tokens of a request (never below one)."""
    raw = body.get("input")
    text = raw if isinstance(raw, str) else "" if raw is None else orjson.dumps(raw).decode()
    return max(1, tokens((body.get("instructions") or "") + text))


def reasoning_effort(body: Json) -> str | None:
    """The effort a reasoning request runs at (None for non-reasoning models)."""
    reasoning = body.get("reasoning")
    if reasoning is None and not str(body.get("model")).startswith(("o", "gpt-5")):
        return None
    effort: str = (reasoning or {}).get("effort") or DEFAULT_EFFORT
    return effort


def _input_strings(raw_input: Any) -> list[str]:
    """Message texts plus tool outputs: everything the emulated model "reads"."""
    strings = message_texts(raw_input)
    for item in raw_input if isinstance(raw_input, list) else []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            strings.append(_as_text(item.get("output")))
    return strings


def _is_number(value: Any) -> bool:
    """A JSON number (draft-4 schemas use booleans for `exclusiveMinimum`; those are ignored)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class SchemaInstance:
    """Builds one JSON value valid against a JSON Schema, drawing choices from a seeded RNG."""

    def __init__(self, root: Json, rng: random.Random, words: list[str]) -> None:
        self.root = root
        self.rng = rng
        self.words = words or ["value"]

    def build(self, schema: Any, depth: int = 0, hint: str = "value") -> Any:
        if not isinstance(schema, dict):
            return hint  # `true` / `{}`: anything goes
        if "$ref" in schema:
            rest = {key: value for key, value in schema.items() if key != "$ref"}
            return self.build({**self._resolve(schema["$ref"]), **rest}, depth + 1, hint)
        if "allOf" in schema:
            merged = {key: value for key, value in schema.items() if key != "allOf"}
            for part in schema["allOf"]:
                merged.update(self._resolve(part["$ref"]) if "$ref" in part else part)
            return self.build(merged, depth, hint)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.build(self._branch(schema[key], depth), depth + 1, hint)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or ["null"]
            kind = "null" if depth >= MAX_DEPTH and "null" in kind else kinds[0]
        if kind is None:
            kind = (
                "object" if "properties" in schema else "array" if "items" in schema else "string"
            )
        return self._typed(kind, schema, depth, hint)

    def _resolve(self, ref: str) -> Json:
        """Follow a local JSON pointer such as `#/$defs/Item`; anything else resolves to `{}`."""
        target: Any = self.root
        for part in ref.removeprefix("#").strip("/").split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            elif isinstance(target, dict) and key in target:
                target = target[key]
            elif part:
                return {}
        return target if isinstance(target, dict) else {}

    def _branch(self, branches: list[Any], depth: int) -> Any:
        if depth >= MAX_DEPTH:
            for branch in branches:
                if isinstance(branch, dict) and branch.get("type") == "null":
                    return branch
        return branches[0]

    def _typed(self, kind: str, schema: Json, depth: int, hint: str) -> Any:
        if kind == "object":
            properties = schema.get("properties") or {}
            return {name: self.build(sub, depth + 1, name) for name, sub in properties.items()}
        if kind == "array":
            low = schema.get("minItems", 0)
            high = schema.get("maxItems", low + 3)
            count = (
                low
                if depth >= MAX_DEPTH
                else self.rng.randint(min(max(low, 1), high), min(high, max(low, 3)))
            )
            return [self.build(schema.get("items", {}), depth + 1, hint) for _ in range(count)]
        if kind in ("integer", "number"):
            return self._number(kind, schema)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema, hint)

    def _number(self, kind: str, schema: Json) -> int | float:
        step = 1 if kind == "integer" else 0.01
        low: float | None = schema.get("minimum")
        high: float | None = schema.get("maximum")
        exclusive_low: Any = schema.get("exclusiveMinimum")
        exclusive_high: Any = schema.get("exclusiveMaximum")
        if _is_number(exclusive_low):
            low = exclusive_low + step if low is None else max(low, exclusive_low + step)
        if _is_number(exclusive_high):
            high = exclusive_high - step if high is None else min(high, exclusive_high - step)
        if low is None:
            low = 0 if high is None or high >= 0 else high - 100
        if high is None:
            high = low + 100
        if kind == "integer":
            return self.rng.randint(math.ceil(low), math.floor(high))
        value = self.rng.uniform(low, high)
        return round(value, 2) if low <= round(value, 2) <= high else value

    def _string(self, schema: Json, hint: str) -> str:
        formats = {
            "date-time": "2024-05-17T09:30:00Z",
            "date": "2024-05-17",
            "time": "09:30:00",
            "email": f"{hint.lower()}@example.com",
            "uuid": "6f1c3a52-7a4e-4d1b-9c2e-0b5d8f3e1a27",
            "uri": "https://example.com/item",
            "ipv4": "192.0.2.1",
            "hostname": "example.com",
        }
        text = formats.get(schema.get("format", ""), self.rng.choice(self.words))
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        text = text.ljust(low, "x")
        return text if high is None else text[:high]


class Answer:
    """The emulated model's answer to one validated request body."""

    def __init__(self, body: Json, new_id: NewId, context_tokens: int = 0) -> None:
        self.body = body
        self.new_id = new_id
        strings = _input_strings(body.get("input"))
        self.text = "\n".join(strings)
        seed = hashlib.sha256(orjson.dumps([body.get("model"), body.get("input")])).digest()
        self.rng = random.Random(int.from_bytes(seed[:8], "big"))
        self.words = re.findall(r"[A-Za-z][A-Za-z0-9]{2,}", self.text)[:200]
        self.last_message = " ".join((message_texts(body.get("input")) or [""])[-1].split())
        self.context_tokens = context_tokens
        self.refusal = REFUSAL_MARKER in self.text
        self.call = None if self.refusal else self._pick_tool()

    def build(self) -> tuple[list[Json], Json, str | None]:
        """Output items, usage and the incomplete reason (None when the answer fits)."""
        budget: int | None = self.body.get("max_output_tokens")
        effort = reasoning_effort(self.body)
        reasoning_tokens = REASONING_TOKENS.get(effort, 0) if effort else 0
        output: list[Json] = []
        if effort not in (None, "none"):
            output.append(self._reasoning_item())
        visible = self._visible()
        visible_tokens = tokens(visible)
        cut = budget is not None and reasoning_tokens + visible_tokens > budget
        if budget is not None and cut:
            reasoning_tokens = min(reasoning_tokens, budget)
            visible_tokens = budget - reasoning_tokens
            visible = visible[: visible_tokens * CHARS_PER_TOKEN]
        if visible:
            output.append(self._item(visible, cut))
        output_tokens = reasoning_tokens + visible_tokens
        prompt = input_tokens(self.body) + self.context_tokens
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": self.context_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt + output_tokens,
        }
        return output, usage, "max_output_tokens" if cut else None

    def _pick_tool(self) -> Json | None:
        """The function tool this answer calls, per the rules in the module docstring."""
        functions: list[Json] = [
            t for t in self.body.get("tools") or [] if t.get("type") == "function"
        ]
        choice = self.body.get("tool_choice", "auto")
        if isinstance(choice, dict):
            if choice.get("type") == "function":
                return next(t for t in functions if t["name"] == choice["name"])
            if choice.get("type") != "allowed_tools":
                return None
            allowed = {
                t.get("name") for t in choice.get("tools", []) if t.get("type") == "function"
            }
            functions = [t for t in functions if t["name"] in allowed]
            choice = choice.get("mode", "auto")
        mentioned = [t for t in functions if t["name"] in self.text]
        if choice == "required" and functions:
            return (mentioned or functions)[0]
        raw_input = self.body.get("input")
        answered = isinstance(raw_input, list) and any(
            isinstance(item, dict) and item.get("type") == "function_call_output"
            for item in raw_input
        )
        return mentioned[0] if choice == "auto" and mentioned and not answered else None

    def _visible(self) -> str:
        """The text the answer shows: refusal, tool arguments, JSON or prose."""
        if self.refusal:
            return REFUSAL_TEXT
        if self.call is not None:
            schema = self.call.get("parameters") or {"type": "object", "properties": {}}
            return orjson.dumps(SchemaInstance(schema, self.rng, self.words).build(schema)).decode()
        fmt = (self.body.get("text") or {}).get("format") or {"type": "text"}
        if fmt["type"] == "json_schema":
            instance = SchemaInstance(fmt["schema"], self.rng, self.words).build(fmt["schema"])
            return orjson.dumps(instance).decode()
        if fmt["type"] == "json_object":
            return orjson.dumps({"answer": self._prose(), "words": len(self.text.split())}).decode()
        return self._prose()

    def _prose(self) -> str:
        return f'Emulated answer to "{self.last_message[:200]}".'

    def _item(self, visible: str, cut: bool) -> Json:
        status = "incomplete" if cut else "completed"
        if self.call is not None:
            return {
                "id": self.new_id("fc"),
                "type": "function_call",
                "status": status,
                "arguments": visible,
                "call_id": self.new_id("call"),
                "name": self.call["name"],
            }
        part: Json = (
            {"type": "refusal", "refusal": visible}
            if self.refusal
            else {"type": "output_text", "annotations": [], "logprobs": [], "text": visible}
        )
        return {
            "id": self.new_id("msg"),
            "type": "message",
            "status": status,
            "content": [part],
            "role": "assistant",
        }

    def _reasoning_item(self) -> Json:
        item: Json = {"id": self.new_id("rs"), "type": "reasoning", "summary": []}
        summary = (self.body.get("reasoning") or {}).get("summary")
        if summary is not None:
            words = "the request" if summary == "concise" else f'"{self.last_message[:80]}"'
            item["summary"] = [
                {
                    "type": "summary_text",
                    "text": f"**Reading the input**\n\nI considered {words} and wrote an answer.",
                }
            ]
        if "reasoning.encrypted_content" in (self.body.get("include") or []):
            item["encrypted_content"] = "gAAAAA" + self.rng.randbytes(48).hex()
        return item


def chunks(text: str) -> list[str]:
    """Split text into word-sized deltas (long runs in pieces of 8), which rejoin to `text`."""
    return re.findall(r"\s*\S{1,8}|\s+", text)


def stream_events(response: Json) -> Iterator[Json]:
    """The SSE event sequence the real API sends for `response`, ending with its terminal event."""
    counter = itertools.count()

    def event(kind: str, **fields: Any) -> Json:
        return {"type": kind, "sequence_number": next(counter), **fields}

    pending = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    for index, item in enumerate(response["output"]):
        yield from _item_events(event, index, item)
    terminal = "response.completed" if response["status"] == "completed" else "response.incomplete"
    yield event(terminal, response=response)


def _item_events(event: Callable[..., Json], index: int, item: Json) -> Iterator[Json]:
    """One output item: added (still empty), its parts and deltas, then done (whole)."""
    at = {"item_id": item["id"], "output_index": index}
    if item["type"] == "reasoning":
        yield event("response.output_item.added", output_index=index, item={**item, "summary": []})
        for number, part in enumerate(item["summary"]):
            where = {**at, "summary_index": number}
            yield event("response.reasoning_summary_part.added", **where, part={**part, "text": ""})
            for piece in chunks(part["text"]):
                yield event("response.reasoning_summary_text.delta", **where, delta=piece)
            yield event("response.reasoning_summary_text.done", **where, text=part["text"])
            yield event("response.reasoning_summary_part.done", **where, part=part)
    elif item["type"] == "function_call":
        added = {**item, "status": "in_progress", "arguments": ""}
        yield event("response.output_item.added", output_index=index, item=added)
        for piece in chunks(item["arguments"]):
            yield event("response.function_call_arguments.delta", **at, delta=piece)
        yield event("response.function_call_arguments.done", **at, arguments=item["arguments"])
    else:
        added = {**item, "status": "in_progress", "content": []}
        yield event("response.output_item.added", output_index=index, item=added)
        for number, part in enumerate(item["content"]):
            yield from _part_events(event, {**at, "content_index": number}, part)
    yield event("response.output_item.done", output_index=index, item=item)


def _part_events(event: Callable[..., Json], where: Json, part: Json) -> Iterator[Json]:
    """A content part: `output_text` streams text deltas (with logprobs), `refusal` refusal ones."""
    extra: Json = {}
    field, prefix = "refusal", "response.refusal"
    if part["type"] == "output_text":
        field, prefix, extra = "text", "response.output_text", {"logprobs": []}
    yield event("response.content_part.added", **where, part={**part, field: ""})
    for piece in chunks(part[field]):
        yield event(f"{prefix}.delta", **where, delta=piece, **extra)
    yield event(f"{prefix}.done", **where, **{field: part[field]}, **extra)
    yield event("response.content_part.done", **where, part=part)
