"""`ResponsesRequest`'s parameters, translated into bodies the real Responses API accepts.

The Rust library's README documents Chat Completions shapes, which `POST /responses`
rejects:
  * `response_format={"type": "json_schema", "json_schema": {name, schema, strict}}`
    becomes `text.format = {"type": "json_schema", "name", "schema", "strict"}` (flat);
  * function tools `{"type": "function", "function": {...}}` become flat
    `{"type": "function", "name", "parameters", "strict"}`. Responses treats a missing
    `strict` as true and rewrites the schema to strict mode (making optional
    fields required), while Chat Completions treats it as false; the translation
    writes Chat's default explicitly so a Chat Completions tool keeps its meaning;
  * `tool_choice={"type": "function", "function": {"name"}}` becomes `{"type": "function", "name"}`.
Responses-native shapes and built-in tools pass through untouched.

`json_object` mode is refused with a 400 unless an input message contains the word
"JSON" (`instructions` are not enough), so a prompt without it gets a short extra
developer message in front; the user's own text is never edited.

Everything but `input` is the same for every prompt of a batch, so the body is
serialised once (`BodyTemplate.prefix`) and each request only serialises its input; for
the same reason a prompt's journal identity needs only its input hashed, after the prefix
hashed once (`BodyTemplate.input_digest`), not the whole body.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

from .. import validation
from .schema import is_pydantic_model, model_text_format

T = TypeVar("T")

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_CHOICE_MODES = ("none", "auto", "required")
JSON_NOTE = {"role": "developer", "content": "Respond in JSON."}
"""Prepended to a json_object prompt that never says "JSON" (the API's precondition)."""


def text_format(response_format: Any) -> dict[str, Any]:
    """`text.format` from a Chat Completions or native `response_format`, or a pydantic model."""
    if is_pydantic_model(response_format):
        return model_text_format(response_format)
    if not isinstance(response_format, dict):
        raise TypeError(
            "response_format must be a dict (or a pydantic model class), "
            f"not {type(response_format).__name__}"
        )
    kind = response_format.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind != "json_schema":
        raise ValueError(
            f"response_format type must be 'json_schema', 'json_object' or 'text', not {kind!r}"
        )
    if "json_schema" in response_format:
        if "schema" in response_format or "name" in response_format:
            raise ValueError("response_format mixes the Chat Completions and Responses shapes")
        inner = response_format["json_schema"]
        _entry("response_format['json_schema']", inner, dict, "a dict")
        flat = {"type": "json_schema", **inner}
    elif "schema" in response_format:
        flat = dict(response_format)
    else:
        raise ValueError(
            "response_format of type json_schema needs 'json_schema': {name, schema, strict} "
            "(Chat Completions shape) or 'name' and 'schema' (Responses shape)"
        )
    name = _entry(
        "response_format json_schema name", flat.get("name"), str, "1-64 of [a-zA-Z0-9_-]"
    )
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"response_format json_schema name must be 1-64 of [a-zA-Z0-9_-], not {name!r}"
        )
    _entry("response_format json_schema 'schema'", flat.get("schema"), dict, "a JSON Schema dict")
    if flat.get("strict") is not None:
        _entry("response_format json_schema 'strict'", flat["strict"], bool, "a bool")
    return flat


def _entry(where: str, value: object, kind: type[T], wanted: str) -> T:
    """A required entry inside a parameter, returned: missing (None) is a ValueError, of
    another type a TypeError (the package's rule, `validation`)."""
    if value is None:
        raise ValueError(f"{where} is missing: it must be {wanted}")
    if not isinstance(value, kind):
        raise TypeError(f"{where} must be {wanted}, not {type(value).__name__}")
    return value


def translate_tool(tool: Any, where: str) -> dict[str, Any]:
    """One tool in the Responses shape; `where` ("tools[2]") names it in errors."""
    if not isinstance(tool, dict):
        raise TypeError(f"{where} must be a dict, not {type(tool).__name__}")
    kind = tool.get("type")
    _entry(f"{where}['type']", kind, str, "a str, e.g. 'function', 'web_search', 'file_search'")
    if kind == "function":
        if "function" in tool:
            function = tool["function"]
            _entry(f"{where}['function']", function, dict, "a dict with a 'name'")
            _entry(f"{where}['function']['name']", function.get("name"), str, "a str")
            flat: dict[str, Any] = {
                "type": "function",
                "name": function["name"],
                "parameters": function.get("parameters"),
                "strict": function.get("strict") or False,
            }
            flat.update((key, value) for key, value in function.items() if key not in flat)
            return flat
        if isinstance(tool.get("name"), str):
            return tool
        raise ValueError(
            f"{where} is neither a Chat Completions function tool ({{'type': 'function', "
            "'function': {'name': ...}}) nor a Responses one ({'type': 'function', 'name': ...})"
        )
    if kind == "custom" and isinstance(tool.get("custom"), dict):
        return {"type": "custom", **tool["custom"]}
    return tool


