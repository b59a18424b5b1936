"""The checker for Moonshot Flavored JSON Schema (MFJS), the dialect Kimi accepts (docs/kimi-api.md §2.7).

Pure: a schema dict in, a list of ``MFJSProblem`` out, each with the path in Kimi's style
(``properties.pair.items``; ``root`` for the root itself), a short rule id, and the message Kimi's
400 would carry (``At path 'properties.task': type is not defined``). The rules are data at the top
of the module so they can change when Kimi's enforcement does.

>>> [p.message for p in check_mfjs({"type": "object", "properties": {"task": {}}})]
["At path 'properties.task': type is not defined"]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
UNSUPPORTED = (
    "allOf", "oneOf", "not", "if", "then", "else", "const", "pattern", "format", "prefixItems",
    "patternProperties", "propertyNames", "contains", "uniqueItems", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties", "examples", "$schema", "$comment",
)  # fmt: skip
BESIDE_COMPOSITION = frozenset({"description", "title"})
ROOT_ONLY = frozenset({"$defs", "$id"})
MAX_PROPERTIES = 100
MAX_DEPTH = 5
MAX_ENUM_VALUES = 500
_MAX_WALK = 10_000
"""Bounds the walk: a schema with more subschemas than this is reported, not walked on."""


@dataclass(frozen=True)
class MFJSProblem:
    """One MFJS violation: where (Kimi-style path), which rule, and Kimi's message for it."""

    path: str
    rule: str
    message: str


def _problem(path: str, rule: str, text: str) -> MFJSProblem:
    return MFJSProblem(path, rule, f"At path '{path}': {text}")


def _join(path: str, *parts: str | int) -> str:
    tail = ".".join(str(p) for p in parts)
    return tail if path == "root" else f"{path}.{tail}"


def has_exponent(value: Any) -> bool:
    """Whether ``value``'s JSON text writes a number with an exponent (``1e-07``)."""
    if isinstance(value, float):
        return "e" in json.dumps(value).lower()
    if isinstance(value, dict):
        return any(has_exponent(v) for v in value.values())
    if isinstance(value, list):
        return any(has_exponent(v) for v in value)
    return False


def _enum_kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "boolean" if isinstance(value, bool) else "null"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


