"""Scripted answers in turn: ``replies`` (one per matching request, then the last again), ``times``
(a bounded line falls through to the next), ``POST /_sim/answers/reset``, and bad ``replies``/``times``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import kimiflow
from kimiflow import Kimi, RetryPolicy
from kimiflow.sim import SimConfig, Simulator, run_in_thread
from kimiflow.sim.answers import AnswerScript, AnswerScriptError
from tests.sim.conftest import user

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCRIPT: list[dict[str, Any]] = [
    {"match": "退货政策", "reply": "七天无理由退货。"},
    {"match": "天气", "replies": [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "北京"}}]},
                                  "北京今天晴，25°C。"]},
    {"match": "库存", "error": {"status": 500, "type": "server_error", "message": "scripted outage"}, "times": 2},
    {"match": "库存", "reply": "还有 3 件。"},
    {"match": "计数", "replies": ["一", "二", {"reply": "三", "comment": "then 三 forever"}]},
    {"match": "只答两次", "reply": "有限的回答。", "times": 2},
]


def content_of(reply: Any) -> str:
    return str(reply.json()["choices"][0]["message"]["content"])


async def test_replies_are_answered_in_turn_then_the_last_repeats(make_api) -> None:
    api = await make_api(answers=AnswerScript.from_records(SCRIPT))
    texts = [content_of(await api.chat({"messages": user("计数吧")})) for _ in range(5)]
    assert texts == ["一", "二", "三", "三", "三"]
    # Another line's turns are its own; the simplest line keeps answering the same text.
    assert [content_of(await api.chat({"messages": user("退货政策？")})) for _ in range(2)] == ["七天无理由退货。"] * 2


async def test_times_bounds_a_line_and_the_next_matching_line_is_the_fallback(make_api) -> None:
    api = await make_api(seed=4, answers=AnswerScript.from_records(SCRIPT))
    plain = await make_api(seed=4)
    first, second, third = [await api.chat({"messages": user("库存多少")}) for _ in range(3)]
    assert (first.status, second.status) == (500, 500)
    assert first.error == {"message": "scripted outage", "type": "server_error"}
    assert third.status == 200 and content_of(third) == "还有 3 件。"
    # With no line after it, a spent line leaves the request to generated text.
    answers = [content_of(await api.chat({"messages": user("只答两次")})) for _ in range(3)]
    assert answers[:2] == ["有限的回答。"] * 2
    assert answers[2] == content_of(await plain.chat({"messages": user("只答两次")})) != "有限的回答。"


async def test_turns_belong_to_one_simulator_and_restart_on_reset(make_api) -> None:
    script = AnswerScript.from_records(SCRIPT)
    one = await make_api(answers=script)
    two = await make_api(answers=script)
    assert content_of(await one.chat({"messages": user("计数")})) == "一"
    assert content_of(await one.chat({"messages": user("计数")})) == "二"
    assert content_of(await two.chat({"messages": user("计数")})) == "一"  # same script, its own turns
    assert (await one.chat({"messages": user("库存")})).status == 500
    wrong = await one.request("GET", "/../_sim/answers/reset")
    assert wrong.status == 405
    assert wrong.error["message"] == "Invalid request: GET is not allowed on /_sim/answers/reset"
    reset = await one.request("POST", "/../_sim/answers/reset")
    assert reset.status == 200 and reset.json() == {"reset": True, "lines_restarted": 2}
    assert content_of(await one.chat({"messages": user("计数")})) == "一"
    assert [(await one.chat({"messages": user("库存")})).status for _ in range(3)] == [500, 500, 200]
    assert one.sim.state.reset_answers() == 3  # 计数, the bounded 库存 line and its fallback
    assert (await one.chat({"messages": user("库存")})).status == 500


async def test_a_tool_call_turn_then_a_final_answer_streamed(make_api) -> None:
    api = await make_api(answers=AnswerScript.from_records(SCRIPT))
    body = {"messages": user("北京天气？"), "tools": [WEATHER], "stream": True}
    chunks = [e for e in (await api.chat(body)).events() if isinstance(e, dict) and e.get("choices")]
    arguments = "".join(tc["function"].get("arguments") or ""
                        for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or [])
    assert json.loads(arguments) == {"city": "北京"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    chunks = [e for e in (await api.chat(body)).events() if isinstance(e, dict) and e.get("choices")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "北京今天晴，25°C。"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.fixture(scope="module")
def scripted() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(seed=8, answers=AnswerScript.from_records(SCRIPT))) as sim:
        yield sim


def _openai(sim: Simulator, retries: int) -> Any:
    return openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=retries)


def _kimi(sim: Simulator, retries: int) -> Any:
    return Kimi(api_key=sim.api_key, base_url=sim.base_url,
                retry_policy=RetryPolicy(max_retries=retries, initial_delay=0.01))


CLIENTS = pytest.mark.parametrize("make_client", [_openai, _kimi], ids=["openai-sdk", "kimiflow"])


def _reset(sim: Simulator) -> None:
    assert httpx.post(f"http://127.0.0.1:{sim.port}/_sim/answers/reset").status_code == 200


@CLIENTS
def test_first_a_tool_call_then_a_final_answer_through_both_clients(
    scripted: Simulator, make_client: Callable[[Simulator, int], Any]
) -> None:
    _reset(scripted)
    with make_client(scripted, 0) as client:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "北京天气怎么样？"}]
        first = client.chat.completions.create(model="moonshot-v1-8k", messages=messages, tools=[WEATHER])
        assert first.choices[0].finish_reason == "tool_calls"
        [call] = first.choices[0].message.tool_calls
        assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
            "get_weather:0", "get_weather", {"city": "北京"})
        messages += [
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 25}'},
        ]
        final = client.chat.completions.create(model="moonshot-v1-8k", messages=messages, tools=[WEATHER])
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content == "北京今天晴，25°C。"
        assert not final.choices[0].message.tool_calls


@CLIENTS
def test_fail_twice_then_succeed_is_retried_through_both_clients(
    scripted: Simulator, make_client: Callable[[Simulator, int], Any]
) -> None:
    _reset(scripted)
    before = scripted.stats.by_status[500]
    with make_client(scripted, 2) as client:
        answer = client.chat.completions.create(model="moonshot-v1-8k",
                                                messages=[{"role": "user", "content": "库存还有吗"}])
        assert answer.choices[0].message.content == "还有 3 件。"
    assert scripted.stats.by_status[500] - before == 2
    _reset(scripted)
    with make_client(scripted, 1) as client, pytest.raises((openai.InternalServerError,
                                                            kimiflow.InternalServerError)) as info:
        client.chat.completions.create(model="moonshot-v1-8k", messages=[{"role": "user", "content": "库存"}])
    assert "scripted outage" in str(info.value)


def test_sim_command_loads_replies_and_times_and_refuses_a_bad_bound(tmp_path: Path) -> None:
    from tests.sim.test_cli import _read_banner, _start

    good = tmp_path / "answers.jsonl"
    good.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in SCRIPT), encoding="utf-8")
    proc = _start("--port", "0", "--answers", str(good))
    try:
        base_url, key, banner = _read_banner(proc)
        assert any(f"Scripted answers: {len(SCRIPT)} from" in line for line in banner), banner
        with Kimi(api_key=key, base_url=base_url, max_retries=0) as client:
            assert [client.ask("计数") for _ in range(4)] == ["一", "二", "三", "三"]
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"match": "x", "replies": ["a", "b", "c"], "times": 2}\n', encoding="utf-8")
    proc = _start("--port", "0", "--answers", str(bad))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f'{bad} line 1: "times" is 2 but the line has 3 replies' in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"match": "x", "replies": ["a"], "reply": "b"}', 'give either "replies" or "reply" on a line, not both'),
        ('{"match": "x", "replies": []}', '"replies" must be a non-empty list'),
        ('{"match": "x", "replies": "a"}', '"replies" must be a non-empty list'),
        ('{"match": "x", "replies": ["a", 3]}', "replies[1] must be a reply text or an object"),
        ('{"match": "x", "replies": [{"match": "y", "reply": "a"}]}',
         "replies[0] has unknown key 'match' (conditions and times belong to the line"),
        ('{"match": "x", "replies": [{"replay": "a"}]}', "replies[0] has unknown key 'replay'; a reply takes"),
        ('{"match": "x", "replies": [{"reasoning": "r"}]}', 'replies[0]: give what to answer'),
        ('{"match": "x", "replies": ["a", {"error": {"status": 500, "type": "t", "message": "m"}, "reply": "b"}]}',
         'replies[1]: "error" answers alone; move reply, reasoning, tool_calls or fault to another reply'),
        ('{"match": "x", "replies": [{"tool_calls": [{"name": "bad name"}]}]}',
         "replies[0]: tool_calls[0] needs a function name"),
        ('{"match": "x", "replies": [{"fault": "boom"}]}', "replies[0]: unknown fault 'boom'"),
        ('{"match": "x", "reply": "a", "times": 0}', '"times" must be a whole number of requests, 1 or more, got 0'),
        ('{"match": "x", "reply": "a", "times": true}', '"times" must be a whole number'),
        ('{"match": "x", "reply": "a", "times": 1.5}', '"times" must be a whole number'),
        ('{"match": "x", "replies": ["a", "b", "c"], "times": 2}',
         '"times" is 2 but the line has 3 replies, so the last 1 would never be sent; raise times to 3'),
        ('{"match": "x", "fault": "500;times=2"}', 'bound the line with "times": N instead'),
        ('{"match": "x"}', 'give what to answer: "reply", "tool_calls", "error" or "fault", or "replies" in turn'),
    ],
)
def test_bad_replies_or_times_is_one_line_naming_file_line_and_fix(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"match": "ok", "reply": "ok"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(AnswerScriptError) as info:
        AnswerScript.load(path)
    text = str(info.value)
    assert text.startswith(f"{path} line 3: ") and message in text and "\n" not in text, text


def test_replies_of_every_kind_parse_into_turns() -> None:
    [answer] = AnswerScript.from_records([{"match": "x", "times": 4, "replies": [
        "text", {"reply": "r", "reasoning": "why"}, {"tool_calls": [{"name": "f", "arguments": "{}"}]},
        {"error": {"status": 429, "type": "rate_limit_reached_error", "message": "slow down"}},
    ]}]).answers
    assert answer.times == 4 and len(answer.replies) == 4
    assert [answer.turn(i).reply for i in (0, 1)] == ["text", "r"] and answer.turn(1).reasoning == "why"
    assert answer.turn(2).tool_calls[0].name == "f"
    assert answer.turn(3).error is not None and answer.turn(3).error.status == 429
    assert answer.turn(9) is answer.turn(3)
