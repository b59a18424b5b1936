"""Every endpoint, through both clients, over loopback HTTP against the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kimiflow import ChatCompletion
from kimiflow.types import Balance, FileObject, ModelList, TokenCount
from tests.client.twins import Twin

MESSAGES = [{"role": "system", "content": "你是一位語言藝術大師"}, {"role": "user", "content": "你好，介绍一下 Kimi"}]


def test_create_returns_typed_completion_with_request_id(twin: Twin) -> None:
    resp = twin.run(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES,
                                                        temperature=0.3, max_tokens=64))
    assert isinstance(resp, ChatCompletion)
    assert resp.id and resp.model == "moonshot-v1-8k" and resp.created > 0
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    assert resp.request_id and resp.attempts == 1
    assert resp.to_dict()["id"] == resp.id


def test_same_request_gives_same_answer_for_both_clients(sim: Any) -> None:
    """Determinism of the simulator makes the twins comparable: same request, same answer."""
    answers = {kind: Twin(kind, api_key=sim.api_key, base_url=sim.base_url).run(
        lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=40))
        for kind in ("sync", "async")}
    assert answers["sync"].choices[0].message.content == answers["async"].choices[0].message.content


def test_ask_is_chat_kimi_in_one_call(twin: Twin) -> None:
    text = twin.run(lambda c: c.ask("你好", system="你是一位語言藝術大師", max_tokens=30))
    assert isinstance(text, str) and text


def test_extra_body_reaches_the_server(twin: Twin) -> None:
    """extra_body is merged into the JSON: an invalid temperature sent that way is rejected by the server."""
    from kimiflow import BadRequestError

    with pytest.raises(BadRequestError) as info:
        twin.run(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES,
                                                     extra_body={"temperature": 1.7}))
    assert "temperature" in info.value.message


def test_n_choices_and_stop(twin: Twin) -> None:
    resp = twin.run(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, n=2,
                                                        temperature=0.7, max_tokens=20))
    assert [ch.index for ch in resp.choices] == [0, 1]


def test_tool_calls_have_kimi_ids_and_index(twin: Twin) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "call get_weather for Beijing"}]
    resp = twin.run(lambda c: c.chat.completions.create(model="kimi-k2-0905-preview", messages=messages,
                                                        tools=tools))
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("get_weather")
    assert call.index == 0


def test_models_list(twin: Twin) -> None:
    models = twin.run(lambda c: c.models.list())
    assert isinstance(models, ModelList)
    assert "moonshot-v1-8k" in {m.id for m in models.data}


def test_balance(twin: Twin) -> None:
    balance = twin.run(lambda c: c.balance())
    assert isinstance(balance, Balance) and balance.code == 0
    assert balance.data.available_balance > 0


def test_tokens_count(twin: Twin) -> None:
    count = twin.run(lambda c: c.tokens.count(model="moonshot-v1-8k", messages=MESSAGES))
    assert isinstance(count, TokenCount) and count.total_tokens > 5


def test_files_lifecycle(twin: Twin, tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# 会议纪要\n\nKimi 支持长文本。The budget is 42 million.\n", encoding="utf-8")

    def lifecycle(c: Any) -> Any:
        uploaded = c.files.upload(doc, purpose="file-extract")
        return uploaded

    uploaded = twin.run(lifecycle)
    assert isinstance(uploaded, FileObject) and uploaded.filename == "notes.md" and uploaded.bytes > 0
    listed = twin.run(lambda c: c.files.list())
    assert uploaded.id in {f.id for f in listed.data}
    assert twin.run(lambda c: c.files.retrieve(uploaded.id)).id == uploaded.id
    content = twin.run(lambda c: c.files.content(uploaded.id))
    assert "budget is 42 million" in content
    deleted = twin.run(lambda c: c.files.delete(uploaded.id))
    assert deleted.deleted is True and deleted.id == uploaded.id


def test_with_options_copy_shares_the_pool_and_closing_it_leaves_the_original_working(twin: Twin) -> None:
    def body(c: Any) -> Any:
        copy = c.with_options(max_retries=0, timeout=30)
        assert copy._get_transport() is c._get_transport()
        if twin.kind == "sync":
            first = copy.ask("你好", max_tokens=5)
            copy.close()
            return first, c.ask("你好", max_tokens=5)

        async def both() -> tuple[str, str]:
            first = await copy.ask("你好", max_tokens=5)
            await copy.close()
            return first, await c.ask("你好", max_tokens=5)

        return both()

    first, second = twin.run(body)
    assert first and first == second


def test_web_search_builtin_round_trip(twin: Twin) -> None:
    """docs/kimi-api.md §2.4: declare $web_search, get a builtin tool call, echo its arguments back, get the answer."""
    from kimiflow import WEB_SEARCH_TOOL

    question = [{"role": "user", "content": "搜索一下今天上海的天气"}]

    def body(c: Any) -> Any:
        def finish(first: Any) -> Any:
            call = first.choices[0].message.tool_calls[0]
            follow_up = [*question,
                         {"role": "assistant", "content": "", "tool_calls": [call.to_dict()]},
                         {"role": "tool", "tool_call_id": call.id, "name": call.function.name,
                          "content": call.function.arguments}]
            return first, c.chat.completions.create(model="kimi-k2-0905-preview", messages=follow_up,
                                                    tools=[WEB_SEARCH_TOOL])

        first = c.chat.completions.create(model="kimi-k2-0905-preview", messages=question, tools=[WEB_SEARCH_TOOL])
        if twin.kind == "sync":
            return finish(first)

        async def run() -> Any:
            resolved = await first
            one, two = finish(resolved)
            return one, await two

        return run()

    first, answer = twin.run(body)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "$web_search" and call.type == "builtin_function"
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content


def test_partial_mode_prefix_is_not_repeated(twin: Twin) -> None:
    prefix = "从前有座山，"
    messages = [{"role": "user", "content": "讲个故事"}, {"role": "assistant", "content": prefix, "partial": True}]
    resp = twin.run(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=messages, max_tokens=30))
    content = resp.choices[0].message.content
    assert content and not content.startswith(prefix)
