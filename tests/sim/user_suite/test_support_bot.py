"""A user's own tests of their support bot, pinned with scripted answers (kimiflow sim --answers).

Their CI starts `kimiflow sim --answers answers.jsonl` and exports MOONSHOT_BASE_URL and
MOONSHOT_API_KEY; these tests then run unchanged with kimiflow's client and the official openai SDK.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import openai
import pytest

import kimiflow

BASE_URL = os.environ["MOONSHOT_BASE_URL"]
API_KEY = os.environ["MOONSHOT_API_KEY"]
MODEL = "moonshot-v1-8k"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(params=["kimiflow", "openai"])
def client(request: pytest.FixtureRequest) -> Any:
    if request.param == "kimiflow":
        return kimiflow.Kimi(api_key=API_KEY, base_url=BASE_URL, max_retries=0)
    return openai.OpenAI(api_key=API_KEY, base_url=BASE_URL, max_retries=0)


@pytest.fixture(autouse=True)
def fresh_script() -> None:
    """Every test starts each scripted line from its first reply (the simulator is shared)."""
    root = BASE_URL.rsplit("/v1", 1)[0]
    assert httpx.post(f"{root}/_sim/answers/reset").status_code == 200


def ask(client: Any, text: str, **params: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], **params)


def test_return_policy(client: Any) -> None:
    answer = ask(client, "你们的退货政策是什么？")
    assert answer.choices[0].message.content == "七天无理由退货。"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens > 0


def test_return_policy_streamed(client: Any) -> None:
    chunks = list(ask(client, "退货政策", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "七天无理由退货。"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1


def test_order_status(client: Any) -> None:
    assert ask(client, "查一下订单 #204518").choices[0].message.content == "您的订单已发货，预计两天内送达。"


def test_weather_tool_loop(client: Any) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "北京天气怎么样？"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "北京"}
    messages.append({"role": "assistant", "content": "", "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}
    ]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 25}'})
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "北京今天晴，25°C。"


def test_human_handoff_is_refused(client: Any) -> None:
    errors = (kimiflow.BadRequestError, openai.BadRequestError)
    with pytest.raises(errors) as info:
        ask(client, "转人工客服")
    assert "scripted: no human today" in str(info.value)


def test_unscripted_question_still_gets_an_answer(client: Any) -> None:
    text = ask(client, "给我讲讲杭州").choices[0].message.content
    assert text and text != "七天无理由退货。"


def test_stock_query_survives_two_outages(client: Any) -> None:
    retrying = client.with_options(max_retries=2)
    assert ask(retrying, "库存还有吗").choices[0].message.content == "还有 3 件。"
