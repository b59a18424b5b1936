"""Scripted answers (``SimConfig(answers=...)``): matching, replies, usage, streaming, errors, faults, bad scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kimiflow.core.tokens import estimate_text_tokens
from kimiflow.sim import SimConfig
from kimiflow.sim.answers import AnswerScript, AnswerScriptError
from tests.sim.conftest import user

SCRIPT: list[dict[str, Any]] = [
    {"match": "退货政策", "reply": "七天无理由退货。"},
    {"regex": r"^订单\s*#?\d{6}$", "reply": "订单已发货。"},
    {"match": "天气", "model": "kimi-k2-thinking", "reasoning": "用户问天气，查工具。",
     "tool_calls": [{"name": "get_weather", "arguments": {"city": "北京"}}]},
    {"match": "价格", "match_system": "客服", "reply": "客服价格：99 元。"},
    {"request": {"temperature": 0.9, "messages": [{"role": "user"}]}, "reply": "热情的回答。"},
    {"match": "坏请求", "error": {"status": 400, "type": "invalid_request_error", "message": "scripted no"}},
    {"match": "限流", "fault": "429"},
    {"match": "断流", "reply": "这是一段会被中途切断的很长很长的回答。", "fault": "cut;after=3;clean=1"},
    {"match": "Long English", "reply": "The quick brown fox jumps over the lazy dog near the quiet river bank."},
]
SCRIPTED = AnswerScript.from_records(SCRIPT, "support.jsonl")


def content_of(reply: Any) -> str:
    return str(reply.json()["choices"][0]["message"]["content"])


def streamed_text(reply: Any) -> tuple[str, list[dict[str, Any]]]:
    chunks = [e for e in reply.events() if isinstance(e, dict) and e.get("choices")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    return text, chunks


async def test_simplest_line_replies_when_last_user_message_contains_match(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = await api.chat({"messages": user("请问你们的退货政策是什么？")})
    assert reply.status == 200
    assert content_of(reply) == "七天无理由退货。"
    assert reply.json()["choices"][0]["finish_reason"] == "stop"


async def test_only_the_last_user_message_is_matched(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    messages = [*user("退货政策？"), {"role": "assistant", "content": "七天。"}, *user("谢谢")]
    assert content_of(await api.chat({"messages": messages})) != "七天无理由退货。"


async def test_unmatched_requests_get_the_generated_answer(make_api) -> None:
    plain = await make_api(seed=3)
    scripted = await make_api(seed=3, answers=SCRIPTED)
    body = {"messages": user("介绍一下杭州")}
    assert content_of(await scripted.chat(body)) == content_of(await plain.chat(body))


async def test_usage_counts_the_reply_with_the_token_estimator(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = await api.chat({"messages": user("退货政策")})
    usage = reply.json()["usage"]
    assert usage["completion_tokens"] == estimate_text_tokens("七天无理由退货。")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    stats = (await api.request("GET", "/../_sim/stats")).json()
    assert stats["completion_tokens"] == usage["completion_tokens"]


async def test_stream_sends_the_reply_in_about_one_chunk_per_token(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = await api.chat({"messages": user("Long English please"), "stream": True})
    text, chunks = streamed_text(reply)
    expected = "The quick brown fox jumps over the lazy dog near the quiet river bank."
    assert text == expected
    pieces = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(pieces) == estimate_text_tokens(expected) > 10
    final = chunks[-1]["choices"][0]
    assert final["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] == len(pieces)
    assert reply.events()[-1] == "[DONE]"


async def test_regex_is_searched_in_the_last_user_message(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    assert content_of(await api.chat({"messages": user("订单 #123456")})) == "订单已发货。"
    assert content_of(await api.chat({"messages": user("订单 #1234567")})) != "订单已发货。"


async def test_model_and_system_conditions_must_all_hold(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    with_system = [{"role": "system", "content": "你是客服助手"}, *user("价格多少？")]
    assert content_of(await api.chat({"messages": with_system})) == "客服价格：99 元。"
    assert content_of(await api.chat({"messages": user("价格多少？")})) != "客服价格：99 元。"
    # The weather line names kimi-k2-thinking: another model gets generated text, no tool call.
    other = (await api.chat({"messages": user("天气如何")})).json()["choices"][0]
    assert other["finish_reason"] == "stop" and "tool_calls" not in other["message"]


async def test_request_object_matches_as_a_subset_of_the_body(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    assert content_of(await api.chat({"messages": user("随便"), "temperature": 0.9})) == "热情的回答。"
    assert content_of(await api.chat({"messages": user("随便"), "temperature": 0.3})) != "热情的回答。"
    tool_turn = {"request": {"messages": [{"role": "user"}, {"role": "tool"}]}, "reply": "工具之后。"}
    api = await make_api(answers=AnswerScript.from_records([tool_turn]))
    call = {"id": "f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    after_tool = [*user("a"), {"role": "assistant", "content": "", "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": "f:0", "content": "42"}]
    assert content_of(await api.chat({"messages": after_tool})) == "工具之后。"
    # In order: a tool result before the first user message does not count.
    assert content_of(await api.chat({"messages": user("a")})) != "工具之后。"


async def test_tool_calls_and_reasoning_on_a_thinking_model(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    body = {"model": "kimi-k2-thinking", "messages": user("北京天气"), "tools": tools}
    choice = (await api.chat(body)).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == "用户问天气，查工具。"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "get_weather:0" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "北京"}

    streamed = await api.chat({**body, "stream": True})
    chunks = [e for e in streamed.events() if isinstance(e, dict) and e.get("choices")]
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    arguments = "".join(
        tc["function"].get("arguments") or ""
        for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []
    )
    assert reasoning == "用户问天气，查工具。"
    assert json.loads(arguments) == {"city": "北京"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_max_tokens_cuts_a_scripted_reply_with_length(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = (await api.chat({"messages": user("退货政策"), "max_tokens": 3})).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["choices"][0]["message"]["content"] == "七天无"
    assert reply["usage"]["completion_tokens"] == 3


async def test_scripted_error_answers_with_moonshot_error_body(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = await api.chat({"messages": user("这是坏请求")})
    assert reply.status == 400
    assert reply.error == {"message": "scripted no", "type": "invalid_request_error"}


async def test_scripted_status_fault(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = await api.chat({"messages": user("限流测试")})
    assert reply.status == 429 and reply.error["type"] == "rate_limit_reached_error"


async def test_scripted_stream_fault_cuts_the_reply(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = await api.chat({"messages": user("断流"), "stream": True})
    events = reply.events()
    assert "[DONE]" not in events
    assert len(events) == 3


async def test_first_matching_line_wins(make_api) -> None:
    api = await make_api(answers=AnswerScript.from_records([{"match": "", "reply": "第一"}, {"match": "退货", "reply": "第二"}]))
    assert content_of(await api.chat({"messages": user("退货")})) == "第一"


async def test_same_script_same_answer_n_choices(make_api) -> None:
    api = await make_api(answers=SCRIPTED)
    reply = (await api.chat({"messages": user("退货政策"), "n": 2, "temperature": 0.5})).json()
    assert [c["message"]["content"] for c in reply["choices"]] == ["七天无理由退货。"] * 2
    assert reply["usage"]["completion_tokens"] == 2 * estimate_text_tokens("七天无理由退货。")


def test_script_loads_from_a_jsonl_file_with_blank_and_comment_lines(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"comment": "pinned"}\n{"match": "退货政策", "reply": "七天无理由退货。"}\n\n'
                    '{"match": "a", "reply": "b", "comment": "kept"}\n', encoding="utf-8")
    script = AnswerScript.load(path)
    assert len(script) == 2 and [a.line for a in script.answers] == [2, 4]
    assert SimConfig(answers=script).answers is script


def test_config_refuses_a_path_with_the_way_to_load_it() -> None:
    with pytest.raises(ValueError, match=r"answers must be a loaded script, not a str: use answers=AnswerScript.load"):
        SimConfig(answers="answers.jsonl")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not valid JSON"),
        ("[1]", "line 2: must be a JSON object"),
        ('{"match": "x", "reply": "y", "replay": 1}', "line 2: unknown key 'replay'"),
        ('{"reply": "y"}', "line 2: give at least one condition"),
        ('{"match": "x"}', 'line 2: give what to answer: "reply"'),
        ('{"match": 3, "reply": "y"}', 'line 2: "match" must be a string'),
        ('{"regex": "(", "reply": "y"}', 'line 2: "regex" \'(\' is not a valid regular expression'),
        ('{"match": "x", "error": {"status": 200, "type": "t", "message": "m"}}', "from 400 to 599"),
        ('{"match": "x", "error": {"status": 400, "type": "t", "message": "m"}, "reply": "y"}', "answers alone"),
        ('{"match": "x", "fault": "explode"}', "line 2: unknown fault 'explode'"),
        ('{"match": "x", "fault": "cut;times=2"}', 'drop "times"'),
        ('{"match": "x", "tool_calls": [{"name": "bad name"}]}', "tool_calls[0] needs a function name"),
        ('{"match": "x", "tool_calls": [{"name": "f", "arguments": "[1]"}]}', "JSON text of an object"),
        ('{"match": "x", "request": [1], "reply": "y"}', '"request" must be an object'),
    ],
)
def test_bad_script_is_one_line_naming_file_line_and_fix(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"match": "ok", "reply": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(AnswerScriptError) as info:
        AnswerScript.load(str(path))
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        AnswerScript.load(tmp_path / "nope.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"match": "é", "reply": "x"}'.encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        AnswerScript.load(latin)


def test_bad_fault_parameter_names_the_fault_key(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"match": "x", "fault": "cut;after=-1"}\n', encoding="utf-8")
    with pytest.raises(AnswerScriptError, match=r'line 1: fault parameter .* in "fault" needs a non-negative'):
        AnswerScript.load(path)
