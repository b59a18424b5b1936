"""Streaming (SSE) chat completions exactly per docs/kimi-api.md §4."""

from __future__ import annotations

import json
from typing import Any

from tests.sim.conftest import Api, user


def _chunks(events: list[Any]) -> list[dict[str, Any]]:
    assert events[-1] == "[DONE]"
    assert "[DONE]" not in events[:-1]
    return events[:-1]


async def test_stream_sequence_role_tokens_final_done(api: Api) -> None:
    reply = await api.chat({"stream": True}, headers={"X-Kimiflow-Sim-Tokens": "25"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["Msh-Request-Id"]
    assert reply.body.endswith(b"data: [DONE]\n\n")
    chunks = _chunks(reply.events())
    first, *middle, last = chunks
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    assert len(middle) == 25  # one token per chunk
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "moonshot-v1-8k"
        assert "usage" not in chunk  # intermediate chunks omit usage, and so does the final one
    for chunk in middle:
        [choice] = chunk["choices"]
        assert set(choice["delta"]) == {"content"} and choice["delta"]["content"]
        assert choice["finish_reason"] is None
        assert "usage" not in choice
    [final] = last["choices"]
    assert final["delta"] == {}
    assert final["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == 25
    assert final["usage"]["total_tokens"] == final["usage"]["prompt_tokens"] + 25


async def test_stream_text_equals_non_stream_text(api: Api) -> None:
    body = {"messages": user("same answer please")}
    plain = (await api.chat(body)).json()["choices"][0]["message"]["content"]
    events = (await api.chat({**body, "stream": True})).events()
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in _chunks(events))
    assert streamed == plain


async def test_include_usage_adds_choices_empty_usage_chunk_before_done(api: Api) -> None:
    reply = await api.chat({"stream": True, "stream_options": {"include_usage": True}})
    chunks = _chunks(reply.events())
    trailer = chunks[-1]
    assert trailer["choices"] == []
    assert trailer["usage"] == chunks[-2]["choices"][0]["usage"]
    without = _chunks((await api.chat({"stream": True})).events())
    assert all(c["choices"] for c in without)


async def test_stream_length_finish_reason(api: Api) -> None:
    chunks = _chunks((await api.chat({"stream": True, "max_tokens": 3}, headers={"X-Kimiflow-Sim-Tokens": "9"})).events())
    assert len(chunks) == 1 + 3 + 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_n_streams_interleave_by_index_each_with_own_usage(api: Api) -> None:
    reply = await api.chat({"stream": True, "n": 2, "temperature": 0.5})
    chunks = _chunks(reply.events())
    assert [c["choices"][0]["index"] for c in chunks[:4]] == [0, 1, 0, 1]
    finals = {c["choices"][0]["index"]: c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]}
    assert set(finals) == {0, 1}
    prompt = {f["usage"]["prompt_tokens"] for f in finals.values()}
    assert len(prompt) == 1
    for index, final in finals.items():
        tokens = [c for c in chunks if c["choices"][0]["index"] == index and "content" in c["choices"][0]["delta"]]
        assert final["usage"]["completion_tokens"] == len(tokens) - 1  # minus the role chunk's ""


async def test_thinking_model_streams_reasoning_before_content(api: Api) -> None:
    chunks = _chunks((await api.chat({"model": "kimi-k2-thinking", "stream": True})).events())
    kinds = []
    for chunk in chunks[1:-1]:
        delta = chunk["choices"][0]["delta"]
        kinds.append("r" if "reasoning_content" in delta else "c")
    assert kinds[0] == "r" and kinds[-1] == "c"
    assert "".join(kinds).count("rc") == 1 and "cr" not in "".join(kinds)
    usage = chunks[-1]["choices"][0]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == kinds.count("r")


async def test_tool_call_deltas(api: Api) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    body = {"stream": True, "tools": tools, "messages": user("use get_weather and get_time")}
    chunks = _chunks((await api.chat(body)).events())
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks[1:-1]:
        delta = chunk["choices"][0]["delta"]
        assert set(delta) == {"tool_calls"}
        [fragment] = delta["tool_calls"]
        if "id" in fragment:
            assert fragment["type"] == "function"
            assert fragment["function"]["arguments"] == ""
            calls[fragment["index"]] = {"id": fragment["id"], "name": fragment["function"]["name"], "args": ""}
        else:
            assert set(fragment) == {"index", "function"}
            assert set(fragment["function"]) == {"arguments"}
            calls[fragment["index"]]["args"] += fragment["function"]["arguments"]
    assert calls[0]["id"] == "get_weather:0" and calls[1]["id"] == "get_time:1"
    assert set(json.loads(calls[0]["args"])) == {"city", "days"}
    assert json.loads(calls[1]["args"]) == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    plain = (await api.chat({**body, "stream": False})).json()["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["arguments"] for c in plain] == [calls[0]["args"], calls[1]["args"]]


async def test_big_forced_stream_has_exact_chunk_count(api: Api) -> None:
    reply = await api.chat({"stream": True}, headers={"X-Kimiflow-Sim-Tokens": "20000"})
    assert reply.body.count(b"\n\ndata: ") + 1 == 20000 + 3
    assert api.sim.stats.stream_chunks == 20000 + 2
