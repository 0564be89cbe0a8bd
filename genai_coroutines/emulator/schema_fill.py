"""One JSON value valid against a JSON Schema: what both emulated services fill in.

Datalab fills `page_schema` with what it extracts from a document; OpenAI fills
`json_schema` answers and tool arguments. The emulator fills both here, so the two stay
alike: every choice comes from the caller's seeded `random.Random` (the same request
always gets the same value) and every string from the caller's words (a test can tell
which input a value belongs to). Covers what schema generators emit: objects, arrays
(`prefixItems`, min/maxItems), numbers (bounds, exclusive bounds, `multipleOf`),
booleans, null, `enum`, `const`, local `$ref`, `allOf`, `anyOf`/`oneOf`, type lists,
string formats and min/maxLength. `pattern` and `uniqueItems` are not honoured.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, TypeGuard

Json = dict[str, Any]

MAX_DEPTH = 6
"""Past this depth only required properties, minimum items and null branches are made,
so recursive schemas end."""

UNBOUNDED_SPAN = 100
"""How wide the range a number is drawn from is when the schema leaves a side open."""

_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T09:30:00Z",
    "time": "09:30:00Z",
    "email": "someone@example.com",
    "uri": "https://example.com/item",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
}


def instance(schema: Any, rng: random.Random, words: Sequence[str]) -> Any:
    """A value valid against `schema`, drawn with `rng`; plain strings are picked from `words`."""
    return _Filler(schema, rng, list(words) or ["value"]).fill(schema, 0)


class _Filler:
    """One fill: keeps the root for `$ref` lookups and the caller's RNG and words."""

    def __init__(self, root: Any, rng: random.Random, words: list[str]) -> None:
        self.root = root
        self.rng = rng
        self.words = words

    def fill(self, schema: Any, depth: int) -> Any:
        """A value for `schema` nested `depth` levels down (the depth ends recursion)."""
        schema = self._plain(schema)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                rest = {name: value for name, value in schema.items() if name != key}
                return self.fill(_merge(rest, self._branch(schema[key], depth)), depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        kind = _kind(schema, depth)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind in ("integer", "number"):
            return self._number(schema, kind)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(schema)

    def _plain(self, schema: Any) -> Json:
        """`schema` with `$ref` followed and `allOf` merged in; `true` becomes `{}` (anything)."""
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            rest = {key: value for key, value in schema.items() if key != "$ref"}
            return self._plain(_merge(self._resolve(schema["$ref"]), rest))
        if "allOf" in schema:
            merged = {key: value for key, value in schema.items() if key != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self._plain(part))
            return merged
        return schema

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

    def _branch(self, branches: list[Any], depth: int) -> Json:
        """The first non-null branch, or a null one past `MAX_DEPTH` so recursion ends."""
        options = [self._plain(branch) for branch in branches]
        nulls = [option for option in options if option.get("type") == "null"]
        if depth >= MAX_DEPTH and nulls:
            return nulls[0]
        return next((option for option in options if option.get("type") != "null"), options[0])

    def _object(self, schema: Json, depth: int) -> Json:
        properties: Json = schema.get("properties") or {}
        required: list[str] = schema.get("required") or []
        value = {
            name: self.fill(sub, depth + 1)
            for name, sub in properties.items()
            if depth < MAX_DEPTH or name in required
        }
        for name in required:
            if name not in value:  # required but not described: `additionalProperties` rules
                value[name] = self.fill(schema.get("additionalProperties"), depth + 1)
        return value

    def _array(self, schema: Json, depth: int) -> list[Any]:
        prefix: list[Any] = schema.get("prefixItems") or []
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        count = (
            self.rng.randint(min(max(low, 1), high), min(max(low, 3), high))
            if depth < MAX_DEPTH
            else low
        )
        return [
            self.fill(prefix[i] if i < len(prefix) else schema.get("items"), depth + 1)
            for i in range(count)
        ]

    def _number(self, schema: Json, kind: str) -> int | float:
        """A random multiple of `multipleOf` (else of 1, or 0.01 for numbers) within the bounds.

        Worked out in exact fractions of the schema's decimals, so float rounding never lands
        on an exclusive bound; for integers the step is the least integer multiple of it.
        """
        declared = schema.get("multipleOf")
        step = _exact(declared) if _is_number(declared) and declared > 0 else Fraction(1, 100)
        if kind == "integer":
            step = Fraction(step.numerator if _is_number(declared) and declared > 0 else 1)
        first, last = _multiples_in_bounds(schema, step)
        span = int(UNBOUNDED_SPAN / step)
        if first is None:
            first = 0 if last is None or last >= 0 else last - span
        if last is None:
            last = first + span
        value = (self.rng.randint(first, last) if first <= last else first) * step
        return int(value) if kind == "integer" else float(value)

    def _string(self, schema: Json) -> str:
        fmt = schema.get("format", "")
        if fmt == "uuid":
            text = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        else:
            text = _FORMATS.get(fmt) or self.rng.choice(self.words)
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = text.ljust(low, "x")
        return text if high is None else text[: int(high)]


def _kind(schema: Json, depth: int) -> str:
    """The type to make: a declared one (null only past `MAX_DEPTH`), else inferred."""
    declared = schema.get("type")
    if isinstance(declared, list):
        kinds = [kind for kind in declared if kind != "null"]
        ending = "null" in declared and (depth >= MAX_DEPTH or not kinds)
        declared = "null" if ending else next(iter(kinds), None)
    if declared:
        return str(declared)
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merge(left: Json, right: Json) -> Json:
    """Both schemas' keywords, with `properties` and `required` combined rather than replaced."""
    merged = {**left, **right}
    if "properties" in left and "properties" in right:
        merged["properties"] = {**left["properties"], **right["properties"]}
    if "required" in left and "required" in right:
        merged["required"] = list(dict.fromkeys([*left["required"], *right["required"]]))
    return merged


def _multiples_in_bounds(schema: Json, step: Fraction) -> tuple[int | None, int | None]:
    """The least and greatest `n` with `n * step` within the bounds (None where unbounded)."""
    lows: list[int] = []
    highs: list[int] = []
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    below, above = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(minimum):  # draft 4 spells an exclusive bound `exclusiveMinimum: true`
        ratio = _exact(minimum) / step
        lows.append(math.floor(ratio) + 1 if below is True else math.ceil(ratio))
    if _is_number(below):
        lows.append(math.floor(_exact(below) / step) + 1)
    if _is_number(maximum):
        ratio = _exact(maximum) / step
        highs.append(math.ceil(ratio) - 1 if above is True else math.floor(ratio))
    if _is_number(above):
        highs.append(math.ceil(_exact(above) / step) - 1)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _exact(number: int | float) -> Fraction:
    """The decimal the schema wrote (0.1 is 1/10, not the float nearest to it)."""
    return Fraction(str(number))


def _is_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number; booleans (draft 4's exclusive flags) are not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
