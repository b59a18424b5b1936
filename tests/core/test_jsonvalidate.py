"""``kimiflow.core.jsonvalidate``: unit cases per keyword, a differential test against the ``jsonschema``
package as oracle over the schema corpus, and ``parse(response_format=schema_dict)`` through the simulator."""

from __future__ import annotations

import random
import uuid
from typing import Any, Protocol

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimiflow import AnswerValidationError, AsyncKimi, Kimi
from kimiflow.core.errors import InvalidArgumentError, KimiflowError
from kimiflow.core.jsonvalidate import MAX_DEPTH, compile_schema, validate
from kimiflow.core.schema import json_schema_of
from kimiflow.structured import validate_answer
from tests.core.schema_corpus import CORPUS, _json


def _errors(schema: Any, value: Any) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in validate(schema, value)]


# --- unit cases, one group per keyword --------------------------------------------------------

OBJ = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name"],
}

CASES: list[tuple[str, Any, Any, list[tuple[str, str]]]] = [
    ("type-ok", {"type": "string"}, "x", []),
    ("type-wrong", {"type": "string"}, 3, [("$", "expected string, got integer")]),
    ("type-list", {"type": ["string", "null"]}, None, []),
    ("type-list-wrong", {"type": ["string", "null"]}, 1.5, [("$", "expected string or null, got number")]),
    ("integer-whole-float", {"type": "integer"}, 2.0, []),
    ("integer-not-fraction", {"type": "integer"}, 2.5, [("$", "expected integer, got number")]),
    ("bool-not-integer", {"type": "integer"}, True, [("$", "expected integer, got boolean")]),
    ("bool-not-number", {"type": "number"}, False, [("$", "expected number, got boolean")]),
    ("integer-is-number", {"type": "number"}, 3, []),
    ("properties", OBJ, {"name": 1, "age": "x"},
     [("$.name", "expected string, got integer"), ("$.age", "expected integer, got string")]),
    ("required", OBJ, {"age": 3}, [("$.name", "required field is missing")]),
    ("additional-false", {**OBJ, "additionalProperties": False}, {"name": "a", "zz": 1},
     [("$", 'unknown field "zz" is not allowed (additionalProperties is false)')]),
    ("additional-schema", {"type": "object", "additionalProperties": {"type": "integer"}}, {"a": 1, "b c": "x"},
     [('$["b c"]', "expected integer, got string")]),
    ("pattern-properties", {"type": "object", "patternProperties": {"^S_": {"type": "string"}},
                            "additionalProperties": False}, {"S_1": "ok", "S_2": 2, "x": 1},
     [("$.S_2", "expected string, got integer"), ("$", 'unknown field "x" is not allowed (additionalProperties '
                                                        "is false)")]),
    ("items", {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
     [{"name": "a"}, {"name": "b"}, {"name": 3}], [("$[2].name", "expected string, got integer")]),
    ("prefix-items", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
     [1, 2, 3], [("$[1]", "expected string, got integer"), ("$", "must have at most 2 items")]),
    ("draft7-tuple", {"items": [{"type": "integer"}], "additionalItems": {"type": "string"}}, [1, "a", 2],
     [("$[2]", "expected string, got integer")]),
    ("min-items", {"type": "array", "minItems": 2}, [1], [("$", "must have at least 2 items")]),
    ("max-items", {"type": "array", "maxItems": 1}, [1, 2], [("$", "must have at most 1 items")]),
    ("unique", {"uniqueItems": True}, [1, True, 1.0, {"a": 1}, {"a": 1}],
     [("$[2]", "repeats item [0]; items must be unique"), ("$[4]", "repeats item [3]; items must be unique")]),
    ("unique-nested", {"uniqueItems": True}, [{"a": 1, "b": [1, 2]}, {"b": [1.0, 2], "a": 1}, [2, 1], [1, 2]],
     [("$[1]", "repeats item [0]; items must be unique")]),
    ("enum", {"enum": ["bug", "billing", 1]}, True, [("$", 'must be one of "bug", "billing", 1')]),
    ("enum-number", {"enum": [1, 2]}, 2.0, []),
    ("const", {"const": "v1"}, "v2", [("$", 'must be "v1"')]),
    ("const-bool-vs-int", {"const": True}, 1, [("$", "must be true")]),
    ("minimum", {"minimum": 1}, 0, [("$", "must be >= 1")]),
    ("maximum", {"maximum": 5}, 5.5, [("$", "must be <= 5")]),
    ("exclusive-minimum", {"exclusiveMinimum": 0}, 0, [("$", "must be > 0")]),
    ("exclusive-maximum", {"exclusiveMaximum": 1}, 1.0, [("$", "must be < 1")]),
    ("draft4-exclusive", {"maximum": 1, "exclusiveMaximum": True}, 1, [("$", "must be < 1")]),
    ("multiple-of", {"multipleOf": 2}, 3, [("$", "must be a multiple of 2")]),
    ("multiple-of-decimal", {"multipleOf": 0.1}, 0.3, []),
    ("multiple-of-decimal-wrong", {"multipleOf": 0.01}, 0.125, [("$", "must be a multiple of 0.01")]),
    ("bounds-ignore-strings", {"minimum": 3, "minLength": 2}, "abc", []),
    ("min-length-code-points", {"minLength": 3}, "北京", [("$", "must have at least 3 characters")]),
    ("max-length-code-points", {"maxLength": 2}, "北京", []),
    ("max-length", {"maxLength": 2}, "abc", [("$", "must have at most 2 characters")]),
    ("pattern-search", {"pattern": "[0-9]"}, "ab1", []),
    ("pattern", {"pattern": "^[A-Z]{3}$"}, "abc", [("$", "must match the pattern '^[A-Z]{3}$'")]),
    ("date-time", {"format": "date-time"}, "2026-12-02T09:30:00.123+08:00", []),
    ("date-time-lenient", {"format": "date-time"}, "2026-12-02 09:30", []),
    ("date-time-bad-day", {"format": "date-time"}, "2026-02-30T09:30:00Z",
     [("$", "must be a date-time (RFC 3339, e.g. 2026-12-02T09:30:00Z)")]),
    ("date", {"format": "date"}, "2024-02-29", []),
    ("date-bad", {"format": "date"}, "2026-13-01", [("$", "must be a date (YYYY-MM-DD, e.g. 2026-12-02)")]),
    ("time", {"format": "time"}, "23:59:59Z", []),
    ("time-bad", {"format": "time"}, "24:00:00", [("$", "must be a time (HH:MM:SS, e.g. 09:30:00Z)")]),
    ("email", {"format": "email"}, "ann@example.com", []),
    ("email-bad", {"format": "email"}, "ann@", [("$", "must be an email address (name@domain)")]),
    ("uuid", {"format": "uuid"}, str(uuid.UUID(int=7)), []),
    ("uuid-bad", {"format": "uuid"}, "1234-5678", [("$", "must be a UUID (8-4-4-4-12 hex digits)")]),
    ("format-unknown-is-a-note", {"format": "hostname"}, "!!", []),
    ("format-only-strings", {"format": "date"}, 3, []),
    ("any-of-ok", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "x", []),
    ("any-of-types", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, None,
     [("$", "expected integer or string, got null")]),
    ("any-of-optional-model", {"$defs": {"A": {"type": "object", "properties": {"city": {"type": "string"}}}},
                               "anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}, {"city": 3},
     [("$.city", "expected string, got integer")]),
    ("one-of-none", {"oneOf": [{"minimum": 10}, {"maximum": 0}]}, 5, [("$", "matches none of the 2 schemas of oneOf")]),
    ("one-of-two", {"oneOf": [{"type": "integer"}, {"minimum": 0}]}, 3,
     [("$", "matches 2 of the oneOf schemas (numbers 0, 1); it must match exactly one")]),
    ("all-of", {"allOf": [{"minimum": 1}, {"multipleOf": 2}]}, 0.5,
     [("$", "must be >= 1"), ("$", "must be a multiple of 2")]),
    ("not", {"not": {"type": "null"}}, None, [("$", "must not match the schema under 'not'")]),
    ("if-then-else", {"if": {"type": "integer"}, "then": {"minimum": 0}, "else": {"type": "string"}}, -1,
     [("$", "must be >= 0")]),
    ("false-schema", {"properties": {"x": False}}, {"x": 1}, [("$.x", "no value is allowed here")]),
    ("ref-defs", {"$defs": {"P": {"type": "integer"}}, "properties": {"p": {"$ref": "#/$defs/P"}}}, {"p": "1"},
     [("$.p", "expected integer, got string")]),
    ("ref-definitions", {"definitions": {"P": {"type": "integer"}}, "items": {"$ref": "#/definitions/P"}}, [1, "2"],
     [("$[1]", "expected integer, got string")]),
    ("ref-siblings-apply", {"$defs": {"P": {"type": "integer"}}, "$ref": "#/$defs/P", "minimum": 5}, 3,
     [("$", "must be >= 5")]),
    ("nullable-ref", {"$defs": {"P": {"type": "string"}}, "properties": {
        "p": {"anyOf": [{"$ref": "#/$defs/P"}, {"type": "null"}]}}}, {"p": None}, []),
    ("min-max-properties", {"minProperties": 2, "maxProperties": 2}, {"a": 1}, [("$", "must have at least 2 fields")]),
    ("dependent-required", {"dependentRequired": {"a": ["b"]}}, {"a": 1}, [("$.b", "required when 'a' is present")]),
    ("contains", {"contains": {"type": "string"}, "minContains": 2}, ["a", 1],
     [("$", "must contain at least 2 item(s) matching 'contains'")]),
]


@pytest.mark.parametrize(("schema", "value", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_keyword(schema: Any, value: Any, expected: list[tuple[str, str]]) -> None:
    assert _errors(schema, value) == expected


def test_recursive_schema_validates_every_level() -> None:
    tree = {"$ref": "#/$defs/Node", "$defs": {"Node": {
        "type": "object", "properties": {"value": {"type": "integer"},
                                         "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
        "required": ["value"]}}}
    value = {"value": 1, "children": [{"value": 2, "children": [{"value": "x"}, {"children": []}]}]}
    assert _errors(tree, value) == [("$.children[0].children[0].value", "expected integer, got string"),
                                    ("$.children[0].children[1].value", "required field is missing")]
    root_recursive = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}}
    assert _errors(root_recursive, {"next": {"next": {"next": None}}}) == []
    assert _errors(root_recursive, {"next": {"next": 3}}) == [("$.next.next", "expected object or null, got integer")]


def test_deep_values_stop_with_an_error_not_a_crash() -> None:
    schema = {"$defs": {"L": {"type": "array", "items": {"$ref": "#/$defs/L"}}}, "$ref": "#/$defs/L"}
    value: Any = []
    for _ in range(2000):
        value = [value]
    errors = validate(schema, value)
    assert len(errors) == 1 and f"nested deeper than {MAX_DEPTH} levels" in errors[0].message


def test_a_ref_loop_that_never_reaches_a_value_is_an_error_not_a_hang() -> None:
    loop = {"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"anyOf": [{"$ref": "#/$defs/A"}]}}, "$ref": "#/$defs/A"}
    with pytest.raises(InvalidArgumentError, match="comes back to itself"):
        validate(loop, 1)


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "strnig"}, "unknown type 'strnig'"),
    ({"properties": {"a": {"pattern": "(["}}}, r"#/properties/a/pattern: pattern '\(\[' is not a valid regular"),
    ({"$ref": "#/$defs/Missing"}, "points to nothing; define it under \\$defs"),
    ({"$ref": "https://example.com/s.json"}, "is not local"),
    ({"required": "name"}, "required must be an array"),
    ({"multipleOf": 0}, "multipleOf must be greater than 0"),
    ({"anyOf": []}, "anyOf must be a non-empty array"),
    (["not", "a", "schema"], "must be an object"),
    ({"dependentRequired": {"a": "b"}}, "dependentRequired must map names to arrays"),
])
def test_an_unusable_schema_says_where_and_why(schema: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        compile_schema(schema)
    assert isinstance(info.value, KimiflowError)


def test_messages_never_quote_the_answer() -> None:
    schema = {"type": "object", "properties": {"a": {"enum": ["x"]}, "b": {"pattern": "^z$"},
                                               "c": {"type": "integer"}, "d": {"const": 1}}}
    secret = "SECRET-VALUE"
    messages = [e.message for e in validate(schema, {"a": secret, "b": secret, "c": secret, "d": secret})]
    assert len(messages) == 4 and not any(secret in m for m in messages)


def test_validate_answer_checks_the_schema_dict() -> None:
    schema = {"title": "Ticket", "type": "object", "properties": {
        "category": {"type": "string", "enum": ["bug", "other"]}, "priority": {"type": "integer", "minimum": 1}},
        "required": ["category", "priority"], "additionalProperties": False}
    assert validate_answer(schema, '{"category": "bug", "priority": 2}') == {"category": "bug", "priority": 2}
    with pytest.raises(AnswerValidationError) as info:
        validate_answer(schema, '{"category": "feature", "priority": 0, "leak": "SECRET"}')
    assert [(e.path, e.message) for e in info.value.errors] == [
        ("$.category", 'must be one of "bug", "other"'), ("$.priority", "must be >= 1"),
        ("$", 'unknown field "leak" is not allowed (additionalProperties is false)')]
    assert "SECRET" not in str(info.value) and "leak" not in str(info.value)
    assert str(info.value).startswith("the answer does not match Ticket: $.category: must be one of")
    with pytest.raises(AnswerValidationError, match=r"\$: Expected `object`, got `list`"):
        validate_answer(schema, "[1]")
    with pytest.raises(InvalidArgumentError, match="unknown type"):
        validate_answer({"type": "object", "properties": {"a": {"type": "strnig"}}}, "{}")


def test_validate_answer_compiles_a_schema_once_and_sees_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    import kimiflow.core.jsonvalidate as jv

    compiled: list[Any] = []
    real = jv.compile_schema
    monkeypatch.setattr(jv, "compile_schema", lambda schema: compiled.append(schema) or real(schema))
    schema: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 123456}}}
    for _ in range(3):
        with pytest.raises(AnswerValidationError, match="must be >= 123456"):
            validate_answer(schema, '{"n": 1}')
    assert len(compiled) == 1
    schema["properties"]["n"]["minimum"] = 0  # changed in place: compiled afresh
    assert validate_answer(schema, '{"n": 1}') == {"n": 1}
    assert len(compiled) == 2


