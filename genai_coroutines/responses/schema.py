"""Pydantic models as Structured Outputs schemas (pydantic is an optional extra).

Strict mode only accepts a subset of JSON Schema: every object must say
`additionalProperties: false` and list all its properties as `required`, and a
`$ref` may not have sibling keys. Pydantic's own schema breaks all three, so it is
rewritten the way the official SDK does (`openai.lib._pydantic.to_strict_json_schema`),
which is what the API is known to accept.
"""

from __future__ import annotations

import re
import sys
from typing import Any

_NAME_JUNK = re.compile(r"[^a-zA-Z0-9_-]")


def is_pydantic_model(value: object) -> bool:
    """True for a pydantic v2 model class. Never imports pydantic: if it is not loaded
    already, nobody can have defined a model with it."""
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(value, type)
        and issubclass(value, pydantic.BaseModel)
        and hasattr(value, "model_json_schema")
    )


def model_text_format(model: Any) -> dict[str, Any]:
    """The `text.format` for a pydantic model class, strict as the SDK sends it."""
    schema = model.model_json_schema()
    return {
        "type": "json_schema",
        "name": _NAME_JUNK.sub("_", model.__name__)[:64],
        "schema": _strict(schema, schema),
        "strict": True,
    }


def _strict(node: Any, root: dict[str, Any]) -> Any:
    """Rewrite one schema node (and its children) in place for strict mode."""
    if not isinstance(node, dict):
        return node
    for defs_key in ("$defs", "definitions"):
        defs = node.get(defs_key)
        if isinstance(defs, dict):
            for name, sub in defs.items():
                defs[name] = _strict(sub, root)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    properties = node.get("properties")
    if isinstance(properties, dict):
        node["required"] = list(properties)
        node["properties"] = {key: _strict(value, root) for key, value in properties.items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root)
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(variant, root) for variant in node["anyOf"]]
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) == 1:
            node.update(_strict(all_of[0], root))
            node.pop("allOf")
        else:
            node["allOf"] = [_strict(entry, root) for entry in all_of]
    if "default" in node and node["default"] is None:
        node.pop("default")
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        node.update({**_resolve(root, ref), **node})
        node.pop("$ref")
        return _strict(node, root)
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"response_format: unsupported $ref {ref!r}")
    target: Any = root
    for key in ref[2:].split("/"):
        target = target[key]
    if not isinstance(target, dict):
        raise ValueError(f"response_format: $ref {ref!r} does not name a schema")
    return target
