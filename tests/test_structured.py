"""The pure steps of a structured answer: request per model, validation by JSON path, truncation, re-ask."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, Optional

import httpx
import msgspec
import pydantic
import pytest

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.core.mfjs import check_mfjs
from kimiflow.core.schema import InvalidSchemaError
from kimiflow.structured import (
    AnswerValidationError,
    FieldError,
    TruncatedAnswerError,
    build_parse_request,
    parse_answer,
    reask_messages,
    structured_mode,
    validate_answer,
)


class MTicket(msgspec.Struct):
    title: str
    priority: int
    tags: list[str] = []


class PTicket(pydantic.BaseModel):
    title: str = pydantic.Field(pattern=r"^[A-Z]")
    priority: int = pydantic.Field(ge=1, le=5)
    kind: Literal["bug", "feature"]
    note: Optional[str] = None


@dataclasses.dataclass
class DTicket:
    title: str
    priority: int


USER = [{"role": "system", "content": "你是 Kimi"}, {"role": "user", "content": "file a ticket"}]


@pytest.mark.parametrize(("model", "mode"), [("kimi-k2.6", "json_schema"), ("moonshot-v1-8k", "json_schema"),
                                             ("kimi-k3", "json_schema"), ("kimi-latest", "json_object")])  # fmt: skip
def test_mode_per_model_is_data(model: str, mode: str) -> None:
    assert structured_mode(model) == mode
    custom = structured_mode(model, [("kimi-latest", "json_schema")])
    assert custom == ("json_schema" if model == "kimi-latest" else "json_object")


def test_json_schema_request_carries_the_mfjs_schema_and_leaves_messages_alone() -> None:
    request = build_parse_request("kimi-k2.6", USER, PTicket)
    assert request.mode == "json_schema" and request.messages == USER and request.messages is not USER
    spec = request.response_format["json_schema"]
    assert spec["name"] == "PTicket" and spec["strict"] is True
    assert check_mfjs(spec["schema"]) == [] and spec["schema"] == request.schema
    assert '"pattern"' not in json.dumps(spec["schema"]), "MFJS rejects pattern; validation keeps it"
    assert request.as_params() == {"model": "kimi-k2.6", "messages": USER, "response_format": request.response_format}


def test_json_object_request_puts_the_schema_in_a_system_message_after_the_leading_ones() -> None:
    request = build_parse_request("kimi-latest", USER, MTicket)
    assert request.response_format == {"type": "json_object"}
    assert [m["role"] for m in request.messages] == ["system", "system", "user"]
    assert request.messages[0] == USER[0] and request.messages[2] == USER[1]
    assert json.dumps(request.schema, ensure_ascii=False, separators=(",", ":")) in request.messages[1]["content"]
    assert len(USER) == 2, "the caller's list is not changed"
    forced = build_parse_request("kimi-k2.6", USER, MTicket, mode="json_object", name="my ticket/v2")
    assert forced.response_format == {"type": "json_object"} and forced.name == "my_ticket_v2"


def test_bad_requests_are_refused_before_sending() -> None:
    with pytest.raises(InvalidArgumentError, match="Partial Mode cannot be combined"):
        build_parse_request("kimi-k2.6", [{"role": "assistant", "content": "{", "partial": True}], MTicket)
    with pytest.raises(InvalidArgumentError, match="messages must not be empty"):
        build_parse_request("kimi-k2.6", [], MTicket)
    with pytest.raises(InvalidArgumentError, match="mode must be"):
        build_parse_request("kimi-k2.6", USER, MTicket, mode="yaml")  # type: ignore[arg-type]
    with pytest.raises(InvalidSchemaError, match="rule root-type"):
        build_parse_request("kimi-k2.6", USER, list[int])


@pytest.mark.parametrize("target", [MTicket, PTicket, DTicket])
def test_valid_answers_become_the_type(target: Any) -> None:
    content = '{"title": "Broken", "priority": 2, "kind": "bug"}'
    value = parse_answer(target, {"content": content}, "stop")
    assert isinstance(value, target) and value.priority == 2


def test_a_schema_dict_answer_is_a_dict() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert validate_answer(schema, '{"a": 1}') == {"a": 1}
    with pytest.raises(AnswerValidationError, match=r"\$: Expected `object`"):
        validate_answer(schema, "[1]")


def test_pydantic_errors_by_json_path_and_constraints_mfjs_dropped_still_hold() -> None:
    content = '{"title": "lower", "priority": 9, "kind": "chore", "note": 3}'
    with pytest.raises(AnswerValidationError) as info:
        validate_answer(PTicket, content)
    paths = [e.path for e in info.value.errors]
    assert paths == ["$.title", "$.priority", "$.kind", "$.note"]
    assert "lower" not in str(info.value) and "chore" not in str(info.value), "model output stays out of messages"
    assert info.value.content == content
    assert isinstance(info.value, ValueError)


def test_msgspec_errors_by_json_path() -> None:
    with pytest.raises(AnswerValidationError) as info:
        validate_answer(MTicket, '{"title": "t", "priority": 1, "tags": ["a", 2]}')
    assert info.value.errors == [FieldError("$.tags[1]", "Expected `str`, got `int`")]


@pytest.mark.parametrize("target", [MTicket, PTicket])
@pytest.mark.parametrize("content", ["", "   ", None, '{"title": "t", ', "Sure! Here it is: {}"])
def test_empty_or_broken_json_is_a_validation_error_at_the_root(target: Any, content: str | None) -> None:
    with pytest.raises(AnswerValidationError) as info:
        validate_answer(target, content)
    assert info.value.errors[0].path == "$"
    assert "Here it is" not in str(info.value)


def test_truncation_is_its_own_error_with_a_hint() -> None:
    with pytest.raises(TruncatedAnswerError, match="cut off at max_tokens") as info:
        parse_answer(MTicket, {"content": '{"title": "t"'}, "length")
    assert info.value.content == '{"title": "t"'
    with pytest.raises(TruncatedAnswerError, match="spent the whole max_tokens budget on reasoning_content"):
        parse_answer(MTicket, {"content": "", "reasoning_content": "thinking..."}, "length")


def test_reask_echoes_the_answer_with_reasoning_and_lists_errors_by_path() -> None:
    answer = {"role": "assistant", "content": '{"title": "x"}', "reasoning_content": "先想一想"}
    with pytest.raises(AnswerValidationError) as info:
        validate_answer(PTicket, answer["content"])
    out = reask_messages(USER, answer, info.value)
    assert out[:2] == USER and len(USER) == 2
    assert out[2] == {"role": "assistant", "content": '{"title": "x"}', "reasoning_content": "先想一想"}
    assert out[3]["role"] == "user"
    assert "- $.title: String should match pattern" in out[3]["content"]
    assert "- $.priority: Field required" in out[3]["content"]
    plain = reask_messages(USER, {"content": None}, info.value)
    assert plain[2] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(("model", "target"), [("kimi-k2.6", MTicket), ("moonshot-v1-8k", PTicket),
                                               ("kimi-latest", DTicket)])  # fmt: skip
def test_the_steps_fit_together_over_http_against_the_simulator(sim: Any, model: str, target: Any) -> None:
    request = build_parse_request(model, [{"role": "user", "content": "ticket Broken printer"}], target)
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as http:
        reply = http.post("/chat/completions", json=request.as_params()).json()
    choice = reply["choices"][0]
    if target is PTicket:  # its pattern and bounds are beyond MFJS: the sim may miss them, validation never does
        try:
            value = parse_answer(target, choice["message"], choice["finish_reason"])
        except AnswerValidationError as exc:
            follow_up = reask_messages(request.messages, choice["message"], exc)
            assert follow_up[-1]["role"] == "user" and "$." in follow_up[-1]["content"]
            return
    else:
        value = parse_answer(target, choice["message"], choice["finish_reason"])
    assert isinstance(value, target)
