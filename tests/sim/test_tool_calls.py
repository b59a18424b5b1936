"""Tool calls that look like Kimi's: chosen from the question's meaning, arguments valid for the schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import openai
import pytest

from kimiflow import Kimi
from kimiflow.sim import SimConfig, run_in_thread
from tests.sim.conftest import Api, user

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "城市名 / city name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "查询城市的天气 / current weather of a city",
                 "parameters": WEATHER_PARAMETERS},
}
FLIGHTS = {
    "type": "function",
    "function": {
        "name": "search_flights",
        "description": "Find flights between two cities",
        "parameters": {
            "type": "object",
            "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                           "date": {"type": "string", "description": "format: date"}, "passengers": {"type": "integer",
                                                                                   "minimum": 1, "maximum": 9}},
            "required": ["origin", "destination"],
        },
    },
}
TRANSLATE = {
    "type": "function",
    "function": {"name": "translate_text", "description": "Translate text into another language",
                 "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
}
MODEL = "kimi-k2-0905-preview"


def _openai(base_url: str, key: str) -> Any:
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=0)


def _kimi(base_url: str, key: str) -> Any:
    return Kimi(api_key=key, base_url=base_url, max_retries=0)


@pytest.mark.parametrize("make_client", [_openai, _kimi], ids=["openai-sdk", "kimiflow"])
def test_weather_question_runs_a_full_tool_loop(make_client: Callable[[str, str], Any]) -> None:
    """A natural question and a weather tool: a schema-valid call with the city, then a final answer."""
    with run_in_thread(SimConfig(seed=5)) as sim, make_client(sim.base_url, sim.api_key) as client:
        question = [{"role": "user", "content": "What's the weather in Beijing?"}]
        first = client.chat.completions.create(model=MODEL, messages=question, tools=[WEATHER])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather" and call.id == "get_weather:0"
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, WEATHER_PARAMETERS)
        assert arguments["city"] == "Beijing"
        history = [
            *question,
            {"role": "assistant", "content": choice.message.content or "",
             "tool_calls": [{"id": call.id, "type": "function",
                             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "name": "get_weather", "content": '{"temp": 21, "sky": "sunny"}'},
        ]
        final = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER])
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content and not final.choices[0].message.tool_calls


async def test_chinese_question_matches_the_description(api: Api) -> None:
    """"北京今天天气怎么样" meets "天气" in the description; the city comes from the prompt."""
    data = (await api.chat({"model": MODEL, "tools": [WEATHER, TRANSLATE], "messages": user("北京今天天气怎么样？")})).json()
    [call] = data["choices"][0]["message"]["tool_calls"]
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    assert call["function"]["name"] == "get_weather" and arguments["city"] == "北京"


async def test_unrelated_question_gets_a_text_answer(api: Api) -> None:
    data = (await api.chat({"model": MODEL, "tools": [WEATHER, FLIGHTS], "messages": user("Tell me a joke")})).json()
    assert data["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in data["choices"][0]["message"]


async def test_question_matching_two_tools_gets_parallel_calls(api: Api) -> None:
    question = user("Find flights from Shanghai to Tokyo and tell me the weather in Tokyo")
    data = (await api.chat({"model": MODEL, "tools": [WEATHER, TRANSLATE, FLIGHTS], "messages": question})).json()
    calls = data["choices"][0]["message"]["tool_calls"]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [
        (0, "get_weather:0", "get_weather"), (1, "search_flights:1", "search_flights")]
    flights = json.loads(calls[1]["function"]["arguments"])
    jsonschema.validate(flights, FLIGHTS["function"]["parameters"])
    assert (flights["origin"], flights["destination"]) == ("Shanghai", "Tokyo")


async def test_tool_choice_none_never_calls_a_matching_tool(api: Api) -> None:
    body = {"model": MODEL, "tools": [WEATHER], "tool_choice": "none", "messages": user("What's the weather in Paris?")}
    data = (await api.chat(body)).json()
    assert data["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in data["choices"][0]["message"]


async def test_tool_choice_required_calls_the_best_tool_even_without_a_match(api: Api) -> None:
    """kimi-k3 accepts "required": an unrelated question still gets one call, to the best-scoring tool."""
    for question, expected in (("Tell me a joke", "get_weather"), ("translate this text please", "translate_text")):
        body = {"model": "kimi-k3", "tools": [WEATHER, TRANSLATE], "tool_choice": "required", "messages": user(question)}
        data = (await api.chat(body)).json()
        assert [c["function"]["name"] for c in data["choices"][0]["message"]["tool_calls"]] == [expected]


async def test_named_tool_choice_wins_over_a_better_match(api: Api) -> None:
    choice = {"type": "function", "function": {"name": "translate_text"}}
    body = {"model": "kimi-k3", "tools": [WEATHER, TRANSLATE], "tool_choice": choice,
            "messages": user("What's the weather in Beijing?")}
    [call] = (await api.chat(body)).json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "translate_text"
    assert json.loads(call["function"]["arguments"])["text"] == "Beijing"


async def test_streamed_arguments_equal_the_non_streaming_ones(api: Api) -> None:
    body = {"model": MODEL, "tools": [WEATHER], "messages": user("上海的天气")}
    plain = json.loads((await api.chat(body)).json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    events = (await api.chat({**body, "stream": True})).events()
    streamed = "".join(call["function"].get("arguments", "") for e in events if isinstance(e, dict)
                       for call in e["choices"][0]["delta"].get("tool_calls", []))
    assert json.loads(streamed) == plain and plain["city"] == "上海"
