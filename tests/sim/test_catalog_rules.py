"""The simulator refuses what Kimi refuses in 2026 — per-model thinking, fixed sampling, tool support,
``tool_choice`` and the conversation rules, with Kimi's texts — and serves the 2026 catalog
(docs/kimi-api.md §2.1, §2.2, §2.5; docs/kimi-api.md §2.6). Every case runs through the official ``openai``
SDK and kimiflow's clients, sync and async, over loopback.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from kimiflow import AsyncKimi, BadRequestError, Kimi, NotFoundError
from kimiflow.sim import SimConfig, Simulator, run_in_thread
from tests.sim.test_cli import _RUN, _read_banner, _start

CLIENTS = ("openai", "openai-async", "kimi", "kimi-async")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = {"role": "user", "content": "北京天气怎么样？"}


def _call(message_id: str, reasoning: str | None = "先查天气。") -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": message_id, "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "北京"}'}}],
    }
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return message


def _reply(call_id: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "tool", "name": "get_weather", "content": "晴，25°C"}
    if call_id is not None:
        message["tool_call_id"] = call_id
    return message


@pytest.fixture(scope="module")
def strict() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(seed=3)) as sim:
        yield sim


@pytest.fixture(scope="module")
def online() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(seed=3, catalog="online")) as sim:
        yield sim


@pytest.fixture(scope="module")
def lax() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(seed=3, strict_conversations=False)) as sim:
        yield sim


def create(kind: str, sim: Simulator, model: str, messages: list[dict[str, Any]], **extra: Any) -> Any:
    """One chat completion through ``kind``; every parameter but model/messages goes in the raw body."""
    if kind == "openai":
        with openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0) as sdk:
            return sdk.chat.completions.create(model=model, messages=messages, extra_body=extra)  # type: ignore[arg-type]
    if kind == "kimi":
        with Kimi(api_key=sim.api_key, base_url=sim.base_url, max_retries=0) as client:
            return client.chat.completions.create(model=model, messages=messages, extra_body=extra)  # type: ignore[arg-type]

    async def run() -> Any:
        if kind == "openai-async":
            async with openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0) as sdk:
                return await sdk.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                                         extra_body=extra)
        async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url, max_retries=0) as client:
            return await client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                                        extra_body=extra)

    return asyncio.run(run())


def refusal(kind: str, sim: Simulator, model: str, messages: list[dict[str, Any]], **extra: Any) -> tuple[int, str]:
    """The (status, Kimi's message) of a request the client must see refused."""
    try:
        create(kind, sim, model, messages, **extra)
    except (openai.APIStatusError) as exc:
        body = exc.body
        assert isinstance(body, dict)
        return exc.status_code, str(body["message"])
    except (BadRequestError, NotFoundError) as exc:
        assert exc.type in ("invalid_request_error", "resource_not_found_error")
        return exc.status_code or 0, exc.message
    raise AssertionError("the simulator accepted a request Kimi refuses")


REFUSED: list[tuple[str, str, list[dict[str, Any]], dict[str, Any], str]] = [
    ("k2.7-code-disabled", "kimi-k2.7-code", [QUESTION], {"thinking": {"type": "disabled"}},
     "invalid thinking: only type=enabled is allowed for this model"),
    ("k2.6-off-temperature-1", "kimi-k2.6", [QUESTION], {"thinking": {"type": "disabled"}, "temperature": 1},
     "invalid temperature: only 0.6 is allowed for this model"),
    ("k2.6-top_p", "kimi-k2.6", [QUESTION], {"top_p": 0.5}, "invalid top_p: only 0.95 is allowed for this model"),
    ("k2.5-n", "kimi-k2.5", [QUESTION], {"n": 2}, "invalid n: only 1 is allowed for this model"),
    ("k2.6-penalty", "kimi-k2.6", [QUESTION], {"thinking": {"type": "disabled"}, "presence_penalty": 0.5},
     "invalid presence_penalty: only 0 is allowed for this model"),
    ("thinking-shape", "kimi-k2.6", [QUESTION], {"thinking": "on"},
     'Invalid request: thinking must be an object like {"type": "enabled"} or {"type": "disabled"}, got \'on\''),
    ("k2.5-keep-all", "kimi-k2.5", [QUESTION], {"thinking": {"type": "enabled", "keep": "all"}},
     "invalid thinking: keep=all is not supported for this model; drop thinking.keep "
     "or use kimi-k2.6, kimi-k2.7-code or kimi-k3"),
    ("reasoning-missing", "kimi-k2.6", [QUESTION, _call("get_weather:0", None), _reply("get_weather:0")], {},
     "thinking is enabled but reasoning_content is missing in assistant tool call message at index 1"),
    ("reasoning-missing-k3", "kimi-k3", [{"role": "system", "content": "你是助手"}, QUESTION,
                                         _call("get_weather_0", None), _reply("get_weather_0")], {},
     "thinking is enabled but reasoning_content is missing in assistant tool call message at index 2"),
    ("unanswered-call", "moonshot-v1-8k", [QUESTION, _call("get_weather:0"), {"role": "user", "content": "还有吗"}],
     {}, "an assistant message with 'tool_calls' must be followed by tool messages responding to each "
         "'tool_call_id'. The following tool_call_ids did not have response messages: get_weather:0"),
    ("duplicate-call-id", "kimi-k2.6", [QUESTION, _call("get_weather:0"), _reply("get_weather:0"),
                                        _call("get_weather:0"), _reply("get_weather:0")], {},
     "Invalid request: tool call id get_weather:0 is duplicated"),
    ("tool-without-id", "moonshot-v1-8k", [QUESTION, _call("get_weather:0"), _reply(None)], {},
     "Invalid request: messages[2] with role 'tool' must have a tool_call_id: copy the id of the tool call it answers"),
    ("tool-name-too-short", "moonshot-v1-8k", [QUESTION],
     {"tools": [{"type": "function", "function": {"name": "go", "parameters": {"type": "object"}}}]},
     "Invalid request: tools[0].function.name 'go' is invalid: use 3 to 64 letters, digits, _ or -, "
     "starting with a letter or _ (^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$)"),
    ("tool-name-space", "moonshot-v1-8k", [QUESTION],
     {"tools": [{"type": "function", "function": {"name": "get weather", "parameters": {"type": "object"}}}]},
     "Invalid request: tools[0].function.name 'get weather' is invalid: use 3 to 64 letters, digits, _ or -, "
     "starting with a letter or _ (^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$)"),
    ("specified-with-thinking", "kimi-k2.6", [QUESTION],
     {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     "tool_choice 'specified' is incompatible with thinking enabled"),
    ("tools-unsupported", "kimi-thinking-preview", [QUESTION], {"tools": [WEATHER]},
     "Invalid request: model kimi-thinking-preview does not support tools; drop tools or use a model with "
     "tool calls such as kimi-k2.6"),
]


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize(("case", "model", "messages", "extra", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_kimis_refusals_with_its_texts(strict: Simulator, kind: str, case: str, model: str,
                                       messages: list[dict[str, Any]], extra: dict[str, Any], message: str) -> None:
    assert refusal(kind, strict, model, messages, **extra) == (400, message)


def _conversation_cases() -> list[tuple[str, str, list[dict[str, Any]]]]:
    return [(case, model, messages) for case, model, messages, extra, _ in REFUSED
            if not extra and case != "k2.7-code-disabled"]


@pytest.mark.parametrize("kind", CLIENTS)
def test_the_lax_switch_accepts_the_conversations_kimi_refuses(lax: Simulator, kind: str) -> None:
    cases = _conversation_cases()
    assert len(cases) == 5
    for case, model, messages in cases:
        resp = create(kind, lax, model, messages)
        assert resp.choices[0].finish_reason in ("stop", "length"), case
    # Parameter rules stay on: only the conversation rules are relaxed.
    assert refusal(kind, lax, "kimi-k2.7-code", [QUESTION], thinking={"type": "disabled"})[0] == 400


@pytest.mark.parametrize("kind", CLIENTS)
def test_thinking_disabled_on_k2_6_answers_without_reasoning_at_0_6(strict: Simulator, kind: str) -> None:
    off = create(kind, strict, "kimi-k2.6", [QUESTION], thinking={"type": "disabled"}, temperature=0.6)
    message = off.choices[0].message
    assert message.content
    assert getattr(message, "reasoning_content", None) is None
    on = create(kind, strict, "kimi-k2.6", [QUESTION], thinking={"type": "enabled", "keep": "all"}, temperature=1)
    assert on.choices[0].message.reasoning_content
    # Thinking on keeps its own fixed value, so 0.6 is refused there.
    assert refusal(kind, strict, "kimi-k2.6", [QUESTION], temperature=0.6) == (
        400, "invalid temperature: only 1 is allowed for this model")


@pytest.mark.parametrize("kind", CLIENTS)
def test_reasoning_is_counted_inside_max_tokens(strict: Simulator, kind: str) -> None:
    tight = create(kind, strict, "kimi-k2.6", [QUESTION], max_tokens=4)
    assert tight.choices[0].finish_reason == "length"
    assert tight.choices[0].message.content == ""
    assert tight.choices[0].message.reasoning_content
    assert tight.usage.completion_tokens == 4
    off = create(kind, strict, "kimi-k2.6", [QUESTION], max_tokens=4, thinking={"type": "disabled"})
    assert off.choices[0].finish_reason == "length" and off.choices[0].message.content
    assert getattr(off.choices[0].message, "reasoning_content", None) is None
    assert off.usage.completion_tokens == 4


def test_a_thinking_off_stream_has_no_reasoning_deltas(strict: Simulator) -> None:
    body = {"model": "kimi-k2.6", "messages": [QUESTION], "thinking": {"type": "disabled"}, "stream": True}
    headers = {"Authorization": f"Bearer {strict.api_key}"}
    with httpx.Client(base_url=strict.base_url, headers=headers) as http:
        text = http.post("/chat/completions", json=body).text
    assert '"content"' in text and "reasoning_content" not in text and "reasoning_tokens" not in text
    body["thinking"] = {"type": "enabled"}
    with httpx.Client(base_url=strict.base_url, headers=headers) as http:
        assert "reasoning_content" in http.post("/chat/completions", json=body).text


@pytest.mark.parametrize("kind", CLIENTS)
def test_forced_tool_choice_where_kimi_accepts_it(strict: Simulator, kind: str) -> None:
    k3 = create(kind, strict, "kimi-k3", [QUESTION], tools=[WEATHER], tool_choice="required")
    assert k3.choices[0].finish_reason in ("stop", "tool_calls", "length")
    off = create(kind, strict, "kimi-k2.6", [QUESTION], tools=[WEATHER], tool_choice="required",
                 thinking={"type": "disabled"})
    assert off.choices[0].finish_reason in ("stop", "tool_calls", "length")


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_tool_loop_that_carries_reasoning_back_is_accepted(strict: Simulator, kind: str) -> None:
    first = create(kind, strict, "kimi-k2.6", [{"role": "user", "content": "get_weather 北京"}], tools=[WEATHER])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.reasoning_content
    calls = [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
             for c in message.tool_calls]
    history = [{"role": "user", "content": "get_weather 北京"},
               {"role": "assistant", "content": message.content or "", "tool_calls": calls,
                "reasoning_content": message.reasoning_content},
               *(_reply(c["id"]) for c in calls)]
    final = create(kind, strict, "kimi-k2.6", history, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content


ONLINE = {"kimi-k3", "kimi-k2.7-code", "kimi-k2.7-code-highspeed", "kimi-k2.6"}


def test_online_catalog_lists_only_the_2026_models_and_404s_the_retired(online: Simulator, strict: Simulator) -> None:
    with Kimi(api_key=online.api_key, base_url=online.base_url, max_retries=0) as client:
        assert {m.id for m in client.models.list().data} == ONLINE
        with pytest.raises(NotFoundError, match=r"Not found the model kimi-k2\.5 or Permission denied"):
            client.tokens.count(model="kimi-k2.5", messages=[QUESTION])
        assert client.tokens.count(model="kimi-k2.6", messages=[QUESTION]).total_tokens > 0
    with Kimi(api_key=strict.api_key, base_url=strict.base_url, max_retries=0) as client:
        assert {m.id for m in client.models.list().data} >= ONLINE | {"moonshot-v1-8k", "kimi-k2.5"}
    for kind in CLIENTS:
        for model in ("kimi-k2.5", "moonshot-v1-8k", "kimi-latest"):
            assert refusal(kind, online, model, [QUESTION]) == (404, f"Not found the model {model} or Permission denied")
        assert create(kind, online, "kimi-k3", [QUESTION]).model == "kimi-k3"


def test_get_model_by_id(online: Simulator, strict: Simulator) -> None:
    with openai.OpenAI(api_key=strict.api_key, base_url=strict.base_url, max_retries=0) as sdk:
        k3 = sdk.models.retrieve("kimi-k3")
        assert k3.id == "kimi-k3" and k3.object == "model" and k3.owned_by == "moonshot"
        assert k3.model_extra is not None and k3.model_extra["context_length"] == 1_048_576
        assert sdk.models.retrieve("moonshot-v1-8k").id == "moonshot-v1-8k"
        with pytest.raises(openai.NotFoundError) as info:
            sdk.models.retrieve("kimi-k9")
        assert info.value.body == {"message": "Not found the model kimi-k9 or Permission denied",
                                   "type": "resource_not_found_error"}
    with openai.OpenAI(api_key=online.api_key, base_url=online.base_url, max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("moonshot-v1-8k")
        assert sdk.models.retrieve("kimi-k2.7-code-highspeed").id == "kimi-k2.7-code-highspeed"


def test_sim_command_takes_catalog_and_lax() -> None:
    proc = _start("--port", "0", "--catalog", "online", "--lax")
    try:
        base_url, key, banner = _read_banner(proc)
        assert "catalog online, lax conversations" in banner[0], banner
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            retired = http.post("/chat/completions", json={"model": "kimi-k2.5", "messages": [QUESTION]})
            assert retired.status_code == 404
            unanswered = [QUESTION, _call("get_weather:0"), {"role": "user", "content": "还有吗"}]
            assert http.post("/chat/completions", json={"model": "kimi-k2.6", "messages": unanswered}).status_code == 200
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    bad = subprocess.run([*_RUN, "--catalog", "all"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "'all' is not one of 'full', 'online'" in bad.stderr


def test_sim_config_refuses_an_unknown_catalog() -> None:
    with pytest.raises(ValueError, match="catalog must be 'full' or 'online', got 'all'"):
        SimConfig(catalog="all")