def test_unique_items_is_linear_enough_for_long_arrays() -> None:
    value = [*range(50_000), 7]
    assert _errors({"uniqueItems": True}, value) == [("$[50000]", "repeats item [7]; items must be unique")]


# --- differential test against the jsonschema package ------------------------------------------


def _extra_schemas() -> list[dict[str, Any]]:
    """Hand-written schemas for the keywords pydantic and msgspec do not emit."""
    return [
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True,
                                                   "minItems": 1, "maxItems": 3}},
         "patternProperties": {"^S_": {"type": "integer", "multipleOf": 3}}, "additionalProperties": False},
        {"type": "object", "properties": {"v": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "integer",
                                                                                              "maximum": 5}]},
                                          "n": {"not": {"type": "null"}},
                                          "a": {"allOf": [{"type": "number", "exclusiveMinimum": 0},
                                                          {"exclusiveMaximum": 1}]},
                                          "c": {"const": {"k": [1, True]}}},
         "required": ["v"]},
        {"definitions": {"Node": {"type": "object", "properties": {"name": {"type": "string", "minLength": 2},
                                                                   "kids": {"type": "array",
                                                                            "items": {"$ref": "#/definitions/Node"}}},
                                  "required": ["name"]}},
         "$ref": "#/definitions/Node"},
        {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                          "day": {"type": ["string", "null"], "format": "date"},
                                          "at": {"type": "string", "format": "time"},
                                          "mail": {"type": "string", "format": "email"},
                                          "id": {"type": "string", "format": "uuid"},
                                          "price": {"type": "number", "multipleOf": 0.5, "minimum": 0}},
         "required": ["when", "mail"]},
        {"type": "object", "properties": {"pair": {"type": "array", "prefixItems": [{"type": "integer"},
                                                                                    {"enum": ["a", "b", None]}],
                                                   "items": False},
                                          "code": {"type": "string", "pattern": "^[A-Z]{3}$", "maxLength": 3}},
         "additionalProperties": {"type": "boolean"}},
    ]