def translate_tool_choice(choice: Any) -> str | dict[str, Any]:
    """`tool_choice` in the Responses shape, from either API's spelling."""
    if isinstance(choice, str):
        if choice not in TOOL_CHOICE_MODES:
            modes = ", ".join(TOOL_CHOICE_MODES)
            raise ValueError(f"tool_choice must be one of {modes} or a dict; got {choice!r}")
        return choice
    if not isinstance(choice, dict):
        raise TypeError(
            "tool_choice must be 'none', 'auto', 'required' or a dict with a 'type', "
            f"not {type(choice).__name__}"
        )
    kind = choice.get("type")
    _entry("tool_choice['type']", kind, str, "a str, e.g. 'function'")
    if kind in ("function", "custom") and kind in choice:
        named = choice[kind]
        _entry(f"tool_choice['{kind}']", named, dict, "a dict with a 'name'")
        _entry(f"tool_choice['{kind}']['name']", named.get("name"), str, "a str")
        return {"type": kind, "name": named["name"]}
    if kind in ("function", "custom"):
        _entry("tool_choice['name']", choice.get("name"), str, f"a str (type {kind!r})")
    if kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        tools = allowed.get("tools")
        _entry("tool_choice['allowed_tools']['tools']", tools, list, "a list")
        return {
            "type": "allowed_tools",
            "mode": allowed.get("mode", "auto"),
            "tools": [
                translate_tool_choice(ref) if isinstance(ref, dict) else ref for ref in tools
            ],
        }
    return choice


def prompt_error(prompt: object) -> TypeError | ValueError | None:
    """What is wrong with one prompt (its message completing "user_prompts[i] ..."), or None.

    Also what orjson would refuse when the request is sent (a lone surrogate, a
    non-str key...) or silently turn into null (NaN), so one such prompt is its own
    error instead of ending the batch. A prompt (or a part of it) of the wrong type is
    a TypeError, an empty list or text JSON cannot carry a ValueError.
    """
    if isinstance(prompt, str):
        if prompt.isascii():
            return None
    elif not (isinstance(prompt, list) and all(isinstance(i, dict) for i in prompt)):
        return TypeError("must be a str or a non-empty list of input items (dicts)")
    elif not prompt:
        return ValueError("must be a str or a non-empty list of input items (dicts)")
    try:
        validation.json_value("prompt", prompt)
    except (TypeError, ValueError) as exc:
        return type(exc)(f"cannot be sent: {exc}")
    return None


def mentions_json(prompt: str | list[dict[str, Any]]) -> bool:
    """Whether any text of the prompt's messages says "json" (any case), as the API requires."""
    if isinstance(prompt, str):
        return "json" in prompt.lower()
    for item in prompt:
        content = item.get("content")
        if isinstance(content, str) and "json" in content.lower():
            return True
        if isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str) and "json" in text.lower():
                    return True
    return False


def estimate_tokens(fixed_chars: int, prompt: str | list[dict[str, Any]], max_output: int) -> int:
    """Tokens a request may cost before it is sent, as rate limits count them.

    About four characters per token for the instructions and the serialised input,
    plus `max_output_tokens` when set (OpenAI reserves it against the TPM limit).
    Deliberately no tokenizer: the estimate only has to be right on average, and the
    limiter settles every reservation with the real usage once the answer arrives.
    """
    chars = len(prompt) if isinstance(prompt, str) else len(orjson.dumps(prompt))
    return math.ceil((fixed_chars + chars) / 4) + max_output


