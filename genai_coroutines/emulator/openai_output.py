"""What the emulated model answers: output items, usage, the Response object and its SSE events.

Answers are deterministic: a hash of the request's model and input seeds every choice,
so the same request always gets the same text, JSON instance or tool arguments, and a
test can predict them. The rules, chosen to make client behaviour testable:

- Text answers quote the last input message: `Emulated answer to "<first 200 chars>".`
- `text.format` json_schema: a JSON instance of the schema from `schema_fill`, grounded
  in the input messages and instructions: a deterministic extractor, not a language model
  (a property takes the value the text states for it; what it does not state is made up,
  strings from words of the input). json_object: a small object.
- Function tools: `tool_choice` "required" calls the tool named in the input (else the
  first), a named function calls that one, "auto" calls a tool only when its name
  appears in the input text and no `function_call_output` is in the input yet.
- The marker `[[refuse]]` anywhere in the input yields a `refusal` content part.
- Reasoning (model "o…"/"gpt-5…" or any `reasoning` field) adds a `reasoning` item and
  `REASONING_TOKENS[effort]` reasoning tokens; a summary part when `reasoning.summary` is set.
- Tokens are estimated at 4 characters each: input = instructions + the JSON text of
  `input` (a plain string counts as itself), output = the visible text or arguments.
- `cached_tokens` counts a `previous_response_id`'s context, plus, with prompt caching on,
  the prefix of the prompt the cache served (see `prompt_cache`).
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
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from . import schema_fill
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
FAULT_AFTER_DELTAS = 3
"""Deltas a broken stream sends before it fails."""
STREAM_TERMINALS = ("response.completed", "response.incomplete")
STREAM_FAILURE = (
    "An error occurred while processing your request. You can retry your request, or contact "
    "us through our help center at help.openai.com if the error persists."
)
NewId = Callable[[str], str]
Json = dict[str, Any]


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_text(body: Json) -> str:
    """The text a request's prompt tokens are counted from: `instructions`, then `input`
    (a plain string as itself, items as their JSON text)."""
    raw = body.get("input")
    text = raw if isinstance(raw, str) else "" if raw is None else orjson.dumps(raw).decode()
    return (body.get("instructions") or "") + text


def input_tokens(body: Json) -> int:
    """Estimated prompt tokens of a request (never below one)."""
    return max(1, tokens(prompt_text(body)))


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


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class Answer:
    """The emulated model's answer to one validated request body."""

    def __init__(
        self, body: Json, new_id: NewId, context_tokens: int = 0, cached_tokens: int = 0
    ) -> None:
        self.body = body
        self.new_id = new_id
        strings = _input_strings(body.get("input"))
        self.text = "\n".join(strings)
        seed = hashlib.sha256(orjson.dumps([body.get("model"), body.get("input")])).digest()
        self.rng = random.Random(int.from_bytes(seed[:8], "big"))
        self.words = re.findall(r"[A-Za-z][A-Za-z0-9]{2,}", self.text)[:200]
        self.last_message = " ".join((message_texts(body.get("input")) or [""])[-1].split())
        self.context_tokens = context_tokens
        self.cached_tokens = cached_tokens
        """Tokens of this request's own prompt served by the prompt cache (`prompt_cache`)."""
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
            "input_tokens_details": {
                "cached_tokens": self.context_tokens + self.cached_tokens,
                "cache_write_tokens": 0,
            },
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
            return orjson.dumps(schema_fill.instance(schema, self.rng, self.words)).decode()
        fmt = (self.body.get("text") or {}).get("format") or {"type": "text"}
        if fmt["type"] == "json_schema":  # grounded in what the request says: input first
            said = f"{self.text}\n{self.body.get('instructions') or ''}"
            value = schema_fill.instance(fmt["schema"], self.rng, self.words, text=said)
            return orjson.dumps(value).decode()
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

    pending = unfinished(response, "in_progress")
    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    for index, item in enumerate(response["output"]):
        yield from _item_events(event, index, item)
    terminal = "response.completed" if response["status"] == "completed" else "response.incomplete"
    yield event(terminal, response=response)


