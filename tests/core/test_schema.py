"""MFJS: the checker speaks Kimi's rules and texts; the normaliser makes pydantic/msgspec schemas pass."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.schema import (
    InvalidSchemaError,
    check_mfjs,
    json_schema_of,
    normalize_mfjs,
    to_mfjs,
)
from tests.core.schema_corpus import CORPUS, _json

_IDS = [entry[0] for entry in CORPUS]


def _rules(schema: Any) -> set[tuple[str, str]]:
    return {(p.rule, p.path) for p in check_mfjs(schema)}


def test_the_corpus_is_large_and_from_both_libraries() -> None:
    names = [name for name, *_ in CORPUS]
    assert len(CORPUS) >= 30
    assert sum(n.startswith("pydantic") for n in names) >= 15
    assert sum(n.startswith("msgspec") for n in names) >= 10


@pytest.mark.parametrize(("name", "tp", "instance", "problems"), CORPUS, ids=_IDS)
def test_raw_schema_gets_the_problems_kimi_reports(name: str, tp: Any, instance: Any, problems: Any) -> None:
    assert _rules(json_schema_of(tp)) == problems


@pytest.mark.parametrize(("name", "tp", "instance", "problems"), CORPUS, ids=_IDS)
def test_normalised_schema_passes_and_still_accepts_real_data(name: str, tp: Any, instance: Any, problems: Any) -> None:
    raw = json_schema_of(tp)
    before = copy.deepcopy(raw)
    normalised = normalize_mfjs(raw)
    assert raw == before, "the input schema must not be changed"
    assert check_mfjs(normalised) == []
    assert to_mfjs(tp) == normalised
    jsonschema.Draft202012Validator(normalised).validate(_json(instance))
    assert normalize_mfjs(normalised) == normalised, "normalising twice changes nothing"


# --- the checker, rule by rule, with Kimi's own texts (docs/kimi-api.md §2.7) ---------------------

_OBJ = {"type": "object"}


def _messages(schema: Any) -> list[str]:
    return [p.message for p in check_mfjs(schema)]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "properties": {"pair": {"type": "array", "items": [{"type": "integer"}]}}},
         "At path 'properties.pair.items': items must be an object"),
        ({"type": "object", "anyOf": [{"type": "object"}]},
         "At path 'root': when using anyOf, type should be defined in anyOf items instead of the parent schema"),
        ({"type": "object", "properties": {"task": {"description": "x"}}},
         "At path 'properties.task': type is not defined"),
        ({"type": "object", "properties": {"workFlow": {"type": "array", "items": {
            "type": "object", "properties": {}, "required": ["codecType"]}}}},
         "At path 'properties.workFlow.items.required': required property 'codecType' is not defined in properties"),
        ({"type": "object", "properties": {"variantOptions": {"$ref": "#/$defs/V", "description": "b"}},
          "$defs": {"V": {"type": "string", "description": "a"}}},
         "At path 'properties.variantOptions': conflicting keywords found after $ref expansion: description"),
        ({"type": "object", "properties": {"tags": {"type": ["string", "null"]}}},
         "At path 'properties.tags.type': type must be a string"),
    ],
)  # fmt: skip
def test_checker_reproduces_kimis_messages(schema: dict[str, Any], message: str) -> None:
    assert _messages(schema) == [message]


@pytest.mark.parametrize(
    ("schema", "rule", "path"),
    [
        ({"type": "array"}, "root-type", "root"),
        ({"$ref": "#/$defs/A", "$defs": {"A": _OBJ}}, "root-type", "root"),
        ({"type": "object", "properties": {"a": {}}}, "type-missing", "properties.a"),
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "type-unknown", "properties.a.type"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}], "default": None}}},
         "anyof-siblings", "properties.a"),
        ({"type": "object", "properties": {"a": {"anyOf": []}}}, "anyof-shape", "properties.a.anyOf"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"minLength": 1}]}}}, "type-missing", "properties.a.anyOf.0"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A", "default": 1}}, "$defs": {"A": _OBJ}},
         "ref-siblings", "properties.a"),
        ({"type": "object", "properties": {"a": {"$ref": "other.json#/A"}}}, "ref-internal", "properties.a"),
        ({"type": "object", "properties": {"a": {"$ref": "#/definitions/A"}}, "definitions": {"A": _OBJ}},
         "ref-internal", "properties.a"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "ref-missing", "properties.a"),
        ({"type": "object", "$defs": {"a/b": _OBJ}}, "defs-name", "$defs.a/b"),
        ({"type": "object", "properties": {"a": {"type": "object", "$defs": {"X": _OBJ}}}}, "root-only", "properties.a"),
        ({"type": "object", "properties": {"a": {"type": "string", "enum": ["x", 1]}}}, "enum-type", "properties.a.enum"),
        ({"type": "object", "properties": {"a": {"type": "boolean", "enum": [True]}}}, "enum-type", "properties.a.enum"),
        ({"type": "object", "properties": {"a": {"type": "integer", "enum": ["x"]}}}, "enum-type", "properties.a.enum"),
        ({"type": "object", "properties": {"a": {"type": "string", "enum": []}}}, "enum-shape", "properties.a.enum"),
        ({"type": "object", "properties": {"a": {"type": "number", "maximum": 1e21}}},
         "number-exponent", "properties.a.maximum"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": True}}}, "items-object", "properties.a.items"),
        ({"type": "object", "properties": []}, "properties-shape", "properties"),
        ({"type": "object", "required": "a"}, "required-shape", "required"),
        ({"type": "object", "properties": {"a": 3}}, "schema-shape", "properties.a"),
        ({"type": "object", "properties": {"a": {"type": "object", "additionalProperties": {"minimum": 1}}}},
         "type-missing", "properties.a.additionalProperties"),
    ],
)  # fmt: skip
def test_checker_rule(schema: dict[str, Any], rule: str, path: str) -> None:
    assert (rule, path) in _rules(schema)


@pytest.mark.parametrize(
    "keyword",
    ["allOf", "oneOf", "not", "if", "then", "else", "const", "pattern", "format", "prefixItems", "patternProperties",
     "propertyNames", "contains", "uniqueItems", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
     "minProperties", "maxProperties", "examples", "$schema", "$comment"],
)  # fmt: skip
def test_every_unsupported_keyword_is_named(keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", keyword: 1}}}
    assert f"At path 'properties.a': {keyword} is not supported" in _messages(schema)


def test_empty_schema_is_allowed_at_the_root_and_as_additional_properties() -> None:
    assert check_mfjs({}) == []
    assert check_mfjs({"type": "object", "additionalProperties": {}}) == []
    assert check_mfjs({"type": "object", "$defs": {"A": _OBJ}, "$id": "x",
                       "properties": {"a": {"$ref": "#/$defs/A", "description": "only here"}, "r": {"$ref": "#"}}}) == []


def test_size_caps() -> None:
    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(101)}}
    assert ("max-properties", "root") in _rules(many)
    assert ("max-properties", "root") not in _rules({**many, "properties": dict(list(many["properties"].items())[:100])})
    enum = {"type": "object", "properties": {"a": {"type": "integer", "enum": list(range(501))}}}
    assert ("max-enum-values", "root") in _rules(enum)
    assert _rules({**enum, "properties": {"a": {"type": "integer", "enum": list(range(500))}}}) == set()

    def nested(levels: int) -> dict[str, Any]:
        node: dict[str, Any] = {"type": "string"}
        for _ in range(levels):
            node = {"type": "object", "properties": {"x": node}}
        return node

    assert check_mfjs(nested(5)) == []
    assert [p.message for p in check_mfjs(nested(6))] == [
        "At path 'root': schema nesting is 6 levels deep, at most 5 are allowed"
    ]


def test_recursive_schemas_have_finite_depth() -> None:
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}
    assert check_mfjs(tree) == []


def test_a_huge_schema_is_reported_not_walked_forever() -> None:
    node: dict[str, Any] = {"type": "string"}
    wide = {"type": "object", "properties": {f"p{i}": {"anyOf": [node] * 200} for i in range(60)}}
    assert ("max-size", "properties.p49.anyOf.199") in _rules(wide) or any(r == "max-size" for r, _ in _rules(wide))


# --- the normaliser, construct by construct ---------------------------------------------------


def _prop(schema: dict[str, Any]) -> Any:
    return normalize_mfjs({"type": "object", "properties": {"a": schema}})["properties"]["a"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"const": "x"}, {"type": "string", "enum": ["x"]}),
        ({"const": 3, "type": "integer"}, {"type": "integer", "enum": [3]}),
        ({"const": True}, {"type": "boolean", "description": "always true"}),
        ({"const": False, "description": "flag"}, {"type": "boolean", "description": "flag (always false)"}),
        ({"enum": ["a", 1, 2.5, None, True]}, {"anyOf": [
            {"type": "string", "enum": ["a"]}, {"type": "number", "enum": [1, 2.5]}, {"type": "null"},
            {"type": "boolean", "description": "always true"}]}),
        ({"type": "string", "format": "email", "title": "Mail", "examples": ["a@b"], "$comment": "c"},
         {"type": "string", "description": "format: email"}),
        ({"type": "string", "pattern": "^a", "description": "code"}, {"type": "string", "description": "code (pattern: ^a)"}),
        ({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10, "multipleOf": 2},
         {"type": "integer", "minimum": 1, "maximum": 9}),
        ({"type": "number", "exclusiveMinimum": 0.5, "minimum": 0.7}, {"type": "number", "minimum": 0.7}),
        ({"type": ["string", "null"], "maxLength": 3}, {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]}),
        ({"type": "integer", "nullable": True}, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        ({"oneOf": [{"type": "string"}, {"type": "integer"}], "default": "x", "title": "T"},
         {"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        ({"type": "string", "anyOf": [{"minLength": 2}, {"enum": ["x"]}]},
         {"anyOf": [{"type": "string", "minLength": 2}, {"type": "string", "enum": ["x"]}]}),
        ({"anyOf": [{"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "null"}]},
         {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        ({"anyOf": [{"type": "string"}], "description": "d"}, {"type": "string", "description": "d"}),
        ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
         {"type": "array", "minItems": 2, "maxItems": 2, "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
          "description": "items in order: integer, string"}),
        ({"type": "array", "items": [{"type": "integer"}, {"type": "integer"}]},
         {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}}),
        ({"type": "array", "uniqueItems": True, "items": {"type": "string"}}, {"type": "array", "items": {"type": "string"}}),
        ({"allOf": [{"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
                    {"type": "object", "properties": {"y": {"type": "integer"}}}]},
         {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}, "required": ["x"]}),
        ({"properties": {"x": {"type": "string"}}, "required": ["x", "ghost"]},
         {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}),
        ({"type": "object", "additionalProperties": True, "patternProperties": {"^a": {}}, "minProperties": 1},
         {"type": "object", "additionalProperties": True}),
        ({"type": "number", "maximum": 1e21, "minimum": 1e-9}, {"type": "number", "maximum": 10**21}),
        ({"type": "object", "additionalProperties": {"title": "Any"}}, {"type": "object", "additionalProperties": {}}),
    ],
)  # fmt: skip
def test_normaliser_rewrites(given: dict[str, Any], expected: Any) -> None:
    got = _prop(given)
    assert got == expected
    assert check_mfjs({"type": "object", "properties": {"a": got}}) == []


def test_any_becomes_an_explicit_union() -> None:
    got = _prop({"description": "anything"})
    assert got["description"] == "anything"
    assert {b["type"] for b in got["anyOf"]} == {"string", "number", "boolean", "null", "object", "array"}
    jsonschema.Draft202012Validator(got).validate([1, "x", None, {"k": 1}])


def test_refs_keep_defs_at_the_root_and_inline_a_root_ref() -> None:
    schema = {
        "$ref": "#/definitions/Order",
        "definitions": {
            "Order": {"type": "object", "properties": {"line": {"$ref": "#/definitions/Line", "title": "L"},
                                                        "sub": {"$ref": "#/properties/x/$defs/Inner"}}},
            "Line": {"type": "object", "properties": {"next": {"$ref": "#/definitions/Line"}}},
            "Unused": {"type": "string"},
        },
        "properties": {"x": {"$defs": {"Inner": {"type": "integer"}}}},
    }  # fmt: skip
    got = normalize_mfjs(schema)
    assert got["type"] == "object"
    assert got["properties"]["line"] == {"$ref": "#/$defs/Line"}
    assert got["properties"]["sub"] == {"$ref": "#/$defs/Inner"}
    assert set(got["$defs"]) == {"Line", "Inner"}
    assert got["$defs"]["Line"]["properties"]["next"] == {"$ref": "#/$defs/Line"}
    assert check_mfjs(got) == []


def test_a_recursive_root_model_keeps_its_def() -> None:
    tree = {"$ref": "#/$defs/T", "$defs": {"T": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}}}}}  # fmt: skip
    got = normalize_mfjs(tree)
    assert got["properties"]["kids"]["items"] == {"$ref": "#/$defs/T"}
    assert got["$defs"]["T"]["type"] == "object"
    assert check_mfjs(got) == []


def test_a_def_name_with_a_slash_is_renamed() -> None:
    got = normalize_mfjs({"type": "object", "properties": {"a": {"$ref": "#/$defs/a~1b"}}, "$defs": {"a/b": _OBJ}})
    assert got["properties"]["a"] == {"$ref": "#/$defs/a_b"}
    assert check_mfjs(got) == []


def test_a_field_description_beside_a_described_ref_survives_as_a_one_branch_anyof() -> None:
    schema = {"type": "object", "properties": {"c": {"$ref": "#/$defs/C", "description": "field"},
                                               "same": {"$ref": "#/$defs/C", "description": "enum"}},
              "$defs": {"C": {"type": "string", "enum": ["r"], "description": "enum"}}}  # fmt: skip
    got = normalize_mfjs(schema)
    assert got["properties"]["c"] == {"anyOf": [{"$ref": "#/$defs/C"}], "description": "field"}
    assert got["properties"]["same"] == {"$ref": "#/$defs/C"}
    assert check_mfjs(got) == []


# --- to_mfjs and json_schema_of -------------------------------------------------------------


def test_to_mfjs_refuses_what_cannot_be_expressed_naming_path_and_rule() -> None:
    with pytest.raises(InvalidSchemaError) as info:
        to_mfjs(list[int])
    err = info.value
    assert isinstance(err, InvalidArgumentError) and isinstance(err, ValueError)
    assert "At path 'root'" in str(err) and "rule root-type" in str(err) and "wrap the type" in str(err)
    assert "\n" not in str(err)
    assert [p.rule for p in err.problems] == ["root-type"]

    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(120)}}
    with pytest.raises(InvalidSchemaError, match=r"too many object properties: 120.*rule max-properties"):
        to_mfjs(wide)


def test_to_mfjs_refuses_an_external_ref() -> None:
    with pytest.raises(InvalidSchemaError, match=r"At path 'properties.a'.*rule ref-internal"):
        to_mfjs({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}})


def test_json_schema_of_an_unsupported_type_says_what_works() -> None:
    with pytest.raises(InvalidArgumentError, match="use a msgspec Struct, a dataclass, a TypedDict, a pydantic model"):
        json_schema_of(object)
    with pytest.raises(InvalidSchemaError, match="must be a dict"):
        normalize_mfjs([1])  # type: ignore[arg-type]


def test_a_plain_dict_is_copied_not_shared() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = json_schema_of(schema)
    out["properties"]["a"]["type"] = "integer"
    assert schema["properties"]["a"]["type"] == "string"


def test_a_nesting_bomb_is_refused() -> None:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(150):
        node = {"anyOf": [node, {"type": "null"}]}
    with pytest.raises(InvalidSchemaError, match="deeper than 100 levels"):
        normalize_mfjs({"type": "object", "properties": {"a": node}})


def test_the_schema_module_never_imports_pydantic() -> None:
    code = (
        "import sys, msgspec\n"
        "from kimiflow.core.schema import to_mfjs\n"
        "class A(msgspec.Struct):\n    x: int | None = None\n"
        "to_mfjs(A)\n"
        "print('pydantic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# --- property: whatever pydantic-style constructs are combined, the result is MFJS ----------------

_scalar = st.sampled_from([
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "string", "format": "date-time", "title": "When"}, {"type": "string", "pattern": "^a+$"},
    {"type": "integer", "exclusiveMinimum": 0}, {"type": "number", "multipleOf": 0.5},
    {"const": "fixed"}, {"const": 2}, {"const": False}, {"enum": ["a", "b"]}, {"enum": [1, "x", None]},
    {"type": ["string", "null"]}, {}, {"title": "Anything"}, {"type": "integer", "maximum": 1e22},
])  # fmt: skip
_names = st.text("abcdefgh", min_size=1, max_size=3)


def _wrap(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda c: {"anyOf": [c, {"type": "null"}], "default": None, "title": "Opt"}, children),
        st.builds(lambda cs: {"oneOf": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"allOf": [c], "description": "wrapped"}, children),
        st.builds(lambda c: {"type": "array", "items": c, "uniqueItems": True}, children),
        st.builds(lambda cs: {"type": "array", "prefixItems": cs, "items": False}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"type": "object", "additionalProperties": c}, children),
        st.builds(
            lambda props, extra: {"type": "object", "properties": props, "required": [*props, *extra], "title": "M"},
            st.dictionaries(_names, children, max_size=3), st.lists(_names, max_size=2),
        ),
    )


_schemas = st.recursive(_scalar, _wrap, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_names, _schemas, max_size=4), st.booleans())
def test_normalised_random_schemas_pass_the_checker(properties: dict[str, Any], via_ref: bool) -> None:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "title": "Root"}
    if via_ref:
        schema = {"$ref": "#/$defs/Root", "$defs": {"Root": schema}}
    before = json.dumps(schema, sort_keys=True)
    got = normalize_mfjs(schema)
    assert json.dumps(schema, sort_keys=True) == before
    problems = [p for p in check_mfjs(got) if p.rule not in ("max-depth", "max-properties")]
    assert problems == []
    assert normalize_mfjs(got) == got
    msgspec.json.encode(got)  # stays plain JSON data
