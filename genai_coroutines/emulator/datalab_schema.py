"""A deterministic value satisfying a JSON schema: the emulator's "structured extraction".

Datalab fills `page_schema` with what it reads from the document; the emulator fills
it with text naming the document, so a test can validate the answer against the
schema and still tell which upload it belongs to. Covers what extraction schemas
use (objects, arrays, scalars, enums, bounds, `$ref`, `anyOf`/`oneOf`/`allOf`);
`pattern` is not honoured.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

_MAX_DEPTH = 6
"""Past this depth (recursive `$ref`s) only required properties and minimum items are made."""

_STRING_FORMATS = {
    "date": "2024-01-31",
    "date-time": "2024-01-31T12:00:00Z",
    "time": "12:00:00Z",
    "email": "extracted@example.com",
    "uri": "https://example.com/extracted",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
}


def schema_instance(schema: Any, label: str) -> Any:
    """A value valid against `schema`; strings mention `label` (e.g. the file and its digest)."""
    return _Filler(schema, label).fill(schema, "value", 0, 0)


class _Filler:
    def __init__(self, root: Any, label: str) -> None:
        self.root = root
        self.label = label

    def fill(self, schema: Any, name: str, depth: int, index: int) -> Any:
        """`name` is the property being filled and `index` its position in an array."""
        if not isinstance(schema, dict):
            return f"{name} of {self.label}"  # `true` or a missing schema: anything goes
        if "$ref" in schema:
            return self.fill(self._resolve(schema["$ref"]), name, depth + 1, index)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        if "allOf" in schema:
            merged = {key: value for key, value in schema.items() if key != "allOf"}
            for part in schema["allOf"]:
                merged = _merge(merged, self._deref(part))
            return self.fill(merged, name, depth, index)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [self._deref(option) for option in schema[key]]
                chosen = next((o for o in options if o.get("type") != "null"), options[0])
                return self.fill(chosen, name, depth, index)
        kind = _kind(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, name, depth)
        if kind in ("integer", "number"):
            return _number(schema, kind, index)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self._string(schema, name, index)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        wanted = (
            properties
            if depth < _MAX_DEPTH
            else {k: v for k, v in properties.items() if k in required}
        )
        value = {key: self.fill(sub, key, depth + 1, 0) for key, sub in wanted.items()}
        for key in sorted(required - value.keys()):  # required but not described
            value[key] = f"{key} of {self.label}"
        return value

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix: list[Any] = schema.get("prefixItems", [])
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        count = max(low, len(prefix), 1 if depth < _MAX_DEPTH else 0)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [
            self.fill(prefix[i] if i < len(prefix) else items, name, depth + 1, i)
            for i in range(count)
        ]

    def _string(self, schema: dict[str, Any], name: str, index: int) -> str:
        fmt = schema.get("format")
        if fmt == "uuid":
            seed = hashlib.sha256(f"{self.label}/{name}/{index}".encode()).digest()
            return str(uuid.UUID(bytes=seed[:16], version=4))
        text = _STRING_FORMATS.get(fmt or "") or f"{name} of {self.label}" + (
            f" #{index}" if index else ""
        )
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        text = text.ljust(low, "x")
        return text if high is None else text[: int(high)]

    def _resolve(self, ref: str) -> Any:
        """Local references only (`#/$defs/Name`), which is what schema generators emit."""
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref are supported, got {ref!r}")
        node = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            if part:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _deref(self, schema: Any) -> dict[str, Any]:
        while isinstance(schema, dict) and "$ref" in schema:
            schema = self._resolve(schema["$ref"])
        return schema if isinstance(schema, dict) else {}


def _kind(schema: dict[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), declared[0] if declared else None)
    if declared:
        return str(declared)
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
    merged["required"] = sorted(set(left.get("required", ())) | set(right.get("required", ())))
    return merged


def _number(schema: dict[str, Any], kind: str, index: int) -> int | float:
    """The smallest allowed value at or above 1 (plus `index`, so array items differ)."""
    step = schema.get("multipleOf", 1)
    low: float = 1 + index
    if "minimum" in schema:
        low = max(float(schema["minimum"]), float(schema["minimum"]) + index)
    if "exclusiveMinimum" in schema:
        low = max(low, float(schema["exclusiveMinimum"]) + step)
    value = -(-low // step) * step  # round up to a multiple of `step`
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if high is not None and value > high:
        value = float(high) if "maximum" in schema else float(high) - step
    return int(value) if kind == "integer" else float(value)