def unfinished(response: Json, status: str) -> Json:
    """`response` as it stands before any output: in progress, or failed."""
    return {
        **response,
        "status": status,
        "output": [],
        "usage": None,
        "incomplete_details": None,
        "completed_at": None,
    }


def broken_events(response: Json, fault: str, code: str) -> Iterator[Json]:
    """`stream_events` cut after `FAULT_AFTER_DELTAS` deltas (or before the terminal event of a
    shorter answer), then ended by an `error` event (stream-error), a `response.failed` event
    (stream-failed), or by nothing (stream-cut), as a server failing mid-answer does."""
    deltas = 0
    for event in stream_events(response):
        if deltas == FAULT_AFTER_DELTAS or event["type"] in STREAM_TERMINALS:
            break
        yield event
        deltas += event["type"].endswith(".delta")
    number = event["sequence_number"]  # the event not sent: the failure takes its place
    if fault == "stream-error":
        yield {
            "type": "error",
            "sequence_number": number,
            "code": code,
            "message": STREAM_FAILURE,
            "param": None,
        }
    elif fault == "stream-failed":
        failed = {
            **unfinished(response, "failed"),
            "error": {"code": code, "message": STREAM_FAILURE},
        }
        yield {"type": "response.failed", "sequence_number": number, "response": failed}


def sse_frame(event: Json, reframed: bool = False) -> bytes:
    """One event as the API frames it, or `reframed` as a proxy might pass it on: CRLF line
    ends and the JSON pretty-printed over several `data:` lines (which rejoin with newlines,
    whitespace to JSON: its strings never hold a raw newline)."""
    kind: bytes = event["type"].encode()
    if not reframed:
        return b"event: " + kind + b"\ndata: " + orjson.dumps(event) + b"\n\n"
    lines = orjson.dumps(event, option=orjson.OPT_INDENT_2).split(b"\n")
    return (
        b"event: "
        + kind
        + b"\r\n"
        + b"".join(b"data: " + line + b"\r\n" for line in lines)
        + b"\r\n"
    )


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


def new_id(prefix: str) -> str:
    """Ids shaped like OpenAI's (`resp_` + 48 hex, `call_` + 24); not drawn from the seeded RNG
    so that turning streaming or retries on does not shift the seeded latency draws."""
    return f"{prefix}_{secrets.token_hex(12 if prefix == 'call' else 24)}"


ECHO_DEFAULTS: Json = {
    "background": False,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "safety_identifier": None,
    "store": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}
"""Request fields the real API echoes in every Response, with the values it reports when unset."""


def response_object(
    body: Json,
    response_id: str,
    output: list[Json],
    usage: Json,
    incomplete: str | None,
) -> Json:
    """A Response as api.openai.com returns it, echoing the request's settings."""
    now = int(time.time())
    echoed = {
        key: default if body.get(key) is None else body[key]
        for key, default in ECHO_DEFAULTS.items()
    }
    echoed["tools"] = [
        {"strict": True, "description": None, "parameters": None, **tool}
        if tool.get("type") == "function"
        else tool
        for tool in echoed["tools"]
    ]
    text = body.get("text") or {}
    reasoning = body.get("reasoning") or {}
    tier = body.get("service_tier")
    return {
        "id": response_id,
        "object": "response",
        "created_at": now,
        "status": "incomplete" if incomplete else "completed",
        "completed_at": None if incomplete else now,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": body["model"],
        "output": output,
        **echoed,
        "reasoning": {
            "effort": reasoning_effort(body),
            "summary": reasoning.get("summary"),
        },
        "service_tier": {None: "default", "auto": "default", "fast": "priority"}.get(tier, tier),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "usage": usage,
    }
