"""Request validation and auth answer like Kimi (docs/kimi-api.md §2.1, §5.2)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim.conftest import Api, user

MAX_8K = {"model": "moonshot-v1-8k"}


@pytest.mark.parametrize(
    ("body", "status", "error_type", "message"),
    [
        ({"model": "gpt-4o"}, 404, "resource_not_found_error", "Not found the model gpt-4o or Permission denied"),
        ({"temperature": 1.5}, 400, "invalid_request_error", "Invalid request: temperature 1.5 is out of range"),
        ({"temperature": -0.1}, 400, "invalid_request_error", "Invalid request: temperature -0.1 is out of range"),
        (
            {"model": "kimi-k2.5", "temperature": 0.3},
            400,
            "invalid_request_error",
            "invalid temperature: only 1 is allowed for this model",
        ),
        ({"n": 2, "temperature": 0.1}, 400, "invalid_request_error", "Invalid request: n=2 needs temperature >= 0.3"),
        ({"n": 2}, 400, "invalid_request_error", "Invalid request: n=2 needs temperature >= 0.3"),
        ({"n": 6, "temperature": 0.5}, 400, "invalid_request_error", "Invalid request: n must be between 1 and 5"),
        ({"max_tokens": 8190}, 400, "invalid_request_error", "Your request exceeded model token limit : 8192"),
        (
            {"max_tokens": 10, "max_completion_tokens": 9000},
            400,
            "invalid_request_error",
            "Your request exceeded model token limit : 8192",
        ),
        ({"messages": user("字" * 9000)}, 400, "invalid_request_error", "Input token length too long"),
        ({"model": None}, 400, "invalid_request_error", "Invalid request: model is required"),
        ({"messages": None}, 400, "invalid_request_error", "Invalid request: messages is required"),
        ({"messages": []}, 400, "invalid_request_error", "Invalid request: messages must be a non-empty array"),
        ({"messages": user("")}, 400, "invalid_request_error", "Invalid request: messages[0] with role 'user'"),
        (
            {"messages": [{"role": "robot", "content": "hi"}]},
            400,
            "invalid_request_error",
            "Invalid request: messages[0].role must be one of",
        ),
        (
            {"functions": [{"name": "f", "parameters": {}}]},
            400,
            "invalid_request_error",
            "Invalid request: functions and function_call are not supported",
        ),
        ({"tool_choice": "required"}, 400, "invalid_request_error", "Invalid request: tool_choice 'required'"),
        (
            {"model": "kimi-k2-thinking", "tool_choice": "required"},
            400,
            "invalid_request_error",
            "tool_choice 'required' is incompatible with thinking enabled",
        ),
        ({"stream": "yes"}, 400, "invalid_request_error", "Invalid request: stream must be a boolean"),
        ({"max_tokens": 0}, 400, "invalid_request_error", "Invalid request: max_tokens must be a positive integer"),
        ({"stop": ["a"] * 6}, 400, "invalid_request_error", "Invalid request: stop accepts at most 5 strings"),
        (
            {"tools": [{"type": "function", "function": {"name": "dup"}}, {"type": "function", "function": {"name": "dup"}}]},
            400,
            "invalid_request_error",
            "Invalid request: function name dup is duplicated",
        ),
        (
            {"messages": [{"role": "assistant", "content": "从前", "partial": True}, {"role": "user", "content": "hi"}]},
            400,
            "invalid_request_error",
            "Invalid request: messages[0] has partial=true: Partial Mode is only for the last message",
        ),
        (
            {"messages": [{"role": "user", "content": "写个故事", "partial": True}]},
            400,
            "invalid_request_error",
            "Invalid request: messages[0] has partial=true: Partial Mode is only for the last message, and it must",
        ),
        (
            {"messages": [{"role": "user", "content": "JSON please"}, {"role": "assistant", "content": "{",
                                                                       "partial": True}],
             "response_format": {"type": "json_object"}},
            400,
            "invalid_request_error",
            "Invalid request: Partial Mode cannot be used together with response_format json_object",
        ),
        ({"response_format": {"type": "yaml"}}, 400, "invalid_request_error", "Invalid request: response_format must be"),
    ],
)
async def test_invalid_chat_request(api: Api, body: dict[str, Any], status: int, error_type: str, message: str) -> None:
    payload = {"model": "moonshot-v1-8k", "messages": user("你好")}
    payload.update(body)
    payload = {k: v for k, v in payload.items() if v is not None}
    reply = await api.request("POST", "/chat/completions", json=payload)
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    assert reply.headers["Msh-Request-Id"]
    assert list(reply.json()) == ["error"]
    assert list(reply.error) == ["message", "type"]
    assert reply.error["type"] == error_type
    assert reply.error["message"].startswith(message), reply.error["message"]
    assert api.sim.stats.chat_completions == 0


async def test_fixed_temperature_model_accepts_its_value(api: Api) -> None:
    reply = await api.chat({"model": "kimi-k2.5", "temperature": 1})
    assert reply.status == 200


async def test_assistant_tool_call_turn_may_have_empty_content(api: Api) -> None:
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "f:0", "name": "f", "content": "ok"},
    ]
    assert (await api.chat({"messages": messages})).status == 200


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]"])
async def test_malformed_json_body(api: Api, raw: bytes) -> None:
    reply = await api.request("POST", "/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.error["type"] == "invalid_request_error"
    assert reply.error["message"].startswith("Invalid request: ")


async def test_missing_key_is_401_incorrect_api_key(api: Api) -> None:
    reply = await api.chat({}, key=None)
    assert reply.status == 401
    assert reply.error == {"message": "Incorrect API key provided", "type": "incorrect_api_key_error"}
    assert reply.headers["Msh-Request-Id"]


async def test_wrong_key_is_401_invalid_authentication(api: Api) -> None:
    reply = await api.chat({}, key="sk-not-a-sim-key")
    assert reply.status == 401
    assert reply.error == {"message": "Invalid Authentication", "type": "invalid_authentication_error"}
    assert b"sk-not-a-sim-key" not in reply.body


async def test_configured_keys_are_accepted(make_api: Any) -> None:
    api = await make_api(keys=("sk-sim-a", "sk-sim-b"))
    assert api.sim.api_key == "sk-sim-a"
    assert (await api.chat({}, key="sk-sim-b")).status == 200
    assert (await api.chat({}, key="sk-sim-kimiflow-local-0000000000000000")).status == 401


async def test_auth_applies_to_every_endpoint(api: Api) -> None:
    for method, path in [("GET", "/models"), ("GET", "/files"), ("GET", "/users/me/balance")]:
        reply = await api.request(method, path, key=None)
        assert reply.status == 401, path


async def test_unknown_path_and_method(api: Api) -> None:
    missing = await api.request("GET", "/nope")
    assert missing.status == 404
    assert missing.error["type"] == "resource_not_found_error"
    wrong = await api.request("GET", "/chat/completions")
    assert wrong.status == 405
    assert wrong.error["type"] == "invalid_request_error"


async def test_partial_mode_continues_after_the_prefix_without_repeating_it(api: Api) -> None:
    """docs/kimi-api.md §2.3: the last assistant message is a prefix; the answer does not repeat it; ``name`` alone works."""
    prefix = "从前有座山，"
    reply = await api.chat({"messages": [{"role": "user", "content": "讲个故事"},
                                         {"role": "assistant", "content": prefix, "partial": True}]})
    assert reply.status == 200
    assert not reply.json()["choices"][0]["message"]["content"].startswith(prefix)
    named = await api.chat({"messages": [{"role": "user", "content": "你是谁？"},
                                         {"role": "assistant", "content": "", "name": "Dr. Kelsier", "partial": True}]})
    assert named.status == 200 and named.json()["choices"][0]["message"]["content"]
