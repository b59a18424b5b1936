"""From a Python type to a JSON schema Kimi accepts: ``json_schema_of``, ``normalize_mfjs``, ``to_mfjs``.

Pure, no I/O. pydantic and msgspec emit schemas Kimi's dialect (MFJS, docs/kimi-api.md §2.7) rejects:
``anyOf`` with ``default`` beside it, ``$ref`` with a sibling ``description``, ``const``,
``prefixItems``, ``format``, a root that is only a ``$ref``. ``normalize_mfjs`` rewrites those into
equivalent or looser MFJS; what it loosens (``pattern``, ``format``, exclusive bounds, ``const`` on
booleans...) stays enforced because answers are validated against the original type, and ``format``
/ ``pattern`` are kept as a hint in ``description`` so the model still sees them.

>>> import msgspec
>>> class Ticket(msgspec.Struct):
...     title: str
...     priority: int | None = None
>>> to_mfjs(Ticket)["properties"]["priority"]
{'anyOf': [{'type': 'integer'}, {'type': 'null'}]}
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import unquote

import msgspec

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.mfjs import MFJSProblem, check_mfjs, has_exponent

__all__ = ["InvalidSchemaError", "MFJSProblem", "check_mfjs", "json_schema_of", "normalize_mfjs", "to_mfjs"]

_DROPPED = frozenset({
    "title", "examples", "$schema", "$comment", "uniqueItems", "multipleOf", "patternProperties",
    "propertyNames", "contains", "not", "if", "then", "else", "minProperties", "maxProperties",
    "discriminator", "$anchor", "exclusiveMinimum", "exclusiveMaximum", "contentEncoding", "contentMediaType", "readOnly", "writeOnly", "deprecated",
})  # fmt: skip
_HINTED = ("format", "pattern")
_BY_TYPE: dict[str, frozenset[str]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems"}),
    "string": frozenset({"minLength", "maxLength", "format", "pattern"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
_TYPED_KEYWORDS = frozenset().union(*_BY_TYPE.values()) | {"enum"}
_MAX_NESTING = 100
_FIXES = {
    "root-type": "Kimi's structured answers are JSON objects: wrap the type in a model with one field",
    "max-properties": "split the model or drop fields: Kimi allows 100 object properties in total",
    "max-depth": "flatten the model: Kimi allows 5 levels of nested objects",
    "max-enum-values": "use a plain string with a description instead of an enum this large",
    "ref-internal": "put the referenced schema under $defs and refer to it as #/$defs/NAME",
    "ref-missing": "add the referenced schema under $defs",
}


class InvalidSchemaError(InvalidArgumentError):
    """A type's JSON schema cannot be expressed as MFJS; ``problems`` lists every rule it breaks."""

    def __init__(self, message: str, problems: list[MFJSProblem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[MFJSProblem] = problems or []


def _type_name(tp: Any) -> str:
    if isinstance(tp, Mapping):
        return "the schema dict"
    return getattr(tp, "__qualname__", None) or repr(tp)


def json_schema_of(tp: Any) -> dict[str, Any]:
    """The JSON schema of a msgspec ``Struct``, dataclass, TypedDict, pydantic model, or a schema dict.

    pydantic is used only when it is already imported (a pydantic model implies it is), so kimiflow
    never imports it on its own.

    >>> json_schema_of({"type": "object"})
    {'type': 'object'}
    """
    if isinstance(tp, Mapping):
        return copy.deepcopy(dict(tp))
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        schema: dict[str, Any] = cast(Any, tp).model_json_schema()
        return schema
    try:
        return msgspec.json.schema(tp)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"cannot make a JSON schema of {_type_name(tp)} ({exc}); use a msgspec Struct, a dataclass, "
            "a TypedDict, a pydantic model or a JSON schema dict"
        ) from None


def _anything() -> dict[str, Any]:
    # MFJS has no "any value" below the root: spell it out (nested arrays of arrays excluded).
    scalars: list[dict[str, Any]] = [
        {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}, {"type": "object"},
    ]  # fmt: skip
    return {"anyOf": [*copy.deepcopy(scalars), {"type": "array", "items": {"anyOf": scalars}}]}


def _enum_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "integer" if isinstance(value, int) else "number"
    return "string" if isinstance(value, str) else "other"


def _plain_number(value: Any) -> Any:
    """``value`` without an exponent in its JSON text, or None when that cannot be done."""
    if isinstance(value, float) and "e" in json.dumps(value).lower():
        return int(value) if value.is_integer() else None
    return value


def _key(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, default=str)


def _dedupe(branches: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for branch in branches:
        key = _key(branch)
        if key not in seen:
            seen.add(key)
            out.append(branch)
    return out


def _with_hint(description: Any, hints: list[str]) -> Any:
    if not hints:
        return description
    hint = "; ".join(hints)
    return f"{description} ({hint})" if isinstance(description, str) and description else hint


class _Normaliser:
    def __init__(self, original: dict[str, Any]) -> None:
        self.original = original
        self.names: dict[str, str] = {}  # original pointer → name under the new root $defs
        self.defs: dict[str, Any] = {}
        self.pending: list[tuple[str, Any]] = []

    def pointer_target(self, ref: str) -> Any:
        node: Any = self.original
        for raw in ref[2:].split("/"):
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def ref(self, ref: Any) -> Any:
        if not isinstance(ref, str) or ref == "#" or not ref.startswith("#/"):
            return ref  # external or malformed: left for the checker to name
        if ref not in self.names:
            target = self.pointer_target(ref)
            if target is None:
                return ref
            base = unquote(ref.rsplit("/", 1)[-1]).replace("~1", "/").replace("~0", "~").replace("/", "_") or "def"
            name, n = base, 2
            while name in self.defs or name in self.names.values():
                name, n = f"{base}_{n}", n + 1
            self.names[ref] = name
            self.defs[name] = None
            self.pending.append((name, target))
        return "#/$defs/" + self.names[ref]

    def run(self) -> dict[str, Any]:
        root = self.walk(self.original, "root", 0)
        guard = 0
        while self.pending and guard < 10_000:
            guard += 1
            name, target = self.pending.pop()
            self.defs[name] = self.walk(target, "sub", 0)
        if isinstance(root, dict) and isinstance(root.get("$ref"), str) and root["$ref"].startswith("#/$defs/"):
            target = self.defs.get(root["$ref"][len("#/$defs/") :])
            if isinstance(target, dict):
                description = root.get("description")
                root = copy.deepcopy(target)
                if description is not None and "anyOf" not in root:
                    root["description"] = description
        if not isinstance(root, dict):
            return root  # type: ignore[no-any-return]
        if "$id" in self.original:
            root["$id"] = self.original["$id"]
        used = self.reachable(root)
        if used:
            root["$defs"] = {name: self.defs[name] for name in self.defs if name in used}
        self.split_ref_descriptions(root)
        return root

    def reachable(self, root: dict[str, Any]) -> set[str]:
        used: set[str] = set()
        todo = [root]
        while todo:
            for node in _nodes(todo.pop()):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/$defs/"):
                    name = ref[len("#/$defs/") :]
                    if name not in used and name in self.defs:
                        used.add(name)
                        todo.append(self.defs[name])
        return used

    def split_ref_descriptions(self, root: dict[str, Any]) -> None:
        # Kimi expands a $ref in place, so a description both at the site and in the target
        # conflicts; a one-branch anyOf keeps the field's own description without the clash.
        for node in [n for top in (root, *root.get("$defs", {}).values()) for n in _nodes(top, skip_defs=True)]:
            ref = node.get("$ref")
            if not isinstance(ref, str) or "description" not in node:
                continue
            target = root if ref == "#" else self.defs.get(ref[len("#/$defs/") :]) if ref.startswith("#/$defs/") else None
            if isinstance(target, dict) and "description" in target:
                description = node.pop("description")
                if description != target["description"]:
                    del node["$ref"]
                    node["anyOf"] = [{"$ref": ref}]
                    node["description"] = description

    def walk(self, node: Any, where: str, depth: int) -> Any:
        """One subschema, normalised; ``where`` is root, additional (``{}`` allowed) or sub."""
        if depth > _MAX_NESTING:
            raise InvalidSchemaError(f"the schema nests deeper than {_MAX_NESTING} levels; flatten it")
        if node is True or node == {}:
            return {} if where == "additional" else {"type": "object"} if where == "root" else _anything()
        if not isinstance(node, dict):
            return node
        n = dict(node)
        for _ in range(_MAX_NESTING):
            if "allOf" not in n:
                break
            merged = self.merge_all_of(n)
            if "allOf" in merged:
                break  # parts that conflict: left for the checker to name
            n = merged
        for key in ("$defs", "definitions", "$id"):
            n.pop(key, None)
        hints = [f"{key}: {n.pop(key)}" for key in _HINTED if isinstance(n.get(key), str)]
        self.exclusive_bounds(n)
        for key in _DROPPED | set(_HINTED):
            n.pop(key, None)
        if "const" in n:
            n["enum"] = [n.pop("const")]
        if n.pop("nullable", False) is True:
            n = {"anyOf": [n, {"type": "null"}]}
        if "oneOf" in n:
            one_of = n.pop("oneOf")
            if "anyOf" not in n:
                n["anyOf"] = one_of
        if isinstance(n.get("type"), list):
            n = self.split_types(n)
        if "enum" in n and "anyOf" not in n and "$ref" not in n:
            n = self.split_enum(n)
        if "$ref" in n:
            out: dict[str, Any] = {"$ref": self.ref(n["$ref"])}
            if isinstance(n.get("description"), str):
                out["description"] = n["description"]
            return out
        if "anyOf" in n:
            return self.any_of(n, hints, where, depth)
        return self.typed(n, hints, where, depth)

    @staticmethod
    def exclusive_bounds(n: dict[str, Any]) -> None:
        # An integer's exclusive bound is an inclusive one shifted by 1; a number's becomes a looser
        # inclusive bound (validation against the original type keeps it strict).
        for exclusive, inclusive, step in (("exclusiveMinimum", "minimum", 1), ("exclusiveMaximum", "maximum", -1)):
            value = n.get(exclusive)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if n.get("type") == "integer":
                bound: float = (math.floor(value) + 1) if step == 1 else (math.ceil(value) - 1)
            else:
                bound = value
            current = n.get(inclusive)
            if isinstance(current, (int, float)) and not isinstance(current, bool):
                bound = max(bound, current) if step == 1 else min(bound, current)
            n[inclusive] = bound

    def merge_all_of(self, n: dict[str, Any]) -> dict[str, Any]:
        parts = n.pop("allOf")
        if not isinstance(parts, list):
            return n
        if len(parts) == 1 and isinstance(parts[0], dict):
            return {**parts[0], **n}
        merged: dict[str, Any] = {}
        for part in [*parts, n]:
            if isinstance(part, dict) and isinstance(part.get("$ref"), str) and part["$ref"].startswith("#/"):
                resolved = self.pointer_target(part["$ref"])
                part = {**(resolved if isinstance(resolved, dict) else {}), **{k: v for k, v in part.items() if k != "$ref"}}
            if not isinstance(part, dict):
                return {**n, "allOf": parts}
            for key, value in part.items():
                if key == "properties" and isinstance(value, dict):
                    merged.setdefault("properties", {}).update(value)
                elif key == "required" and isinstance(value, list):
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                elif key in merged and _key(merged[key]) != _key(value) and key not in ("description", "title"):
                    return {**n, "allOf": parts}  # truly conflicting parts: the checker names them
                else:
                    merged[key] = value
        return merged

    @staticmethod
    def split_types(n: dict[str, Any]) -> dict[str, Any]:
        types = [t for t in n.pop("type") if isinstance(t, str)]
        if len(types) == 1:
            n["type"] = types[0]
            return n
        shared = {k: v for k, v in n.items() if k not in _TYPED_KEYWORDS and k not in ("description", "default")}
        branches = []
        for kind in types:
            branch: dict[str, Any] = {"type": kind, **shared}
            branch.update({k: v for k, v in n.items() if k in _BY_TYPE.get(kind, ())})
            if isinstance(n.get("enum"), list):
                values = [v for v in n["enum"] if _enum_kind(v) == kind or (kind == "number" and _enum_kind(v) == "integer")]
                if not values:
                    continue
                branch["enum"] = values
            branches.append(branch)
        out: dict[str, Any] = {"anyOf": branches}
        if "description" in n:
            out["description"] = n["description"]
        return out

    @staticmethod
    def split_enum(n: dict[str, Any]) -> dict[str, Any]:
        values = n["enum"]
        if not isinstance(values, list):
            return n
        values = [_plain_number(v) for v in values]
        declared = n.get("type")
        groups: dict[str, list[Any]] = {}
        for value in values:
            kind = _enum_kind(value)
            if kind == "integer" and (declared == "number" or "number" in groups):
                kind = "number"
            elif kind == "number" and "integer" in groups:
                groups.setdefault("number", []).extend(groups.pop("integer"))
            groups.setdefault(kind, []).append(value)
        if isinstance(declared, str):
            groups = {k: v for k, v in groups.items() if k == declared} or {declared: []}
        branches: list[dict[str, Any]] = []
        for kind, group in groups.items():
            rest = {k: v for k, v in n.items() if k in _BY_TYPE.get(kind, ()) or k == "default"}
            if kind in ("string", "integer", "number") and group:
                branches.append({"type": kind, "enum": group, **rest})
            elif kind in ("boolean", "null") or not group:
                # MFJS enums hold one of string/integer/number; a boolean literal becomes the type,
                # with the value as a hint for the model.
                branch = {"type": kind, **rest}
                if kind == "boolean" and len(set(group)) == 1:
                    branch["description"] = f"always {json.dumps(group[0])}"
                branches.append(branch)
            # other kinds (objects, arrays as enum values) cannot be expressed: dropped
        out: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
        description = n.get("description")
        if description is not None:
            hint = out.get("description") if len(branches) == 1 else None
            out["description"] = _with_hint(description, [hint] if hint else [])
        return out

    def any_of(self, n: dict[str, Any], hints: list[str], where: str, depth: int) -> dict[str, Any]:
        raw = n["anyOf"]
        if not isinstance(raw, list):
            return n
        pushed = {k: v for k, v in n.items() if k == "type" or k in _TYPED_KEYWORDS}
        branches: list[Any] = []
        for branch in raw:
            if isinstance(branch, dict) and pushed and "$ref" not in branch:
                kind = branch.get("type", pushed.get("type"))
                fitting = {k: v for k, v in pushed.items()
                           if k == "type" or not isinstance(kind, str) or k in _BY_TYPE.get(kind, ()) or k == "enum"}  # fmt: skip
                branch = {**fitting, **branch}
            walked = self.walk(branch, "sub", depth + 1)
            if isinstance(walked, dict) and set(walked) <= {"anyOf", "description"} and isinstance(walked.get("anyOf"), list):
                branches.extend(walked["anyOf"])
            else:
                branches.append(walked)
        branches = _dedupe(branches)
        description = _with_hint(n.get("description"), hints)
        if len(branches) == 1 and isinstance(branches[0], dict):
            single = branches[0]
            if description is not None and "description" not in single:
                single["description"] = description
            return single if where != "root" or single.get("type") == "object" else {"anyOf": branches}
        out: dict[str, Any] = {"anyOf": branches}
        if description is not None:
            out["description"] = description
        return out

    def typed(self, n: dict[str, Any], hints: list[str], where: str, depth: int) -> dict[str, Any]:
        kind = n.get("type")
        if kind is None:
            if where == "root" or n.keys() & _BY_TYPE["object"]:
                kind = "object"
            elif n.keys() & _BY_TYPE["array"]:
                kind = "array"
            elif n.keys() & {"minLength", "maxLength"}:
                kind = "string"
            elif n.keys() & {"minimum", "maximum"}:
                kind = "number"
            else:
                anything = _anything()
                if "description" in n:
                    anything["description"] = n["description"]
                return anything if where != "additional" else {}
            n["type"] = kind
        if kind == "object":
            properties = n.get("properties")
            if isinstance(properties, dict):
                n["properties"] = {name: self.walk(sub, "sub", depth + 1) for name, sub in properties.items()}
            if isinstance(n.get("required"), list) and isinstance(n.get("properties"), dict):
                n["required"] = [r for r in n["required"] if r in n["properties"]]
            extra = n.get("additionalProperties")
            if extra is not None and not isinstance(extra, bool):
                n["additionalProperties"] = self.walk(extra, "additional", depth + 1)
        elif kind == "array":
            self.array(n, depth)
        for key in ("minimum", "maximum"):
            if key in n:
                n[key] = _plain_number(n[key])
                if n[key] is None:
                    del n[key]  # a bound only an exponent can write: validation still enforces it
        if "default" in n and has_exponent(n["default"]):
            del n["default"]  # Kimi ignores default anyway, and rejects exponents
        description = _with_hint(n.get("description"), hints)
        if description is not None:
            n["description"] = description
        return n

    def array(self, n: dict[str, Any], depth: int) -> None:
        items = n.get("items")
        prefix = n.pop("prefixItems", None)
        if isinstance(items, list):  # draft-4 tuples
            prefix, items = items, n.pop("additionalItems", None)
            n.pop("items")
        if isinstance(prefix, list):
            # A tuple becomes an array of the union of its item types, with its length kept.
            kinds = list(prefix)
            if isinstance(items, dict) or items is True:
                kinds.append(items)
                n.setdefault("minItems", len(prefix))
            else:
                n.setdefault("minItems", len(prefix))
                n.setdefault("maxItems", len(prefix))
            if len(_dedupe(list(prefix))) > 1:
                # The order of item types is lost in the union: tell the model in words.
                order = ", ".join(_describe(k) for k in prefix)
                n["description"] = _with_hint(n.get("description"), [f"items in order: {order}"])
            n["items"] = {"anyOf": kinds} if len(kinds) != 1 else kinds[0]
            if not kinds:
                n.pop("items")
        if "items" in n:
            n["items"] = self.walk(n["items"], "sub", depth + 1)


def _describe(schema: Any) -> str:
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), str):
            return str(schema["type"])
        if isinstance(schema.get("$ref"), str):
            return str(schema["$ref"]).rsplit("/", 1)[-1]
    return "any"


