"""The incremental JSON parser: any split of a document gives json.loads at the end and prefixes on the way."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimiflow.core.partial_json import PartialJSON, PartialJSONError

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def is_prefix(part: Any, final: Any) -> bool:
    """``part`` is what a parser may show before ``final`` is complete."""
    if isinstance(final, dict):
        if not isinstance(part, dict) or list(part) != list(final)[: len(part)]:
            return False
        keys = list(part)
        return all(part[k] == final[k] for k in keys[:-1]) and (not keys or is_prefix(part[keys[-1]], final[keys[-1]]))
    if isinstance(final, list):
        if not isinstance(part, list) or len(part) > len(final):
            return False
        return part[:-1] == final[: max(len(part) - 1, 0)] and (not part or is_prefix(part[-1], final[len(part) - 1]))
    if isinstance(final, str):
        return isinstance(part, str) and final.startswith(part)
    return part == final and type(part) is type(final)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=400, deadline=None)
@given(_json_values, st.lists(st.integers(min_value=0), max_size=40), st.booleans(), st.sampled_from([None, 2]))
def test_every_split_ends_at_json_loads_through_prefixes(value: Any, cuts: list[int], ascii_only: bool,
                                                         indent: int | None) -> None:  # fmt: skip
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    final = json.loads(text)
    parser = PartialJSON()
    previous: Any = None
    for chunk in _chunks(text, cuts):
        snapshot = copy.deepcopy(parser.feed(chunk))
        if snapshot is not None:
            assert is_prefix(snapshot, final), (snapshot, final)
            if previous is not None:
                assert is_prefix(previous, snapshot), (previous, snapshot)
            previous = snapshot
    assert parser.finish() == final


@settings(max_examples=100, deadline=None)
@given(_json_values)
def test_one_character_at_a_time(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    parser = PartialJSON()
    for ch in text:
        part = copy.deepcopy(parser.feed(ch))
        assert part is None or is_prefix(part, json.loads(text))
    assert parser.finish() == json.loads(text)


def test_an_unfinished_string_shows_its_prefix_and_escapes_are_never_half_shown() -> None:
    parser = PartialJSON()
    assert parser.feed('{"say": "你好 ') == {"say": "你好 "}
    assert parser.feed("\\") == {"say": "你好 "}
    assert parser.feed("n\\u4e") == {"say": "你好 \n"}
    assert parser.feed("16\\ud83d") == {"say": "你好 \n世"}
    assert parser.feed('\\ude00", "n": 12') == {"say": "你好 \n世😀"}
    assert parser.feed(".5") == {"say": "你好 \n世😀"}, "a number shows only once it is complete"
    assert parser.feed("}") == {"say": "你好 \n世😀", "n": 12.5}
    assert parser.finish() == {"say": "你好 \n世😀", "n": 12.5}


def test_keys_appear_only_when_complete() -> None:
    parser = PartialJSON()
    assert parser.feed('{"ti') == {}
    assert parser.feed('tle"') == {}
    assert parser.feed(": ") == {}
    assert parser.feed('"') == {"title": ""}


def test_the_returned_containers_are_live() -> None:
    parser = PartialJSON()
    seen = parser.feed('[1, {"a": [')
    parser.feed("2, 3]}, 4]")
    assert seen == [1, {"a": [2, 3]}, 4] and parser.value is seen


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a" 1}', "invalid JSON at character 5: expected ':' after a key"),
        ("[1 2]", "invalid JSON at character 3: expected ',' or ']'"),
        ('{"a": 1 "b"', "invalid JSON at character 8: expected ',' or '}'"),
        ("{1: 2}", "invalid JSON at character 1: expected a string key in double quotes"),
        ("[nope]", "invalid JSON at character 1: expected a JSON value"),
        ('"bad \\q escape"', "invalid JSON at character 5: invalid \\escape"),
        ("[1] [2]", "invalid JSON at character 4: extra text after the JSON value"),
    ],
)
def test_invalid_json_names_the_position_not_the_text(text: str, message: str) -> None:
    parser = PartialJSON()
    with pytest.raises(PartialJSONError) as info:
        parser.finish(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ['{"a": [1, 2', '"unfinished', "[", '{"k": "v"'])
def test_finish_refuses_an_incomplete_document(text: str) -> None:
    with pytest.raises(PartialJSONError, match="the JSON document is incomplete"):
        PartialJSON().finish(text)


def test_a_top_level_number_is_known_at_finish() -> None:
    parser = PartialJSON()
    assert parser.feed("-12") is None
    assert parser.finish("5e1") == -1250.0
    with pytest.raises(PartialJSONError, match="already finished"):
        parser.feed(" ")


def test_a_large_document_in_small_chunks_keeps_only_a_short_tail() -> None:
    """State is kept between feeds: the unconsumed text stays short, so nothing is re-parsed."""
    doc = {"rows": [{"id": i, "name": f"row {i}", "tags": ["a", "b"], "ok": i % 2 == 0} for i in range(2000)]}
    text = json.dumps(doc)
    parser = PartialJSON()
    longest = 0
    for i in range(0, len(text), 37):
        parser.feed(text[i : i + 37])
        longest = max(longest, len(parser._tail))
    assert parser.finish() == doc
    assert longest < 200


def test_a_closing_bracket_inside_a_string_does_not_close_the_open_container() -> None:
    """The ``]`` in the key is "in sight" but the list is still open: it is walked, not scanned whole."""
    parser = PartialJSON()
    assert parser.feed('[{"]": nu') == [{}]
    assert parser.feed('ll, "x": [1, "}"') == [{"]": None, "x": [1, "}"]}]
    assert parser.finish("]}]") == [{"]": None, "x": [1, "}"]}]