class _Checker:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.defs: dict[str, Any] = root.get("$defs") if isinstance(root.get("$defs"), dict) else {}  # type: ignore[assignment]
        self.problems: list[MFJSProblem] = []
        self.properties = 0
        self.enum_values = 0
        self.visited = 0
        self.ref_depths: dict[str, int] = {}

    def add(self, path: str, rule: str, text: str) -> None:
        self.problems.append(_problem(path, rule, text))

    def check_root(self) -> None:
        root = self.root
        if root.get("type") != "object" and root != {}:
            self.add("root", "root-type", 'type is required and must be "object"')
        defs = root.get("$defs")
        if defs is not None:
            if not isinstance(defs, dict):
                self.add("$defs", "defs-shape", "$defs must be an object")
            else:
                for name, sub in defs.items():
                    if "/" in name:
                        self.add(_join("$defs", name), "defs-name", f"$defs name '{name}' must not contain '/'")
                    self.schema(sub, _join("$defs", name), allow_empty=False)
        self.schema(root, "root", allow_empty=True, is_root=True)
        if self.properties > MAX_PROPERTIES:
            self.add("root", "max-properties",
                     f"too many object properties: {self.properties}, at most {MAX_PROPERTIES} are allowed")  # fmt: skip
        if self.enum_values > MAX_ENUM_VALUES:
            self.add("root", "max-enum-values",
                     f"too many enum values: {self.enum_values}, at most {MAX_ENUM_VALUES} are allowed")  # fmt: skip
        depth = self.depth(root, set())
        if depth > MAX_DEPTH:
            self.add("root", "max-depth", f"schema nesting is {depth} levels deep, at most {MAX_DEPTH} are allowed")

    def resolve(self, ref: str) -> Any:
        if ref == "#":
            return self.root
        if ref.startswith("#/$defs/"):
            return self.defs.get(ref[len("#/$defs/") :])
        return None

    def schema(self, node: Any, path: str, *, allow_empty: bool, is_root: bool = False) -> None:
        self.visited += 1
        if self.visited > _MAX_WALK:
            if self.visited == _MAX_WALK + 1:
                self.add(path, "max-size", f"the schema has more than {_MAX_WALK} subschemas")
            return
        if not isinstance(node, dict):
            self.add(path, "schema-shape", "schema must be an object")
            return
        if node == {}:
            if not allow_empty:
                self.add(path, "type-missing", "type is not defined")
            return
        for key in UNSUPPORTED:
            if key in node:
                self.add(path, "unsupported", f"{key} is not supported")
        if not is_root:
            for key in sorted(ROOT_ONLY & node.keys()):
                self.add(path, "root-only", f"{key} is only allowed at the root")
        for key in ("minimum", "maximum", "enum", "default"):
            if key in node and has_exponent(node[key]):
                self.add(_join(path, key), "number-exponent", "numbers must be written without exponents")
        if "$ref" in node:
            self.ref(node, path)
            return
        if "anyOf" in node:
            self.any_of(node, path)
            return
        kind = node.get("type")
        if kind is None:
            if not (is_root and not (node.keys() - ROOT_ONLY)):
                self.add(path, "type-missing", "type is not defined")
            return
        if not isinstance(kind, str):
            self.add(_join(path, "type"), "type-string", "type must be a string")
            return
        if kind not in TYPES:
            self.add(_join(path, "type"), "type-unknown", f"type '{kind}' is not supported")
            return
        if "enum" in node:
            self.enum(node["enum"], kind, path)
        if kind == "object":
            self.object(node, path)
        elif kind == "array" and "items" in node:
            items = node["items"]
            if not isinstance(items, dict):
                self.add(_join(path, "items"), "items-object", "items must be an object")
            else:
                self.schema(items, _join(path, "items"), allow_empty=False)

    def ref(self, node: dict[str, Any], path: str) -> None:
        ref = node["$ref"]
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/$defs/")):
            self.add(path, "ref-internal", f"$ref {ref!r} must point into '#/$defs/' or be '#'")
            return
        target = self.resolve(ref)
        if not isinstance(target, dict):
            self.add(path, "ref-missing", f"$ref '{ref}' is not defined in $defs")
            return
        extra = node.keys() - {"$ref"} - (ROOT_ONLY if path == "root" else set())
        # Kimi expands the $ref in place: a sibling the target also has, or any sibling beyond
        # description/title, is a conflict.
        conflicts = sorted(k for k in extra if k not in BESIDE_COMPOSITION or k in target)
        if conflicts:
            self.add(path, "ref-siblings", f"conflicting keywords found after $ref expansion: {', '.join(conflicts)}")

    def any_of(self, node: dict[str, Any], path: str) -> None:
        extra = node.keys() - {"anyOf"} - (ROOT_ONLY if path == "root" else set())
        if "type" in extra:
            self.add(path, "anyof-type",
                     "when using anyOf, type should be defined in anyOf items instead of the parent schema")  # fmt: skip
        others = sorted(extra - BESIDE_COMPOSITION - {"type"} - set(UNSUPPORTED))
        if others:
            self.add(path, "anyof-siblings",
                     f"when using anyOf, only description and title may stand beside it, found: {', '.join(others)}")  # fmt: skip
        branches = node["anyOf"]
        if not isinstance(branches, list) or not branches:
            self.add(_join(path, "anyOf"), "anyof-shape", "anyOf must be a non-empty array")
            return
        for i, branch in enumerate(branches):
            self.schema(branch, _join(path, "anyOf", i), allow_empty=False)

    def enum(self, values: Any, kind: str, path: str) -> None:
        if not isinstance(values, list) or not values:
            self.add(_join(path, "enum"), "enum-shape", "enum must be a non-empty array")
            return
        self.enum_values += len(values)
        kinds = {_enum_kind(v) for v in values}
        if kinds == {"integer", "number"}:
            kinds = {"number"}
        if len(kinds) > 1 or not kinds <= {"string", "integer", "number"}:
            self.add(_join(path, "enum"), "enum-type",
                     "enum values must all be strings, all integers or all numbers")  # fmt: skip
            return
        (value_kind,) = kinds
        if not (value_kind == kind or (value_kind == "integer" and kind == "number")):
            self.add(_join(path, "enum"), "enum-type", f"enum values of type {value_kind} do not match type '{kind}'")

    def object(self, node: dict[str, Any], path: str) -> None:
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            self.add(_join(path, "properties"), "properties-shape", "properties must be an object")
            properties = {}
        self.properties += len(properties)
        for name, sub in properties.items():
            self.schema(sub, _join(path, "properties", name), allow_empty=False)
        required = node.get("required")
        if required is not None:
            if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
                self.add(_join(path, "required"), "required-shape", "required must be an array of strings")
            else:
                for name in required:
                    if name not in properties:
                        self.add(_join(path, "required"), "required-defined",
                                 f"required property '{name}' is not defined in properties")  # fmt: skip
        extra = node.get("additionalProperties")
        if extra is not None and not isinstance(extra, bool):
            self.schema(extra, _join(path, "additionalProperties"), allow_empty=True)

    def children(self, node: dict[str, Any]) -> Iterator[Any]:
        properties = node.get("properties")
        if isinstance(properties, dict):
            yield from properties.values()
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield node[key]
        if isinstance(node.get("anyOf"), list):
            yield from node["anyOf"]

    def depth(self, node: Any, expanding: set[str]) -> int:
        """Object levels along the deepest path; a recursive $ref counts once, not forever."""
        if not isinstance(node, dict):
            return 0
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in expanding:
                return 0
            if ref not in self.ref_depths:
                self.ref_depths[ref] = self.depth(self.resolve(ref), expanding | {ref})
            return self.ref_depths[ref]
        here = 1 if node.get("type") == "object" else 0
        if len(expanding) > 64:
            return here
        deepest = max((self.depth(child, expanding) for child in self.children(node)), default=0)
        return here + deepest


def check_mfjs(schema: Any) -> list[MFJSProblem]:
    """Every MFJS rule ``schema`` breaks, in Kimi's words; empty when Kimi would accept it.

    >>> check_mfjs({"type": "object", "properties": {"n": {"type": "integer"}}})
    []
    """
    if not isinstance(schema, dict):
        return [_problem("root", "root-type", 'type is required and must be "object"')]
    checker = _Checker(schema)
    checker.check_root()
    return checker.problems