def _nodes(schema: Any, *, skip_defs: bool = False) -> Iterator[dict[str, Any]]:
    """Every subschema of ``schema`` (a bounded, explicit-stack walk)."""
    stack = [schema]
    count = 0
    while stack and count < 100_000:
        count += 1
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node
        properties = node.get("properties")
        if isinstance(properties, dict):
            stack.extend(properties.values())
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                stack.append(node[key])
        if isinstance(node.get("anyOf"), list):
            stack.extend(node["anyOf"])
        if not skip_defs and isinstance(node.get("$defs"), dict) and node is schema:
            stack.extend(node["$defs"].values())


def normalize_mfjs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` rewritten into MFJS where it can be; the input is not changed.

    >>> normalize_mfjs({"type": "object", "properties": {"k": {"const": "a", "title": "K"}}})
    {'type': 'object', 'properties': {'k': {'type': 'string', 'enum': ['a']}}}
    """
    if not isinstance(schema, Mapping):
        raise InvalidSchemaError(f"a JSON schema must be a dict, got {type(schema).__name__}")
    original = copy.deepcopy(dict(schema))
    result: dict[str, Any] = _Normaliser(original).run()
    return result


def to_mfjs(tp: Any) -> dict[str, Any]:
    """The MFJS schema for ``tp`` (see ``json_schema_of``), or ``InvalidSchemaError`` naming path and rule.

    >>> to_mfjs({"type": "object", "properties": {"when": {"type": "string", "format": "date"}}})
    {'type': 'object', 'properties': {'when': {'type': 'string', 'description': 'format: date'}}}
    """
    normalised = normalize_mfjs(json_schema_of(tp))
    problems = check_mfjs(normalised)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        fix = _FIXES.get(first.rule, "change the type so its schema avoids this construct")
        raise InvalidSchemaError(
            f"the JSON schema of {_type_name(tp)} is not valid for Kimi even after normalising: "
            f"{first.message} (rule {first.rule}){more}; {fix}",
            problems,
        )
    return normalised