SCHEMAS: list[tuple[str, dict[str, Any]]] = (
    [(name, json_schema_of(tp)) for name, tp, _, _ in CORPUS]
    + [(f"extra-{i}", s) for i, s in enumerate(_extra_schemas())]
)
ORACLES = {name: jsonschema.validators.validator_for(s, default=jsonschema.Draft202012Validator)(
    s, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER) for name, s in SCHEMAS}
OURS = {name: compile_schema(s) for name, s in SCHEMAS}


class Chooser(Protocol):
    def pick(self, n: int) -> int: ...


class RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, n: int) -> int:
        return self.rng.randrange(n)


class DrawChooser:
    def __init__(self, data: Any) -> None:
        self.data = data

    def pick(self, n: int) -> int:
        return int(self.data.draw(st.integers(0, n - 1)))


# No "@" outside the email samples: jsonschema's email check is only '"@" in value', ours is stricter.
JUNK: list[Any] = [None, True, False, 0, -1, 1.5, 2.0, "", "x", "北京", [], [1, "a"], {}, {"k": 1}, 1e300, 2 ** 63]
FORMAT_SAMPLES = {
    "date-time": ["2026-12-02T09:30:00Z", "2026-12-02T09:30:00.5+08:00", "2026-02-30T09:30:00Z", "yesterday",
                  "2026-12-02T25:00:00Z"],
    "date": ["2026-12-02", "2024-02-29", "2026-02-29", "12/02/2026"],
    "time": ["09:30:00Z", "23:59:59.9+08:00", "24:00:00Z", "noon"],
    "email": ["ann@example.com", "not-an-email"],
    "uuid": [str(uuid.UUID(int=12345)), str(uuid.UUID(int=99)).upper(), "1234-5678"],
}
STRINGS = ["", "a", "ab", "abc", "ABC", "ABCD", "AB", "日本語", "1.5", "x" * 6]
KEYS = ["a", "S_1", "S_x", "extra", "name"]


