"""Request bodies carry only what JSON can: anything msgspec would silently change is refused, by path."""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import msgspec
import pytest

from kimiflow import InvalidArgumentError
from kimiflow.core.requests import build_chat_body, encode_json

MESSAGES = [{"role": "user", "content": "hi"}]


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(("payload", "message"), [
    ({"temperature": math.nan}, "temperature=nan is not a number JSON can carry"),
    ({"a": {"b": [1.0, -math.inf]}}, r"a\.b\[1\]=-inf is not a number"),
    ({"a": b"x"}, "a is bytes: decode it to str first"),
    ({"a": [bytearray(b"x")]}, r"a\[0\] is bytearray"),
    ({"a": memoryview(b"x")}, "a is memoryview"),
    ({"a": frozenset({1})}, "a is a frozenset: pass a list"),
    ({"a": {None: "x"}}, r"a has the key None \(NoneType\): JSON object keys are strings"),
    ({"a": {True: "x"}}, r"a has the key True \(bool\)"),
    ({"a": MappingProxyType({"b": 1})}, "a is a mappingproxy, which JSON cannot carry: pass a dict"),
    ({"a": complex(1, 2)}, "a is a complex, which JSON cannot carry"),
])
def test_values_json_cannot_carry_are_named_by_path(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        encode_json(payload)


def test_what_json_carries_encodes_exactly_as_before() -> None:
    payload: dict[str, Any] = {
        "model": "m", "messages": ({"role": "assistant", "content": None, "tool_calls": []},),
        "temperature": 0.0, "top_p": -1.5e300, "n": -(2**63), "seed": 2**70, "stream": False,
        "logit_bias": {7: 1}, "scores": {0.5: 1}, "colour": Colour.RED, "level": Level.HIGH, "ordered": OrderedDict(a=1),
    }
    assert encode_json(payload) == msgspec.json.encode(payload)


def test_call_argument_mistakes_are_invalid_argument_errors_and_value_errors() -> None:
    for params in ({"messages": MESSAGES}, {"model": "m", "messages": []}, {"model": "m", "messages": ["hi"]},
                   {"model": "m", "messages": MESSAGES, "functions": []}):
        with pytest.raises(InvalidArgumentError):
            build_chat_body(params)
        with pytest.raises(ValueError):
            build_chat_body(params)


def test_the_check_does_not_change_a_good_chat_body() -> None:
    params = {"model": "moonshot-v1-8k", "messages": MESSAGES, "temperature": 0.3, "max_tokens": None}
    assert build_chat_body(params, {"x": [1, 2.5]}) == (
        b'{"model":"moonshot-v1-8k","messages":[{"role":"user","content":"hi"}],"temperature":0.3,"x":[1,2.5]}')
