"""``chat.completions.parse()`` on both clients, over loopback HTTP against the simulator.

The simulator's answer faults (``X-Kimiflow-Sim-Fault: invalid-json;times=N;key=K``) spoil the
first N answers of a key, so the re-ask and truncation paths run for real; a small recording
upstream written here checks what the re-ask sends back to the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Literal, TypedDict

import msgspec
import pydantic
import pytest
from aiohttp import web

from kimiflow import (
    AnswerBudgetExceededError,
    AnswerValidationError,
    ChatCompletion,
    InvalidArgumentError,
    ParsedChatCompletion,
    QuotaExceededError,
    StructuredAnswerError,
    TruncatedAnswerError,
)
from tests.client.twins import Twin

MESSAGES = [{"role": "user", "content": "把这张工单归类: 打印机坏了 printer broken"}]


class TicketStruct(msgspec.Struct):
    title: str
    priority: int
    category: Literal["hardware", "software", "network"]
    tags: list[str]
    assignee: str | None = None


@dataclasses.dataclass
class TicketDataclass:
    title: str
    priority: int
    urgent: bool


class TicketDict(TypedDict):
    title: str
    priority: int


class TicketModel(pydantic.BaseModel):
    title: str
    priority: int = pydantic.Field(ge=0, le=100)
    category: Literal["hardware", "software", "network"]


TICKET_SCHEMA: dict[str, Any] = {
    "title": "Ticket",
    "type": "object",
    "properties": {"title": {"type": "string"}, "priority": {"type": "integer"}},
    "required": ["title", "priority"],
    "additionalProperties": False,
}


def _fault(name: str, times: int) -> dict[str, str]:
    # A fresh key per test: the shared simulator counts ``times`` per key for the whole session.
    return {"X-Kimiflow-Sim-Fault": f"{name};times={times};key={uuid.uuid4().hex}"}


def _chat_requests(sim: Any) -> int:
    return int(sim.state.stats.chat_completions)


@pytest.mark.parametrize("model", ["moonshot-v1-8k", "kimi-k2.6", "kimi-latest"])
@pytest.mark.parametrize("target", [TicketStruct, TicketDataclass, TicketDict, TicketModel, TICKET_SCHEMA],
                         ids=["struct", "dataclass", "typeddict", "pydantic", "schema-dict"])
def test_parse_round_trips_every_kind_of_type(twin: Twin, target: Any, model: str) -> None:
    """json_schema models (moonshot-v1, kimi-k2) and json_object ones (kimi-latest) alike."""
    resp = twin.run(lambda c: c.chat.completions.parse(model=model, messages=MESSAGES, response_format=target))
    assert isinstance(resp, ParsedChatCompletion) and isinstance(resp, ChatCompletion)
    parsed = resp.choices[0].message.parsed
    if isinstance(target, dict):
        assert isinstance(parsed, dict) and isinstance(parsed["title"], str) and isinstance(parsed["priority"], int)
    elif target is TicketDict:
        assert isinstance(parsed, dict) and set(parsed) == {"title", "priority"}
    else:
        assert isinstance(parsed, target)
    as_data = parsed.model_dump() if isinstance(parsed, pydantic.BaseModel) else msgspec.to_builtins(parsed)
    assert as_data == json.loads(resp.choices[0].message.content or "")
    assert resp.usage is not None and resp.usage.total_tokens > 0
    assert len(resp.attempt_completions) == 1 and resp.request_id
    assert resp.to_dict()["choices"][0]["message"]["content"] == resp.choices[0].message.content


@pytest.mark.parametrize("fault", ["invalid-json", "schema-violation"])
def test_two_invalid_answers_are_re_asked_and_usage_is_their_sum(twin: Twin, sim: Any, fault: str) -> None:
    before = _chat_requests(sim)
    resp = twin.run(lambda c: c.chat.completions.parse(
        model="kimi-k2.6", messages=MESSAGES, response_format=TicketStruct, extra_headers=_fault(fault, 2)))
    assert _chat_requests(sim) - before == 3
    attempts = resp.attempt_completions
    assert len(attempts) == 3 and attempts[-1].id == resp.id
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(resp.usage, field) == sum(getattr(a.usage, field) for a in attempts)
    assert resp.usage.completion_tokens_details.reasoning_tokens == sum(
        a.usage.completion_tokens_details.reasoning_tokens for a in attempts)
    # Each re-ask carries the conversation so far, so the prompts grow.
    assert attempts[0].usage.prompt_tokens < attempts[1].usage.prompt_tokens < attempts[2].usage.prompt_tokens
    assert isinstance(resp.choices[0].message.parsed, TicketStruct)


def test_validation_retries_exhausted_raises_with_the_total_cost(twin: Twin, sim: Any) -> None:
    before = _chat_requests(sim)
    with pytest.raises(AnswerValidationError) as info:
        twin.run(lambda c: c.chat.completions.parse(
            model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct, max_validation_retries=1,
            extra_headers=_fault("schema-violation", 5)))
    assert _chat_requests(sim) - before == 2
    error = info.value
    assert isinstance(error, StructuredAnswerError) and len(error.completions) == 2
    assert error.usage is not None
    assert error.usage.total_tokens == sum(c.usage.total_tokens for c in error.completions)
    assert error.errors[0].path == "$.title" and "after 2 attempts" in str(error)
    assert error.content is not None and error.content not in str(error)


def test_truncation_raises_the_typed_error_without_a_re_ask(twin: Twin, sim: Any) -> None:
    before = _chat_requests(sim)
    with pytest.raises(TruncatedAnswerError, match="raise max_tokens") as info:
        twin.run(lambda c: c.chat.completions.parse(
            model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct,
            extra_headers=_fault("truncated-json", 1)))
    assert _chat_requests(sim) - before == 1
    error = info.value
    assert error.completion is not None and error.completion.choices[0].finish_reason == "length"
    assert error.content and error.content == error.completion.choices[0].message.content
    assert error.usage is not None and error.usage.total_tokens == error.completion.usage.total_tokens


def test_empty_answer_after_long_reasoning_says_thinking_spent_the_budget(twin: Twin) -> None:
    with pytest.raises(TruncatedAnswerError, match="spent the whole max_tokens budget on reasoning") as info:
        twin.run(lambda c: c.chat.completions.parse(
            model="kimi-k2.6", messages=MESSAGES, response_format=TicketStruct, max_tokens=300,
            extra_headers=_fault("empty-after-reasoning", 1)))
    assert not info.value.content and info.value.reasoning_content
    assert info.value.completion.usage.completion_tokens == 300


@pytest.mark.parametrize("fault", ["quota", "quota-403"])
def test_a_quota_error_is_neither_re_asked_nor_retried(twin: Twin, sim: Any, fault: str) -> None:
    before = int(sim.state.stats.requests)
    with pytest.raises(QuotaExceededError):
        twin.run(lambda c: c.chat.completions.parse(
            model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct,
            extra_headers=_fault(fault, 5)))
    assert int(sim.state.stats.requests) - before == 1


def test_a_rate_limit_is_retried_by_the_client_and_never_enters_the_prompt(twin: Twin, sim: Any) -> None:
    before = _chat_requests(sim)
    resp = twin.run(lambda c: c.chat.completions.parse(
        model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct, extra_headers=_fault("429", 1)))
    assert len(resp.attempt_completions) == 1 and resp.attempts == 2
    assert _chat_requests(sim) - before == 1  # the 429 never reached the chat handler


def test_token_budget_stops_the_re_asks(twin: Twin, sim: Any) -> None:
    before = _chat_requests(sim)
    with pytest.raises(AnswerBudgetExceededError, match="token_budget=1") as info:
        twin.run(lambda c: c.chat.completions.parse(
            model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct, token_budget=1,
            max_validation_retries=5, extra_headers=_fault("invalid-json", 5)))
    assert _chat_requests(sim) - before == 1
    assert isinstance(info.value.last_error, AnswerValidationError)
    assert info.value.usage is not None and info.value.usage.total_tokens == info.value.completions[0].usage.total_tokens


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_validation_retries": -1}, "max_validation_retries must be an integer >= 0"),
    ({"token_budget": 0}, "token_budget must be an integer >= 1"),
    ({"stream": True}, "chat.completions.parse_stream"),
])
def test_bad_parse_arguments_are_one_line_errors(twin: Twin, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        twin.run(lambda c: c.chat.completions.parse(model="moonshot-v1-8k", messages=MESSAGES,
                                                    response_format=TicketStruct, **kwargs))


# A recording upstream: answers from a script and keeps every request body, to check the re-ask.
_SECRET = "SECRET-ANSWER-7f3a"
_SCRIPT = [
    {"content": json.dumps({"title": _SECRET, "priority": "high", "category": "hardware", "tags": []}),
     "reasoning_content": "thinking about the ticket " + _SECRET},
    {"content": json.dumps({"title": "Printer", "priority": 2, "category": "hardware", "tags": ["p"]}),
     "reasoning_content": "fixed"},
]


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        message = _SCRIPT[min(len(bodies), len(_SCRIPT)) - 1]
        return web.json_response({
            "id": f"chatcmpl-{len(bodies)}", "object": "chat.completion", "created": 1, "model": "kimi-k2.6",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10 * len(bodies), "completion_tokens": 5, "total_tokens": 10 * len(bodies) + 5},
        })

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1", bodies
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_re_ask_sends_the_answer_with_its_reasoning_and_errors_by_path(
    recorder: tuple[str, list[dict[str, Any]]], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    base_url, bodies = recorder
    twin = Twin(kind, api_key="sk-test-parse-0001", base_url=base_url)
    with caplog.at_level(logging.DEBUG, logger="kimiflow"):
        resp = twin.run(lambda c: c.chat.completions.parse(
            model="kimi-k2.6", messages=MESSAGES, response_format=TicketStruct, temperature=0.2))
    assert resp.choices[0].message.parsed == TicketStruct("Printer", 2, "hardware", ["p"])
    assert resp.usage.total_tokens == 15 + 25
    assert len(bodies) == 2 and bodies[1]["temperature"] == 0.2
    assert bodies[0]["response_format"]["type"] == "json_schema"
    assert bodies[1]["messages"][: len(MESSAGES)] == MESSAGES
    assistant, correction = bodies[1]["messages"][-2:]
    assert assistant == {"role": "assistant", **_SCRIPT[0]}
    assert correction["role"] == "user" and "$.priority" in correction["content"]
    assert _SECRET not in caplog.text and "$.priority" in caplog.text


def test_model_output_stays_out_of_the_error_message(recorder: tuple[str, list[dict[str, Any]]]) -> None:
    """Even an enum value the validator would quote is cut from the text (it stays in ``errors``)."""
    base_url, _ = recorder

    class Strict(msgspec.Struct):
        title: Literal["a", "b"]

    with pytest.raises(AnswerValidationError) as info:
        Twin("sync", api_key="sk-test-parse-0001", base_url=base_url).run(
            lambda c: c.chat.completions.parse(model="kimi-k2.6", messages=MESSAGES, response_format=Strict,
                                               max_validation_retries=0))
    assert _SECRET not in str(info.value) and "Invalid enum value" in str(info.value)
    assert _SECRET in info.value.errors[0].message