def _resolve(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for part in ref[2:].split("/") if ref != "#" else []:
        node = node[part]
    return node


def _number_candidates(schema: dict[str, Any]) -> list[Any]:
    out: list[Any] = [0, 1, -1, 7, 100, 0.5, 0.3]
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        v = schema.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out += [v - 1, v, v + 1, v * 2, v / 2, float(v)]
    return out


def gen(schema: Any, ch: Chooser, root: dict[str, Any], depth: int = 0) -> Any:
    """An instance near ``schema``: mostly fitting, often broken on purpose, at every level."""
    if ch.pick(10) == 0 or not isinstance(schema, dict):
        return JUNK[ch.pick(len(JUNK))]
    if isinstance(schema.get("$ref"), str):
        return gen(_resolve(root, schema["$ref"]), ch, root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            branches = schema[key]
            return gen(branches[ch.pick(len(branches))], ch, root, depth + 1)
    if "enum" in schema:
        return schema["enum"][ch.pick(len(schema["enum"]))]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[ch.pick(len(kind))]
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else None
    if kind == "object":
        out: dict[str, Any] = {}
        required = schema.get("required", [])
        for name, sub in schema.get("properties", {}).items():
            if (name in required and ch.pick(12) != 0) or (depth < 4 and ch.pick(2) == 0):
                out[name] = gen(sub, ch, root, depth + 1)
        extra = schema.get("additionalProperties")
        for pattern_sub in [*schema.get("patternProperties", {}).values(), *([extra] if isinstance(extra, dict) else [])]:
            for _ in range(ch.pick(3) if depth < 4 else 0):
                out[KEYS[ch.pick(len(KEYS))]] = gen(pattern_sub, ch, root, depth + 1)
        if ch.pick(8) == 0:
            out[KEYS[ch.pick(len(KEYS))]] = JUNK[ch.pick(len(JUNK))]
        return out
    if kind == "array":
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {})
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", low + 3)
        count = low if depth >= 4 else max(0, [low - 1, low, low + 1, high, high + 1][ch.pick(5)])
        values = [gen(prefix[i] if i < len(prefix) else items, ch, root, depth + 1) for i in range(count)]
        if values and ch.pick(4) == 0:
            values.append(values[0])
        return values
    if kind in ("integer", "number"):
        candidates = _number_candidates(schema)
        return candidates[ch.pick(len(candidates))]
    if kind == "string":
        samples = FORMAT_SAMPLES.get(schema.get("format", ""), STRINGS)
        return samples[ch.pick(len(samples))]
    if kind == "boolean":
        return ch.pick(2) == 0
    if kind == "null":
        return None
    return JUNK[ch.pick(len(JUNK))]


def _same_verdict(name: str, value: Any) -> bool:
    ours = OURS[name].errors(value)
    theirs = ORACLES[name].is_valid(value)
    assert (not ours) == theirs, (name, value, [(e.path, e.message) for e in ours])
    assert all(e.path.startswith("$") and e.message for e in ours)
    return theirs


def test_corpus_instances_are_valid_for_both() -> None:
    for name, _, instance, _ in CORPUS:
        assert _same_verdict(name, _json(instance)), name


def test_seeded_instances_agree_with_jsonschema_and_cover_both_verdicts() -> None:
    valid = invalid = 0
    for seed, (name, schema) in enumerate(SCHEMAS * 40):
        value = gen(schema, RandomChooser(seed), schema)
        if _same_verdict(name, value):
            valid += 1
        else:
            invalid += 1
    total = valid + invalid
    assert valid > total // 5 and invalid > total // 5, (valid, invalid)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([name for name, _ in SCHEMAS]), st.data())
def test_generated_instances_agree_with_jsonschema(name: str, data: Any) -> None:
    schema = dict(SCHEMAS)[name]
    _same_verdict(name, gen(schema, DrawChooser(data), schema))


# --- through the simulator ---------------------------------------------------------------------

TICKET = {
    "title": "Ticket",
    "type": "object",
    "properties": {"title": {"type": "string", "minLength": 1}, "priority": {"type": "integer", "minimum": 0}},
    "required": ["title", "priority"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "file a ticket: printer broken 打印机坏了"}]


def _fault(name: str, times: int) -> dict[str, str]:
    return {"X-Kimiflow-Sim-Fault": f"{name};times={times};key={uuid.uuid4().hex}"}


def _served(sim: Any) -> int:
    return int(sim.state.stats.chat_completions)


def test_parse_with_a_schema_dict_re_asks_a_schema_violation(sim: Any) -> None:
    before = _served(sim)
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        resp = client.chat.completions.parse(model="kimi-k2.6", messages=MESSAGES, response_format=TICKET,
                                             extra_headers=_fault("schema-violation", 1))
    assert _served(sim) - before == 2  # the violating answer was re-asked, not accepted
    assert len(resp.attempt_completions) == 2
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed["title"], str) and isinstance(parsed["priority"], int)
    assert resp.usage.total_tokens == sum(a.usage.total_tokens for a in resp.attempt_completions)