class BodyFields(Protocol):
    """What `BodyTemplate.build` reads of a request: `ResponsesRequest`'s fields, declared
    here so that the wire does not import the request that builds its template."""

    @property
    def model(self) -> str: ...

    @property
    def system_prompt(self) -> str: ...

    @property
    def response_format(self) -> Any: ...

    @property
    def temperature(self) -> float | None: ...

    @property
    def top_p(self) -> float | None: ...

    @property
    def max_output_tokens(self) -> int | None: ...

    @property
    def reasoning_effort(self) -> str | None: ...

    @property
    def reasoning_summary(self) -> str | None: ...

    @property
    def tools(self) -> list[dict[str, Any]] | None: ...

    @property
    def tool_choice(self) -> str | dict[str, Any] | None: ...

    @property
    def parallel_tool_calls(self) -> bool | None: ...

    @property
    def previous_response_id(self) -> str | None: ...

    @property
    def include(self) -> list[str] | None: ...

    @property
    def store(self) -> bool | None: ...

    @property
    def truncation(self) -> str | None: ...

    @property
    def metadata(self) -> dict[str, str] | None: ...

    @property
    def service_tier(self) -> str | None: ...

    @property
    def prompt_cache_key(self) -> str | None: ...

    @property
    def prompt_cache_retention(self) -> str | None: ...

    @property
    def stream(self) -> bool | None: ...

    @property
    def background(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """A batch's request body without `input`, serialised once."""

    prefix: bytes
    """`{"model": ..., <every other field>, "input":` ready for one serialised input and `}`."""
    json_mode: bool
    fixed_chars: int
    max_output: int
    hashed: hashlib.blake2b = field(compare=False)
    """`prefix` (every field but `input`) hashed, a state `input_digest` goes on from."""

    @classmethod
    def build(cls, request: BodyFields) -> BodyTemplate:
        body: dict[str, Any] = {"model": request.model}
        if request.system_prompt:
            body["instructions"] = request.system_prompt
        text = text_format(request.response_format)
        body["text"] = {"format": text}
        cache_key = request.prompt_cache_key
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_output_tokens": request.max_output_tokens,
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "include": request.include,
            "store": True if request.background else request.store,
            "truncation": request.truncation,
            "metadata": request.metadata,
            "service_tier": request.service_tier,
            # "auto" is planned per request, at send time (`cache_keys`)
            "prompt_cache_key": None if cache_key == "auto" else cache_key,  # auto: cache_keys
            "prompt_cache_retention": request.prompt_cache_retention,
        }
        body.update((key, value) for key, value in optional.items() if value is not None)
        reasoning = {"effort": request.reasoning_effort, "summary": request.reasoning_summary}
        if any(value is not None for value in reasoning.values()):
            body["reasoning"] = {k: v for k, v in reasoning.items() if v is not None}
        if request.tools is not None:
            if not isinstance(request.tools, list):
                kind = type(request.tools).__name__
                raise TypeError(f"tools must be a list of dicts, not {kind}")
            body["tools"] = [translate_tool(t, f"tools[{i}]") for i, t in enumerate(request.tools)]
        if request.tool_choice is not None:
            body["tool_choice"] = translate_tool_choice(request.tool_choice)
        if request.stream:
            body["stream"] = True
        if request.background:
            body["background"] = True
        prefix = orjson.dumps(body)[:-1] + b',"input":'
        return cls(
            prefix=prefix,
            json_mode=text["type"] == "json_object",
            fixed_chars=len(request.system_prompt),
            max_output=request.max_output_tokens or 0,
            hashed=hashlib.blake2b(prefix, digest_size=16),
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled without its hash state, which cannot be (Ray ships a processor to each
        actor): rebuilt from `prefix` on the other side."""
        return _template, (self.prefix, self.json_mode, self.fixed_chars, self.max_output)

    def input_for(self, prompt: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        """The `input` sent for `prompt`: itself, or with the JSON note in json_object mode."""
        if not self.json_mode or mentions_json(prompt):
            return prompt
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return [JSON_NOTE, *turns]

    def body(self, prompt: str | list[dict[str, Any]]) -> bytes:
        sent = self.input_for(prompt) if self.json_mode else prompt  # on every item's path
        return self.prefix + orjson.dumps(sent) + b"}"

    def input_digest(self, prompt: str | list[dict[str, Any]]) -> bytes:
        """16 bytes naming `body(prompt)` without building it: the BLAKE2b digest of the
        body but its closing `}`, the prefix's part hashed once (`hashed`). Equal digests
        are equal bodies, so a journal may answer a prompt by this alone
        (`engine.journal.Journal.input_digest`); a long system prompt, schema or tool list
        costs nothing per prompt here, where the body's digest hashes it every time."""
        hasher = self.hashed.copy()
        hasher.update(orjson.dumps(self.input_for(prompt) if self.json_mode else prompt))
        return hasher.digest()

    def estimate(self, prompt: str | list[dict[str, Any]]) -> int:
        return estimate_tokens(self.fixed_chars, prompt, self.max_output)


def _template(prefix: bytes, json_mode: bool, fixed_chars: int, max_output: int) -> BodyTemplate:
    """A `BodyTemplate` unpickled (`BodyTemplate.__reduce__`)."""
    hashed = hashlib.blake2b(prefix, digest_size=16)
    return BodyTemplate(prefix, json_mode, fixed_chars, max_output, hashed)
