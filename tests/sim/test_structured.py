"""The simulator checks MFJS like Kimi (same 400 texts) and answers json_schema/json_object with fitting JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, Optional

import jsonschema
import msgspec
import openai
import pydantic
import pytest

from kimiflow.core.schema import check_mfjs, json_schema_of, normalize_mfjs
from kimiflow.sim.structured import json_pieces
from tests.core.schema_corpus import CORPUS
from tests.sim.conftest import Api, user

_PREFIX = "Invalid request: response_format.json_schema is not a valid moonshot flavored json schema, details: "


def _format(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


async def test_every_raw_corpus_schema_kimi_rejects_gets_kimis_400(api: Api) -> None:
    rejected = 0
    for name, tp, _instance, problems in CORPUS:
        schema = json_schema_of(tp)
        reply = await api.chat({"response_format": _format(schema)})
        if not problems:
            assert reply.status == 200, name
            continue
        rejected += 1
        first = check_mfjs(schema)[0]
        assert reply.status == 400, name
        assert reply.error == {"message": f"{_PREFIX}<{first.message}>", "type": "invalid_request_error"}, name
    assert rejected >= 25


# Constraints MFJS cannot carry (patterns, multiples, a boolean literal, the order of a tuple's
# item types): the sim, like Kimi, which never sees them, may miss them; validation against the
# original type is what catches that.
# Two more are looser in the libraries' own schemas than in their types: pydantic's Decimal
# (any string) and msgspec's datetime (no format).
_UNCARRIED = {"pydantic-constrained-str", "pydantic-constrained-num", "msgspec-constrained", "pydantic-literal-bool",
              "pydantic-tuple", "msgspec-tuple", "pydantic-decimal", "msgspec-datetime"}


async def test_normalised_corpus_schemas_get_conforming_json(api: Api) -> None:
    for name, tp, _instance, _problems in CORPUS:
        schema = normalize_mfjs(json_schema_of(tp))
        reply = await api.chat({"messages": user("把工单 ORDER-7 分类 urgent billing"), "response_format": _format(schema)})
        assert reply.status == 200, (name, reply.body)
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] == "stop", name
        content = json.loads(choice["message"]["content"])
        jsonschema.Draft202012Validator(schema).validate(content)
        if name in _UNCARRIED:
            continue
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            tp.model_validate_json(choice["message"]["content"])
        else:
            msgspec.json.decode(choice["message"]["content"], type=tp)


async def test_strings_come_from_the_prompt_and_answers_are_deterministic(api: Api) -> None:
    schema = {"type": "object", "properties": {"word": {"type": "string"}, "n": {"type": "integer", "minimum": 5,
              "maximum": 6}}, "required": ["word", "n"]}  # fmt: skip
    body = {"messages": user("classify invoice 发票"), "response_format": _format(schema)}
    first = (await api.chat(body)).json()["choices"][0]["message"]["content"]
    again = (await api.chat(body)).json()["choices"][0]["message"]["content"]
    assert first == again
    data = json.loads(first)
    assert set(data["word"].split()) <= {"classify", "invoice", "发票"}
    assert data["n"] in (5, 6)


async def test_recursive_schema_answers_are_finite_and_valid(api: Api) -> None:
    tree = {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["v", "kids"]}  # fmt: skip
    for i in range(5):
        reply = await api.chat({"messages": user(f"tree {i}"), "response_format": _format(tree)})
        jsonschema.Draft202012Validator(tree).validate(json.loads(reply.json()["choices"][0]["message"]["content"]))


async def test_json_object_answers_an_object(api: Api) -> None:
    reply = await api.chat({"response_format": {"type": "json_object"}})
    assert reply.status == 200
    assert isinstance(json.loads(reply.json()["choices"][0]["message"]["content"]), dict)


async def test_json_object_follows_a_schema_given_in_the_system_prompt(api: Api) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["city", "n"]}  # fmt: skip
    messages = [{"role": "system", "content": "Reply in JSON. Use this JSON schema:\n" + json.dumps(schema)},
                {"role": "user", "content": "北京 weather"}]  # fmt: skip
    reply = await api.chat({"messages": messages, "response_format": {"type": "json_object"}})
    content = json.loads(reply.json()["choices"][0]["message"]["content"])
    jsonschema.Draft202012Validator(schema).validate(content)
    assert set(content) == {"city", "n"}


async def test_streamed_json_equals_the_plain_answer(api: Api) -> None:
    schema = normalize_mfjs(json_schema_of(CORPUS[-1][1]))
    body = {"messages": user("stream it"), "response_format": _format(schema)}
    plain = (await api.chat(body)).json()["choices"][0]["message"]["content"]
    events = (await api.chat({**body, "stream": True})).events()
    streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e != "[DONE]" and e["choices"])
    assert streamed == plain and json.loads(streamed)
    assert sum(1 for e in events if e != "[DONE]") > 3, "JSON streams in token-sized pieces"


async def test_max_tokens_truncates_the_json_mid_document(api: Api) -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array", "minItems": 3, "items": {"type": "string"}}}}
    body = {"messages": user("a long list please"), "response_format": _format(schema)}
    full = (await api.chat(body)).json()["choices"][0]
    cut = (await api.chat({**body, "max_tokens": 4})).json()["choices"][0]
    assert cut["finish_reason"] == "length"
    assert full["message"]["content"].startswith(cut["message"]["content"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut["message"]["content"])


def test_json_pieces_rejoin_to_the_text() -> None:
    text = json.dumps({"名字": "月之暗面 kimiflow", "n": [1, 2.5, None], "s": "a\\n\"b\""}, ensure_ascii=False)
    pieces, encoded = json_pieces(text)
    assert "".join(pieces) == text
    assert [msgspec.json.decode(e) for e in encoded] == pieces


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "json_schema"}, "Invalid request: response_format.json_schema must be an object with name and schema"),
        ({"type": "json_schema", "json_schema": {"name": 1, "schema": {"type": "object"}}},
         "Invalid request: response_format.json_schema.name must be a string"),
        (_format({"type": "object", "properties": {"pair": {"type": "array", "items": [{"type": "integer"}]}}}),
         _PREFIX + "<At path 'properties.pair.items': items must be an object>"),
        (_format({"type": "array", "items": {"type": "string"}}),
         _PREFIX + "<At path 'root': type is required and must be \"object\">"),
    ],
)  # fmt: skip
async def test_bad_response_formats(api: Api, response_format: dict[str, Any], message: str) -> None:
    reply = await api.chat({"response_format": response_format})
    assert reply.status == 400 and reply.error["type"] == "invalid_request_error"
    assert reply.error["message"].startswith(message)


def _tool(parameters: Any, name: str = "lookup") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": parameters}}


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (_tool({"type": "object", "anyOf": [{"type": "object"}]}),
         "tools.function.parameters is not a valid moonshot flavored json schema, details: <At path 'root': "
         "when using anyOf, type should be defined in anyOf items instead of the parent schema>"),
        (_tool({"type": "object", "properties": {"task": {"description": "what"}}}),
         "tools.function.parameters is not a valid moonshot flavored json schema, details: "
         "<At path 'properties.task': type is not defined>"),
        (_tool({"type": "object", "properties": {"v": {"$ref": "#/$defs/V", "description": "b"}},
                "$defs": {"V": {"type": "string", "description": "a"}}}),
         "tools.function.parameters is not a valid moonshot flavored json schema, details: "
         "<At path 'properties.v': conflicting keywords found after $ref expansion: description>"),
        (_tool({"properties": {}}), 'tools.function.parameters.type is required and must be "object"'),
        (_tool({"type": "string"}), 'tools.function.parameters.type is required and must be "object"'),
        (_tool({"type": "object"}, name="3d_lookup"), "Invalid request: tools[0].function.name '3d_lookup' must not start"),
    ],
)  # fmt: skip
async def test_tools_parameters_are_checked_as_mfjs(api: Api, tool: dict[str, Any], message: str) -> None:
    reply = await api.chat({"tools": [tool]})
    assert reply.status == 400 and reply.error["type"] == "invalid_request_error"
    assert reply.error["message"].startswith(message)


async def test_a_normalised_pydantic_tool_schema_is_accepted(api: Api) -> None:
    from tests.core.schema_corpus import PTicket

    raw = json_schema_of(PTicket)
    assert (await api.chat({"tools": [_tool(raw)]})).status == 400
    reply = await api.chat({"tools": [_tool(normalize_mfjs(raw))], "messages": user("call lookup")})
    assert reply.status == 200 and reply.json()["choices"][0]["finish_reason"] == "tool_calls"


# --- the official openai SDK's own parse() against the simulator ----------------------------


class Address(pydantic.BaseModel):
    city: str
    street: Optional[str] = None


class Ticket(pydantic.BaseModel):
    """A support ticket."""

    title: str
    priority: int
    category: Literal["billing", "bug", "feature"]
    tags: list[str]
    address: Address


class Versioned(pydantic.BaseModel):
    version: Literal["v1"]


def test_openai_sdk_parse_round_trips_through_the_simulator(sim: Any) -> None:
    sdk = openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
    completion = sdk.chat.completions.parse(
        model="moonshot-v1-8k", messages=[{"role": "user", "content": "file a ticket: 发票 wrong amount"}],
        response_format=Ticket,
    )  # fmt: skip
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Ticket) and isinstance(parsed.address, Address)
    assert parsed.category in ("billing", "bug", "feature")
    sdk.close()


def test_openai_sdk_async_parse_round_trips_through_the_simulator(sim: Any) -> None:
    async def main() -> Any:
        sdk = openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
        try:
            return await sdk.chat.completions.parse(
                model="kimi-k2.5", messages=[{"role": "user", "content": "ticket please"}], response_format=Ticket
            )
        finally:
            await sdk.close()

    completion = asyncio.run(main())
    assert isinstance(completion.choices[0].message.parsed, Ticket)


def test_openai_sdk_parse_with_a_schema_kimi_rejects_gets_kimis_400(sim: Any) -> None:
    sdk = openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.parse(
            model="moonshot-v1-8k", messages=[{"role": "user", "content": "x"}], response_format=Versioned
        )
    assert "<At path 'properties.version': const is not supported>" in str(info.value)
    sdk.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_answer_faults_spoil_the_answer_alike_in_json_and_stream(api: Api, stream: bool) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["city", "n"], "additionalProperties": False}
    body = {"messages": user("北京 weather"), "response_format": _format(schema), "stream": stream}
    good = (await api.chat({**body, "stream": False})).json()["choices"][0]["message"]["content"]

    async def answer(fault: str, **extra: Any) -> tuple[str, str | None, str]:
        reply = await api.chat({**body, **extra}, headers={"X-Kimiflow-Sim-Fault": fault})
        assert reply.status == 200
        if not stream:
            choice = reply.json()["choices"][0]
            return choice["message"]["content"], choice["finish_reason"], choice["message"].get("reasoning_content", "")
        events = [e for e in reply.events() if e != "[DONE]" and e["choices"]]
        content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
        reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events)
        return content, events[-1]["choices"][0]["finish_reason"], reasoning

    assert await answer("invalid-json") == (f"```json\n{good}\n```", "stop", "")
    violated, reason, _ = await answer("schema-violation")
    assert reason == "stop" and json.loads(violated) == {**json.loads(good), "city": 12345}
    assert await answer("truncated-json") == (good[: len(good) // 2], "length", "")
    empty, reason, reasoning = await answer("empty-after-reasoning", model="kimi-k2.6", max_tokens=40)
    assert empty == "" and reason == "length" and reasoning