async def test_async_parse_with_a_schema_dict_names_the_violations(sim: Any) -> None:
    before = _served(sim)
    async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with pytest.raises(AnswerValidationError) as info:
            await client.chat.completions.parse(model="kimi-k2.6", messages=MESSAGES, response_format=TICKET,
                                                max_validation_retries=1, extra_headers=_fault("schema-violation", 5))
    assert _served(sim) - before == 2
    assert [(e.path, e.message) for e in info.value.errors] == [("$.title", "expected string, got integer")]


def test_parse_validates_against_the_original_schema_not_the_mfjs_one(sim: Any) -> None:
    """MFJS cannot carry ``pattern`` (it goes into the description), so the simulator's answer follows
    the normalised schema and breaks the original: every attempt is rejected by the pattern."""
    schema = {"title": "Code", "type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}},
              "required": ["code"]}
    before = _served(sim)
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with pytest.raises(AnswerValidationError) as info:
            client.chat.completions.parse(model="kimi-k2.6", messages=MESSAGES, response_format=schema,
                                          max_validation_retries=2)
    assert _served(sim) - before == 3
    assert [(e.path, e.message) for e in info.value.errors] == [("$.code", "must match the pattern '^[0-9]{6}$'")]


def test_a_schema_the_validator_cannot_use_is_refused_before_any_request() -> None:
    from kimiflow.core.errors import InvalidArgumentError
    from kimiflow.structured import build_parse_request

    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "([a-z"}}}
    with pytest.raises(InvalidArgumentError):
        build_parse_request("kimi-k2.6", [{"role": "user", "content": "x"}], schema)
