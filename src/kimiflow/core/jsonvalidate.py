"""A small JSON Schema validator: every error in a decoded JSON value, each with its JSON path.

Pure, no I/O, standard library only. It covers the keywords that pydantic, msgspec and people write
(draft 2020-12 semantics, with the draft-7 spellings ``definitions`` and array ``items``):

- ``type`` (a name or a list of names; ``integer`` is any whole number, ``1.0`` included; a boolean
  is never a number), ``enum``, ``const`` (JSON equality: ``1 == 1.0``, ``true != 1``);
- objects: ``properties``, ``required``, ``additionalProperties`` (bool or schema),
  ``patternProperties``, ``propertyNames``, ``minProperties``/``maxProperties``, ``dependentRequired``;
- arrays: ``items``, ``prefixItems`` (and draft-7 ``items: [...]`` with ``additionalItems``),
  ``minItems``/``maxItems``, ``uniqueItems``, ``contains`` with ``minContains``/``maxContains``;
- numbers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum`` (numbers, or the
  draft-4 booleans), ``multipleOf`` (exact, on the decimal value as written: 0.3 is a multiple of 0.1);
- strings: ``minLength``/``maxLength`` (in code points), ``pattern`` (``re.search``), ``format``
  ``date-time``, ``date``, ``time``, ``email``, ``uuid`` (lenient but real; other formats are notes);
- ``anyOf``, ``oneOf``, ``allOf``, ``not``, ``if``/``then``/``else``, boolean schemas, and ``$ref``
  to the same document (``#``, ``#/$defs/...``, ``#/definitions/...``, any local JSON pointer), with
  its sibling keywords applied too. Recursive schemas work; a ``$ref`` loop that never reaches a
  value is reported instead of looping.

``compile_schema`` checks the schema once (types, regular expressions, references) and gives a
validator to reuse; a schema it cannot use raises ``InvalidArgumentError`` naming where and why.
Messages describe the rule and never quote the value (unknown keys are named after the words
``unknown field``, which ``structured.redacted_message`` cuts from exception text).

>>> v = compile_schema({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
...                     "required": ["n", "name"]})
>>> [(e.path, e.message) for e in v.errors({"n": 0})]
[('$.n', 'must be >= 1'), ('$.name', 'required field is missing')]
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeGuard

from kimiflow.core.errors import InvalidArgumentError

MAX_DEPTH = 200
"""Nesting (of the value and of in-place keywords) past which validation stops with an error."""

_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z", re.ASCII)
_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(?:[Zz]|[+-](\d{2}):?(\d{2}))?\Z", re.ASCII)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_SHOWN_VALUES = 10


@dataclass(frozen=True)
class ValidationIssue:
    """One way the value breaks the schema: where (``$.items[2].name``) and the rule it breaks."""

    path: str
    message: str


def child_path(path: str, key: str | int) -> str:
    """``path`` extended by an array index or an object key (``["..."]`` when not an identifier).

    >>> child_path("$", "items"), child_path("$.items", 2), child_path("$", "a b")
    ('$.items', '$.items[2]', '$["a b"]')
    """
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENT.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value (``integer`` for whole numbers, ``number`` otherwise)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _is_type(value: Any, name: str) -> bool:
    kind = json_type(value)
    return kind == name or (name == "number" and kind == "integer")


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), booleans apart from numbers, objects unordered.

    >>> json_equal(1, 1.0), json_equal(True, 1), json_equal({"a": [1]}, {"a": [1.0]})
    (True, False, True)
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a is None and b is None


def _json_key(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (``1`` and ``1.0`` alike, ``true`` apart from ``1``)."""
    if isinstance(value, bool):
        return ("b", value)
    if _is_number(value):
        return ("n", value)  # Python's 1 == 1.0 and hash(1) == hash(1.0)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, Mapping):
        return ("o", frozenset((k, _json_key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("a", tuple(_json_key(v) for v in value))
    return ("z", None) if value is None else ("?", id(value))


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _decimal(value: float | int) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _valid_date(text: str) -> bool:
    match = _DATE.match(text)
    if not match:
        return False
    try:
        datetime.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def _valid_time(text: str) -> bool:
    match = _TIME.match(text)
    if not match:
        return False
    hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
    off_h, off_m = int(match[4] or 0), int(match[5] or 0)
    return hour <= 23 and minute <= 59 and second <= 60 and off_h <= 23 and off_m <= 59


def _valid_date_time(text: str) -> bool:
    if len(text) < 11 or text[10] not in "Tt ":
        return False
    return _valid_date(text[:10]) and _valid_time(text[11:])


_FORMATS: dict[str, tuple[Any, str]] = {
    "date-time": (_valid_date_time, "a date-time (RFC 3339, e.g. 2026-12-02T09:30:00Z)"),
    "date": (_valid_date, "a date (YYYY-MM-DD, e.g. 2026-12-02)"),
    "time": (_valid_time, "a time (HH:MM:SS, e.g. 09:30:00Z)"),
    "email": (lambda text: bool(_EMAIL.match(text)), "an email address (name@domain)"),
    "uuid": (lambda text: bool(_UUID.match(text)), "a UUID (8-4-4-4-12 hex digits)"),
}


def _unescape(token: str) -> str:
    from urllib.parse import unquote

    return unquote(token).replace("~1", "/").replace("~0", "~")


class CompiledSchema:
    """A checked schema: ``errors(value)`` lists every problem, ``is_valid(value)`` says if there is none."""

    def __init__(self, schema: Any) -> None:
        if not isinstance(schema, (Mapping, bool)):
            raise InvalidArgumentError(
                f"a JSON schema must be an object (or true/false), got {json_type(schema)}; e.g. {{\"type\": \"object\"}}"
            )
        self.root = schema
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._refs: dict[str, Any] = {}
        self._check(schema, "#", set())

    # --- compile: check every keyword once, resolve references, compile patterns --------------

    def _bad(self, where: str, problem: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"the JSON schema is not usable at {where}: {problem}")

    def resolve(self, ref: str, where: str) -> Any:
        """The schema ``ref`` points to in this document (``#``, ``#/$defs/X``, any local pointer)."""
        if ref in self._refs:
            return self._refs[ref]
        if not ref.startswith("#"):
            raise self._bad(where, f"$ref {ref!r} is not local; only '#/$defs/...', '#/definitions/...' "
                                   "or another pointer into the same schema is supported")  # fmt: skip
        node: Any = self.root
        pointer = ref[1:]
        if pointer and not pointer.startswith("/"):
            raise self._bad(where, f"$ref {ref!r} is not a JSON pointer; write it as '#/$defs/Name'")
        for token in pointer.split("/")[1:] if pointer else []:
            part = _unescape(token)
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self._bad(where, f"$ref {ref!r} points to nothing; define it under $defs")
        if not isinstance(node, (Mapping, bool)):
            raise self._bad(where, f"$ref {ref!r} points to a {json_type(node)}, not a schema")
        self._refs[ref] = node
        return node

    def _pattern(self, pattern: str, where: str) -> re.Pattern[str]:
        compiled = self._patterns.get(pattern)
        if compiled is None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise self._bad(where, f"pattern {pattern!r} is not a valid regular expression ({exc})") from None
            self._patterns[pattern] = compiled
        return compiled

    def _check(self, schema: Any, where: str, seen: set[int]) -> None:
        if isinstance(schema, bool):
            return
        if not isinstance(schema, Mapping):
            raise self._bad(where, f"expected a schema (an object or true/false), got {json_type(schema)}")
        if id(schema) in seen:
            return
        seen.add(id(schema))
        kind = schema.get("type")
        if kind is not None:
            names = kind if isinstance(kind, list) else [kind]
            for name in names:
                if name not in _TYPES:
                    raise self._bad(f"{where}/type", f"unknown type {name!r}; use one of {', '.join(_TYPES)}")
        for key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
            value = schema.get(key)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise self._bad(f"{where}/{key}", f"{key} must be an object of schemas")
            for name, sub in value.items():
                if key == "patternProperties":
                    self._pattern(name, f"{where}/{key}")
                self._check(sub, f"{where}/{key}/{name}", seen)
        for key in ("additionalProperties", "propertyNames", "additionalItems", "contains", "not", "if", "then",
                    "else"):  # fmt: skip
            if key in schema:
                self._check(schema[key], f"{where}/{key}", seen)
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if key in schema:
                value = schema[key]
                if not isinstance(value, list) or (not value and key != "prefixItems"):
                    raise self._bad(f"{where}/{key}", f"{key} must be a non-empty array of schemas")
                for i, sub in enumerate(value):
                    self._check(sub, f"{where}/{key}/{i}", seen)
        if "items" in schema:
            items = schema["items"]
            if isinstance(items, list):
                for i, sub in enumerate(items):
                    self._check(sub, f"{where}/items/{i}", seen)
            else:
                self._check(items, f"{where}/items", seen)
        if "required" in schema and not (isinstance(schema["required"], list)
                                         and all(isinstance(n, str) for n in schema["required"])):  # fmt: skip
            raise self._bad(f"{where}/required", "required must be an array of property names")
        needs = schema.get("dependentRequired")
        if needs is not None and not (isinstance(needs, Mapping) and all(
                isinstance(v, list) and all(isinstance(n, str) for n in v) for v in needs.values())):  # fmt: skip
            raise self._bad(f"{where}/dependentRequired", "dependentRequired must map names to arrays of names")
        if "enum" in schema and not isinstance(schema["enum"], list):
            raise self._bad(f"{where}/enum", "enum must be an array of the allowed values")
        if isinstance(schema.get("pattern"), str):
            self._pattern(schema["pattern"], f"{where}/pattern")
        elif "pattern" in schema:
            raise self._bad(f"{where}/pattern", "pattern must be a string (a regular expression)")
        for key in ("minimum", "maximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
                    "minProperties", "maxProperties", "minContains", "maxContains"):  # fmt: skip
            if key in schema and not _is_number(schema[key]):
                raise self._bad(f"{where}/{key}", f"{key} must be a number")
        if "multipleOf" in schema and schema["multipleOf"] <= 0:
            raise self._bad(f"{where}/multipleOf", "multipleOf must be greater than 0")
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in schema and not (_is_number(schema[key]) or isinstance(schema[key], bool)):
                raise self._bad(f"{where}/{key}", f"{key} must be a number")
        ref = schema.get("$ref")
        if ref is not None:
            if not isinstance(ref, str):
                raise self._bad(f"{where}/$ref", "$ref must be a string such as '#/$defs/Name'")
            self._check(self.resolve(ref, f"{where}/$ref"), ref, seen)

    # --- validate ----------------------------------------------------------------------------

    def errors(self, value: Any) -> list[ValidationIssue]:
        """Every way ``value`` breaks the schema, in document order; empty when it conforms."""
        out: list[ValidationIssue] = []
        try:
            self._validate(self.root, value, "$", out, frozenset(), 0)
        except RecursionError:  # the caller's own stack was already deep: report it, do not crash
            out.append(ValidationIssue("$", "nested too deeply to validate"))
        return out

    def is_valid(self, value: Any) -> bool:
        """Whether ``value`` conforms to the schema."""
        return not self.errors(value)

    def _sub(self, schema: Any, value: Any, path: str, active: frozenset[str], depth: int) -> list[ValidationIssue]:
        out: list[ValidationIssue] = []
        self._validate(schema, value, path, out, active, depth)
        return out

    def _validate(self, schema: Any, value: Any, path: str, out: list[ValidationIssue], active: frozenset[str],
                  depth: int) -> None:  # fmt: skip
        # ``active``: the $refs entered at this very value; entering one again would never end.
        if schema is True:
            return
        if schema is False:
            out.append(ValidationIssue(path, "no value is allowed here"))
            return
        if depth > MAX_DEPTH:
            out.append(ValidationIssue(path, f"nested deeper than {MAX_DEPTH} levels; cannot validate further"))
            return
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if ref in active:
                raise self._bad(ref, "its $ref chain comes back to itself without reaching a value; "
                                     "put the recursion inside properties or items")  # fmt: skip
            self._validate(self.resolve(ref, ref), value, path, out, active | {ref}, depth + 1)
        self._generic(schema, value, path, out, active, depth)
        if isinstance(value, Mapping):
            self._object(schema, value, path, out, depth)
        elif isinstance(value, (list, tuple)):
            self._array(schema, value, path, out, depth)
        elif isinstance(value, str):
            self._string(schema, value, path, out)
        elif _is_number(value):
            self._number(schema, value, path, out)

    def _generic(self, schema: Mapping[str, Any], value: Any, path: str, out: list[ValidationIssue],
                 active: frozenset[str], depth: int) -> None:  # fmt: skip
        kind = schema.get("type")
        if kind is not None:
            names = kind if isinstance(kind, list) else [kind]
            if not any(_is_type(value, name) for name in names):
                out.append(ValidationIssue(path, f"expected {' or '.join(names)}, got {json_type(value)}"))
        if "enum" in schema and not any(json_equal(value, item) for item in schema["enum"]):
            allowed = ", ".join(_shown(v) for v in schema["enum"][:_SHOWN_VALUES])
            more = ", ..." if len(schema["enum"]) > _SHOWN_VALUES else ""
            out.append(ValidationIssue(path, f"must be one of {allowed}{more}"))
        if "const" in schema and not json_equal(value, schema["const"]):
            out.append(ValidationIssue(path, f"must be {_shown(schema['const'])}"))
        if "allOf" in schema:
            for sub in schema["allOf"]:
                self._validate(sub, value, path, out, active, depth + 1)
        if "anyOf" in schema:
            self._any_of(schema["anyOf"], value, path, out, active, depth)
        if "oneOf" in schema:
            results = [self._sub(sub, value, path, active, depth + 1) for sub in schema["oneOf"]]
            passed = [i for i, errors in enumerate(results) if not errors]
            if not passed:
                self._none_matched("oneOf", schema["oneOf"], results, value, path, out)
            elif len(passed) > 1:
                out.append(ValidationIssue(path, f"matches {len(passed)} of the oneOf schemas (numbers "
                                                 f"{', '.join(map(str, passed))}); it must match exactly one"))
        if "not" in schema and not self._sub(schema["not"], value, path, active, depth + 1):
            out.append(ValidationIssue(path, "must not match the schema under 'not'"))
        if "if" in schema:
            branch = "then" if not self._sub(schema["if"], value, path, active, depth + 1) else "else"
            if branch in schema:
                self._validate(schema[branch], value, path, out, active, depth + 1)

    def _any_of(self, branches: list[Any], value: Any, path: str, out: list[ValidationIssue],
                active: frozenset[str], depth: int) -> None:  # fmt: skip
        results = []
        for sub in branches:
            errors = self._sub(sub, value, path, active, depth + 1)
            if not errors:
                return
            results.append(errors)
        self._none_matched("anyOf", branches, results, value, path, out)

    def _none_matched(self, keyword: str, branches: list[Any], results: list[list[ValidationIssue]], value: Any,
                      path: str, out: list[ValidationIssue]) -> None:  # fmt: skip
        # The branches whose type fits the value: when exactly one does, its errors are the reason.
        fitting = [errors for errors in results
                   if not any(e.path == path and e.message.startswith("expected ") for e in errors)]  # fmt: skip
        if len(fitting) == 1:
            out.extend(fitting[0])
            return
        kinds = [self._kind(sub) for sub in branches]
        if all(kinds) and not fitting:
            names = " or ".join(dict.fromkeys(k for k in kinds if k))
            out.append(ValidationIssue(path, f"expected {names}, got {json_type(value)}"))
            return
        out.append(ValidationIssue(path, f"matches none of the {len(branches)} schemas of {keyword}"))

    def _kind(self, schema: Any) -> str | None:
        if isinstance(schema, Mapping):
            if isinstance(schema.get("$ref"), str) and "type" not in schema:
                try:
                    return self._kind(self.resolve(schema["$ref"], schema["$ref"]))
                except InvalidArgumentError:
                    return None
            kind = schema.get("type")
            if isinstance(kind, str):
                return kind
            if isinstance(kind, list) and kind:
                return " or ".join(kind)
        return None

    def _object(self, schema: Mapping[str, Any], value: Mapping[str, Any], path: str, out: list[ValidationIssue],
                depth: int) -> None:  # fmt: skip
        properties = schema.get("properties") or {}
        patterns = schema.get("patternProperties") or {}
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            at = child_path(path, key)
            matched = key in properties
            if matched:
                self._validate(properties[key], item, at, out, frozenset(), depth + 1)
            for pattern, sub in patterns.items():
                if self._patterns[pattern].search(key):
                    matched = True
                    self._validate(sub, item, at, out, frozenset(), depth + 1)
            if not matched:
                if extra is False:
                    out.append(ValidationIssue(path, f"unknown field {json.dumps(key, ensure_ascii=False)} is not "
                                                     "allowed (additionalProperties is false)"))  # fmt: skip
                elif extra is not True:
                    self._validate(extra, item, at, out, frozenset(), depth + 1)
        for name in schema.get("required") or ():
            if name not in value:
                out.append(ValidationIssue(child_path(path, name), "required field is missing"))
        if "propertyNames" in schema:
            for key in value:
                for issue in self._sub(schema["propertyNames"], key, path, frozenset(), depth + 1):
                    out.append(ValidationIssue(path, f"a field name breaks propertyNames: {issue.message}"))
        for name, needed in (schema.get("dependentRequired") or {}).items():
            if name in value:
                for other in needed:
                    if other not in value:
                        out.append(ValidationIssue(child_path(path, other), f"required when {name!r} is present"))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            out.append(ValidationIssue(path, f"must have at least {schema['minProperties']} fields"))
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(ValidationIssue(path, f"must have at most {schema['maxProperties']} fields"))

    def _array(self, schema: Mapping[str, Any], value: Sequence[Any], path: str, out: list[ValidationIssue],
               depth: int) -> None:  # fmt: skip
        items = schema.get("items")
        if isinstance(items, list):  # draft 7: items as a tuple, additionalItems for the rest
            prefix, rest = items, schema.get("additionalItems")
        else:
            prefix, rest = schema.get("prefixItems") or [], items
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else rest
            if sub is False:
                out.append(ValidationIssue(path, f"must have at most {len(prefix)} items"))
                break
            if sub is not None:
                self._validate(sub, item, child_path(path, i), out, frozenset(), depth + 1)
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(ValidationIssue(path, f"must have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(ValidationIssue(path, f"must have at most {schema['maxItems']} items"))
        if schema.get("uniqueItems") is True:
            seen: dict[Any, int] = {}
            for j, item in enumerate(value):
                first = seen.setdefault(_json_key(item), j)
                if first != j:
                    out.append(ValidationIssue(child_path(path, j), f"repeats item [{first}]; items must be unique"))
        if "contains" in schema:
            found = sum(1 for item in value if not self._sub(schema["contains"], item, path, frozenset(), depth + 1))
            low, high = schema.get("minContains", 1), schema.get("maxContains")
            if found < low:
                out.append(ValidationIssue(path, f"must contain at least {low} item(s) matching 'contains'"))
            if high is not None and found > high:
                out.append(ValidationIssue(path, f"must contain at most {high} item(s) matching 'contains'"))

    def _string(self, schema: Mapping[str, Any], value: str, path: str, out: list[ValidationIssue]) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(ValidationIssue(path, f"must have at least {schema['minLength']} characters"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(ValidationIssue(path, f"must have at most {schema['maxLength']} characters"))
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and not self._patterns[pattern].search(value):
            out.append(ValidationIssue(path, f"must match the pattern {pattern!r}"))
        known = _FORMATS.get(schema.get("format"))  # type: ignore[arg-type]
        if known is not None and not known[0](value):
            out.append(ValidationIssue(path, f"must be {known[1]}"))

    def _number(self, schema: Mapping[str, Any], value: float, path: str, out: list[ValidationIssue]) -> None:
        low, high = schema.get("minimum"), schema.get("maximum")
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if ex_low is True:  # draft 4: a flag on minimum
            ex_low, low = low, None
        if ex_high is True:
            ex_high, high = high, None
        if _is_number(low) and value < low:
            out.append(ValidationIssue(path, f"must be >= {low}"))
        if _is_number(ex_low) and value <= ex_low:
            out.append(ValidationIssue(path, f"must be > {ex_low}"))
        if _is_number(high) and value > high:
            out.append(ValidationIssue(path, f"must be <= {high}"))
        if _is_number(ex_high) and value >= ex_high:
            out.append(ValidationIssue(path, f"must be < {ex_high}"))
        step = schema.get("multipleOf")
        if _is_number(step) and not _multiple_of(value, step):
            out.append(ValidationIssue(path, f"must be a multiple of {step}"))


def _multiple_of(value: float, step: float) -> bool:
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    if not math.isfinite(value):
        return False
    try:
        return (_decimal(value) % _decimal(step)) == 0
    except InvalidOperation:  # a quotient too large for the context: compare as floats
        quotient = value / step
        return quotient == int(quotient)


def compile_schema(schema: Any) -> CompiledSchema:
    """``schema`` checked once and ready to validate many values (``InvalidArgumentError`` if unusable)."""
    return CompiledSchema(schema)


def validate(schema: Any, value: Any) -> list[ValidationIssue]:
    """Every error of ``value`` against ``schema`` (compiled for this one call).

    >>> validate({"type": ["string", "null"]}, 3)
    [ValidationIssue(path='$', message='expected string or null, got integer')]
    """
    return compile_schema(schema).errors(value)
