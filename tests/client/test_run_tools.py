"""``chat.completions.run_tools()`` on both clients, over loopback HTTP.

Against the simulator (its tool rule: every declared function whose name is in the last user
message is called; after a tool result it answers in prose) and against a small scripted upstream
written here, which always answers with the tool calls it is given and keeps every request body,
so the step limit and what goes back to the model are checked at the wire.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from kimiflow import (
    WEB_SEARCH_TOOL,
    InvalidArgumentError,
    KimiflowError,
    MaxStepsExceededError,
    ToolEvent,
    ToolLoopError,
)
from kimiflow.core.pricing import usage_cost_cny
from kimiflow.tool_loop import WEB_SEARCH_FEE_CNY, function_tool
from tests.client.twins import Twin

SLOW_SECONDS = 1.0


def slow_alpha(city: str) -> str:
    """Forecast for a city (takes a second)."""
    time.sleep(SLOW_SECONDS)
    return "alpha done"


async def slow_beta(city: str) -> str:
    await asyncio.sleep(SLOW_SECONDS * 0.9)  # finishes before slow_alpha: the order must still be call order
    return "beta done"


def slow_gamma(count: int) -> dict[str, Any]:
    time.sleep(SLOW_SECONDS * 0.8)
    return {"gamma": count}


def test_three_one_second_tools_run_concurrently_with_results_in_call_order(twin: Twin) -> None:
    """Three slow tools called in one answer take about one second, not three; results keep call order."""
    events: list[ToolEvent] = []
    messages = [{"role": "user", "content": "please call slow_alpha, slow_beta and slow_gamma"}]
    started = time.monotonic()
    run = twin.run(lambda c: c.chat.completions.run_tools(
        model="moonshot-v1-8k", messages=messages, tools=[slow_alpha, slow_beta, slow_gamma], on_event=events.append))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"tools ran one after another: {elapsed:.2f}s"
    assert run.steps == 2 and run.final is run.completions[-1] and run.content
    assistant, *tool_messages = run.messages[1:5]
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["slow_alpha", "slow_beta", "slow_gamma"]
    assert [m["tool_call_id"] for m in tool_messages] == [c["id"] for c in assistant["tool_calls"]]
    assert [m["content"] for m in tool_messages[:2]] == ["alpha done", "beta done"]
    assert json.loads(tool_messages[2]["content"])["gamma"] == json.loads(
        assistant["tool_calls"][2]["function"]["arguments"])["count"]
    assert run.messages[-1]["role"] == "assistant" and run.messages[-1]["content"] == run.content
    # usage and cost are the totals over both steps
    usages = [c.usage for c in run.completions]
    assert run.usage.prompt_tokens == sum(u.prompt_tokens for u in usages)
    assert run.usage.completion_tokens == sum(u.completion_tokens for u in usages)
    assert run.usage.total_tokens == sum(u.total_tokens for u in usages) > usages[0].total_tokens
    assert run.cost_cny == pytest.approx(sum(usage_cost_cny("moonshot-v1-8k", u) for u in usages)) and run.cost_cny > 0
    kinds = [e.kind for e in events]
    assert kinds == ["tool_call_started"] * 3 + ["tool_call_finished"] * 3 + ["step_done", "step_done"]
    assert [e.content for e in events[3:5]] == ["alpha done", "beta done"]


def test_web_search_goes_through_the_same_loop_with_its_arguments_unchanged(twin: Twin) -> None:
    """``$web_search``'s tool message is the call's arguments, as sent (kimi-api.md §2.4)."""
    messages = [{"role": "user", "content": "web_search the weather in Beijing"}]
    run = twin.run(lambda c: c.chat.completions.run_tools(model="moonshot-v1-8k", messages=messages,
                                                          tools=[WEB_SEARCH_TOOL]))
    assistant, tool_message = run.messages[1], run.messages[2]
    call = assistant["tool_calls"][0]
    assert call["function"]["name"] == "$web_search" and call["type"] == "builtin_function"
    assert tool_message == {"role": "tool", "tool_call_id": call["id"], "name": "$web_search",
                            "content": call["function"]["arguments"]}
    assert run.steps == 2 and run.content
    tokens = sum(usage_cost_cny("moonshot-v1-8k", c.usage) for c in run.completions)
    assert run.cost_cny == pytest.approx(tokens + WEB_SEARCH_FEE_CNY)


# A scripted upstream: answers each request with script(n) and keeps every request body.
Script = Callable[[int], dict[str, Any]]


def _tool_calls_answer(n: int, calls: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1, "model": "kimi-k2.6",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "", "reasoning_content": f"step {n}: I need tools \u2028 exactly",
            "tool_calls": [{"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
                           for i, (call_id, name, args) in enumerate(calls)]}}],
        "usage": {"prompt_tokens": 100 * n, "completion_tokens": 7, "total_tokens": 100 * n + 7},
    }


def _final_answer(n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1, "model": "kimi-k2.6",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "all done", "reasoning_content": "fine"}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53},
    }


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], tuple[str, list[dict[str, Any]]]]]:
    started: list[tuple[asyncio.AbstractEventLoop, web.AppRunner, threading.Thread]] = []

    def start(script: Script) -> tuple[str, list[dict[str, Any]]]:
        bodies: list[dict[str, Any]] = []

        async def handle(request: web.Request) -> web.Response:
            bodies.append(await request.json())
            return web.json_response(script(len(bodies)))

        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        started.append((loop, runner, thread))
        return f"http://127.0.0.1:{runner.addresses[0][1]}/v1", bodies

    yield start
    for loop, runner, thread in started:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def lookup_order(order_id: int) -> str:
    """Look an order up."""
    raise ValueError(f"order {order_id} is archived")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_upstream_that_always_calls_tools_stops_at_exactly_max_steps(
        kind: str, scripted: Callable[[Script], tuple[str, list[dict[str, Any]]]]) -> None:
    """``max_steps=3``: three requests, then ``MaxStepsExceededError`` with the transcript and the totals."""
    base_url, bodies = scripted(lambda n: _tool_calls_answer(n, [(f"lookup_order:{n}", "lookup_order", '{"order_id": 1}')]))
    twin = Twin(kind, api_key="sk-test-1234567890", base_url=base_url)
    with pytest.raises(MaxStepsExceededError) as caught:
        twin.run(lambda c: c.chat.completions.run_tools(
            model="kimi-k2.6", messages=[{"role": "user", "content": "hi"}], tools=[lookup_order], max_steps=3))
    exc = caught.value
    assert isinstance(exc, ToolLoopError) and isinstance(exc, KimiflowError)
    assert len(bodies) == 3 and exc.steps == 3 and "max_steps=3" in str(exc)
    assert exc.messages[-1]["role"] == "assistant" and exc.messages[-1]["tool_calls"][0]["id"] == "lookup_order:3"
    assert exc.usage.prompt_tokens == 100 + 200 + 300 and exc.usage.total_tokens == 600 + 21
    assert exc.cost_cny == pytest.approx(sum(usage_cost_cny("kimi-k2.6", c.usage) for c in exc.completions))
    assert exc.cost_cny > 0
    # the tools of the last step were not run: their results could never be sent
    assert sum(1 for m in exc.messages if m["role"] == "tool") == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_tool_errors_go_back_to_the_model_and_ids_and_reasoning_are_echoed(
        kind: str, scripted: Callable[[Script], tuple[str, list[dict[str, Any]]]]) -> None:
    """A raising tool, an unknown tool and malformed arguments each become the tool message text."""
    calls = [("call-A", "lookup_order", '{"order_id": 42}'), ("call-B", "no_such_tool", "{}"),
             ("call-C", "lookup_order", '{"order_id": "forty'), ("call-D", "lookup_order", '{"order_id": "x"}')]
    base_url, bodies = scripted(lambda n: _tool_calls_answer(n, calls) if n == 1 else _final_answer(n))
    twin = Twin(kind, api_key="sk-test-1234567890", base_url=base_url)
    run = twin.run(lambda c: c.chat.completions.run_tools(
        model="kimi-k2.6", messages=[{"role": "user", "content": "where is my order?"}], tools=[lookup_order]))
    assert run.content == "all done" and run.steps == 2 and len(bodies) == 2
    sent = bodies[1]["messages"]
    assistant = sent[1]
    assert assistant["reasoning_content"] == "step 1: I need tools \u2028 exactly"
    assert [c["id"] for c in assistant["tool_calls"]] == ["call-A", "call-B", "call-C", "call-D"]
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [c[2] for c in calls]
    results = sent[2:]
    assert [m["tool_call_id"] for m in results] == ["call-A", "call-B", "call-C", "call-D"]
    assert results[0]["content"] == "error: ValueError: order 42 is archived"
    assert results[1]["content"].startswith("error: unknown tool 'no_such_tool'")
    assert results[2]["content"].startswith("error: malformed arguments for 'lookup_order'")
    assert results[3]["content"].startswith("error: malformed arguments for 'lookup_order'")
    assert "order_id" in results[3]["content"]
    assert bodies[0]["tools"] == bodies[1]["tools"] == [function_tool(lookup_order).spec]
    assert run.usage.total_tokens == 107 + 53


def get_weather(city: str, days: int = 1, unit: str = "celsius") -> str:
    """Forecast for a city.

    Args:
        city: The city's name, e.g. Beijing.
        days: How many days ahead.
    """
    return city


def test_a_function_becomes_an_mfjs_tool_spec_from_its_signature_and_docstring() -> None:
    spec = function_tool(get_weather).spec
    assert spec["type"] == "function"
    function = spec["function"]
    assert function["name"] == "get_weather" and function["description"] == "Forecast for a city."
    parameters = function["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["city"]
    assert parameters["properties"]["city"] == {"type": "string", "description": "The city's name, e.g. Beijing."}
    assert parameters["properties"]["days"]["type"] == "integer"
    assert "$defs" not in parameters and "$ref" not in json.dumps(parameters)


def ab(x: int) -> int:
    return x


def untyped(x):  # type: ignore[no-untyped-def]
    return x


def star(*args: int) -> int:
    return 0


@pytest.mark.parametrize(("tools", "says"), [
    ([ab], "is not valid for Kimi"),
    ([untyped], "has no type hint"),
    ([star], "ordinary named parameter"),
    ([get_weather, get_weather], "used twice"),
    ([], "non-empty list"),
    (get_weather, "non-empty list"),
    ([{"type": "function"}], "must be {'type': 'function'"),
    ([{"type": "builtin_function", "function": {"name": "$code"}}], "only builtin_function"),
    ([42], "got int"),
])
def test_unusable_tools_are_refused_before_anything_is_sent(tools: Any, says: str) -> None:
    from kimiflow.tool_loop import ToolLoop

    with pytest.raises(InvalidArgumentError) as caught:
        ToolLoop("kimi-k2.6", [{"role": "user", "content": "hi"}], tools)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_max_steps_and_reserved_parameters_are_checked() -> None:
    from kimiflow.tool_loop import ToolLoop

    with pytest.raises(InvalidArgumentError, match="max_steps must be an integer >= 1"):
        ToolLoop("kimi-k2.6", [], [get_weather], max_steps=0)
    with pytest.raises(InvalidArgumentError, match="does not take 'stream'"):
        ToolLoop("kimi-k2.6", [], [get_weather], params={"stream": True})


def test_stream_true_reports_text_and_reasoning_as_they_arrive(twin: Twin) -> None:
    """With ``stream=True`` each step is streamed: the deltas add up to the answer, tool calls still run."""
    events: list[ToolEvent] = []
    messages = [{"role": "user", "content": "what does get_weather say?"}]
    run = twin.run(lambda c: c.chat.completions.run_tools(
        model="kimi-k2.6", messages=messages, tools=[get_weather], stream=True, on_event=events.append))
    assert run.steps == 2 and run.messages[2]["role"] == "tool"
    assert run.messages[2]["content"] == json.loads(run.messages[1]["tool_calls"][0]["function"]["arguments"])["city"]
    text = "".join(e.content or "" for e in events if e.kind == "text_delta" and e.step == 2)
    assert text and text == run.content
    reasoning = "".join(e.content or "" for e in events if e.kind == "reasoning_delta" and e.step == 1)
    assert reasoning and reasoning == run.messages[1]["reasoning_content"]
    assert run.usage.total_tokens == sum(c.usage.total_tokens for c in run.completions) > 0


def test_a_dict_tool_spec_passes_through_and_a_call_to_it_is_answered_with_an_error() -> None:
    """A dict spec is sent as given; with no Python function behind it the model is told so."""
    import msgspec

    from kimiflow import ChatCompletion
    from kimiflow.tool_loop import ToolLoop

    spec = {"type": "function", "function": {"name": "spec_only", "description": "d",
                                             "parameters": {"type": "object", "properties": {}}}}
    loop = ToolLoop("kimi-k2.6", [{"role": "user", "content": "hi"}], [spec, WEB_SEARCH_TOOL])
    body = next(loop.bodies())
    assert body["tools"] == [spec, WEB_SEARCH_TOOL]
    completion = msgspec.convert(_tool_calls_answer(1, [("c1", "spec_only", "{}")]), ChatCompletion)
    calls = loop.feed(completion)
    assert [c.call_sync() for c in calls] == ["error: tool 'spec_only' was declared as a spec only and has no Python function"]
