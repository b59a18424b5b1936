"""Non-streaming chat completions: shape (docs/kimi-api.md §3), determinism, lengths, n, thinking, tools."""

from __future__ import annotations

import re

from kimiflow.core.pricing import cost_cny
from kimiflow.core.tokens import estimate_message_tokens, estimate_text_tokens
from tests.sim.conftest import Api, SimFactory, user


async def test_response_has_kimi_shape_and_headers(api: Api) -> None:
    reply = await api.chat({})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-11ef-[0-9a-f]{4}-[0-9a-f]{12}", reply.headers["Msh-Request-Id"])
    assert reply.headers["Msh-Gid"] == "enterprise-tier-5"
    assert "Retry-After" not in reply.headers
    data = reply.json()
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{24}", data["id"])
    assert data["object"] == "chat.completion"
    assert data["model"] == "moonshot-v1-8k"
    assert isinstance(data["created"], int)
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert "reasoning_content" not in choice["message"]
    usage = data["usage"]
    assert usage["prompt_tokens"] == estimate_message_tokens(user("你好，介绍一下 Kimi"))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 20 <= usage["completion_tokens"] <= 120


async def test_request_ids_are_unique(api: Api) -> None:
    ids = {(await api.chat({})).headers["Msh-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


async def test_same_request_and_seed_give_same_answer(make_api: SimFactory) -> None:
    first, second, other_seed = await make_api(seed=5), await make_api(seed=5), await make_api(seed=6)
    body = {"messages": user("Tell me about 月之暗面")}
    a = (await first.chat(body)).json()["choices"][0]["message"]["content"]
    b = (await second.chat(body)).json()["choices"][0]["message"]["content"]
    c = (await other_seed.chat(body)).json()["choices"][0]["message"]["content"]
    d = (await first.chat({"messages": user("something else")})).json()["choices"][0]["message"]["content"]
    assert a == b
    assert a != c
    assert a != d


async def test_answer_mixes_chinese_and_english(api: Api) -> None:
    content = (await api.chat({}, headers={"X-Kimiflow-Sim-Tokens": "400"})).json()["choices"][0]["message"]["content"]
    assert re.search(r"[\u4e00-\u9fff]", content)
    assert re.search(r"[A-Za-z]{3,}", content)


async def test_forced_token_count_header(api: Api) -> None:
    data = (await api.chat({}, headers={"X-Kimiflow-Sim-Tokens": "777"})).json()
    assert data["usage"]["completion_tokens"] == 777
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_forced_token_header_must_be_a_positive_integer(api: Api) -> None:
    reply = await api.chat({}, headers={"X-Kimiflow-Sim-Tokens": "lots"})
    assert reply.status == 400
    assert "X-Kimiflow-Sim-Tokens" in reply.error["message"]


async def test_token_estimate_of_answer_is_close_to_completion_tokens(api: Api) -> None:
    data = (await api.chat({}, headers={"X-Kimiflow-Sim-Tokens": "2000"})).json()
    estimate = estimate_text_tokens(data["choices"][0]["message"]["content"])
    assert abs(estimate - 2000) / 2000 < 0.15, estimate


async def test_max_tokens_caps_answer_with_finish_reason_length(api: Api) -> None:
    data = (await api.chat({"max_tokens": 5}, headers={"X-Kimiflow-Sim-Tokens": "50"})).json()
    assert data["usage"]["completion_tokens"] == 5
    assert data["choices"][0]["finish_reason"] == "length"


async def test_max_completion_tokens_is_preferred_over_max_tokens(api: Api) -> None:
    data = (await api.chat({"max_tokens": 40, "max_completion_tokens": 7}, headers={"X-Kimiflow-Sim-Tokens": "50"})).json()
    assert data["usage"]["completion_tokens"] == 7
    assert data["choices"][0]["finish_reason"] == "length"


async def test_stop_string_truncates_and_is_not_emitted(api: Api) -> None:
    full = (await api.chat({}, headers={"X-Kimiflow-Sim-Tokens": "60"})).json()["choices"][0]["message"]["content"]
    stop = full[10:13]
    data = (await api.chat({"stop": [stop]}, headers={"X-Kimiflow-Sim-Tokens": "60"})).json()
    content = data["choices"][0]["message"]["content"]
    assert content == full[: full.index(stop)]
    assert stop not in content
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] < 60


async def test_n_choices_differ_and_usage_sums_them(api: Api) -> None:
    data = (await api.chat({"n": 3, "temperature": 0.7})).json()
    choices = data["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) == 3
    prompt = data["usage"]["prompt_tokens"]
    assert data["usage"]["total_tokens"] == prompt + data["usage"]["completion_tokens"]


async def test_thinking_model_returns_reasoning_content(api: Api) -> None:
    data = (await api.chat({"model": "kimi-k2-thinking"})).json()
    message = data["choices"][0]["message"]
    assert message["reasoning_content"]
    assert message["content"]
    reasoning_tokens = data["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning_tokens < data["usage"]["completion_tokens"]


async def test_tool_call_when_function_named_in_user_message(api: Api) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        },
        {"type": "function", "function": {"name": "unused_tool", "parameters": {"type": "object"}}},
    ]
    data = (await api.chat({"tools": tools, "messages": user("call get_weather for 北京")})).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == ""
    [call] = choice["message"]["tool_calls"]
    assert call["index"] == 0
    assert call["id"] == "get_weather:0"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(__import__("json").loads(call["function"]["arguments"])["city"], str)


async def test_tool_choice_none_or_tool_result_gives_plain_answer(api: Api) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    plain = (await api.chat({"tools": tools, "tool_choice": "none", "messages": user("get_weather")})).json()
    assert plain["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in plain["choices"][0]["message"]
    messages = [
        {"role": "user", "content": "get_weather please"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "get_weather:0", "name": "get_weather", "content": "晴 25°C"},
    ]
    answered = (await api.chat({"tools": tools, "messages": messages})).json()
    assert answered["choices"][0]["finish_reason"] == "stop"
    assert answered["choices"][0]["message"]["content"]


async def test_tool_choice_object_forces_that_function(api: Api) -> None:
    tools = [
        {"type": "function", "function": {"name": "alpha_tool", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "beta_tool", "parameters": {"type": "object"}}},
    ]
    choice = {"type": "function", "function": {"name": "beta_tool"}}
    data = (await api.chat({"tools": tools, "tool_choice": choice, "messages": user("hello")})).json()
    assert [c["function"]["name"] for c in data["choices"][0]["message"]["tool_calls"]] == ["beta_tool"]


async def test_web_search_builtin(api: Api) -> None:
    tools = [{"type": "builtin_function", "function": {"name": "$web_search"}}]
    data = (await api.chat({"tools": tools, "messages": user("请搜索今天的新闻")})).json()
    [call] = data["choices"][0]["message"]["tool_calls"]
    assert call["type"] == "builtin_function"
    assert call["function"]["name"] == "$web_search"
    arguments = __import__("json").loads(call["function"]["arguments"])
    assert arguments["usage"]["total_tokens"] > 0
    assert arguments["search_result"]["search_id"]


async def test_balance_decreases_by_each_completion_cost(api: Api) -> None:
    before = api.sim.balance
    data = (await api.chat({"model": "moonshot-v1-32k"}, headers={"X-Kimiflow-Sim-Tokens": "1000"})).json()
    expected = cost_cny("moonshot-v1-32k", data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"])
    assert expected > 0
    assert abs((before - api.sim.balance) - expected) < 1e-12
    balance = (await api.request("GET", "/users/me/balance")).json()
    assert balance["code"] == 0 and balance["status"] is True and balance["scode"] == "0x0"
    assert abs(balance["data"]["available_balance"] - round(api.sim.balance, 5)) < 1e-6
