"""``kimiflow logs --export-answers FILE``: logged exchanges as a script that replays them offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai

from kimiflow import Kimi
from kimiflow.cli.home import logs_path
from kimiflow.cli.logstore import Exchange, LogStore
from kimiflow.sim.answers import AnswerScript
from tests.sim.test_cli import _read_banner, _start


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_writes_match_reply_model_system_and_reasoning(run, tmp_path: Path) -> None:
    store = LogStore(logs_path())
    cid = store.new_conversation("kimi-k2-thinking")
    store.record(Exchange(conversation_id=cid, model="kimi-k2-thinking", prompt="你好", answer="你好！",
                          system="你是客服", reasoning="打个招呼。"))
    store.record(Exchange(conversation_id=cid, model="kimi-k2-thinking", prompt="你好吗", answer="很好。"))
    store.record(Exchange(conversation_id=cid, model="kimi-k2-thinking", prompt="中断了", answer="半",
                          interrupted=True))
    store.record(Exchange(conversation_id=cid, model="kimi-k2-thinking", prompt="你好吗", answer="又一次。"))
    target = tmp_path / "answers.jsonl"
    result = run("logs", "--export-answers", str(target))
    assert result.exit_code == 0, result.output
    assert "Wrote 2 scripted answer(s)" in result.stderr
    assert "1 interrupted exchange(s) left out" in result.stderr
    assert "1 repeated prompt(s) kept their first answer" in result.stderr
    # Longer prompts first: the substring "你好" must not capture "你好吗" on replay.
    assert _lines(target) == [
        {"match": "你好吗", "model": "kimi-k2-thinking", "reply": "很好。"},
        {"match": "你好", "model": "kimi-k2-thinking", "match_system": "你是客服", "reply": "你好！",
         "reasoning": "打个招呼。"},
    ]
    assert len(AnswerScript.load(target)) == 2


def test_export_takes_the_whole_log_unless_n_or_q_narrow_it(run, tmp_path: Path) -> None:
    store = LogStore(logs_path())
    cid = store.new_conversation("moonshot-v1-8k")
    for i in range(5):
        store.record(Exchange(conversation_id=cid, model="moonshot-v1-8k", prompt=f"问题{i}", answer=f"回答{i}"))
    target = tmp_path / "all.jsonl"
    run("logs", "--export-answers", str(target))
    assert sorted(line["match"] for line in _lines(target)) == [f"问题{i}" for i in range(5)]
    run("logs", "-n", "2", "--export-answers", str(target))
    assert sorted(line["match"] for line in _lines(target)) == ["问题3", "问题4"]
    run("logs", "-q", "问题1", "--export-answers", str(target))
    assert [line["reply"] for line in _lines(target)] == ["回答1"]


def test_export_to_an_unwritable_path_is_one_error_line(run, tmp_path: Path) -> None:
    result = run("logs", "--export-answers", str(tmp_path / "missing-dir" / "a.jsonl"))
    assert result.exit_code == 1
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_recorded_chats_replay_to_the_same_answers(run, sim_env, tmp_path: Path) -> None:
    """Record (chat against a simulator) → export → serve with --answers and another seed → same answers."""
    prompts = ["你好", "你好吗？", "用一句话介绍杭州"]
    for prompt in prompts[:2]:
        assert run("chat", "--no-stream", prompt).exit_code == 0
    assert run("chat", "-s", "你是导游", guided := prompts[2]).exit_code == 0
    assert run("chat", "-m", "kimi-k2-thinking", "--no-stream", "想一想再回答").exit_code == 0
    recorded = {e.prompt: e for e in LogStore(logs_path()).recent(limit=10)}
    assert set(recorded) == {*prompts, "想一想再回答"} and recorded["想一想再回答"].reasoning
    target = tmp_path / "answers.jsonl"
    assert run("logs", "--export-answers", str(target)).exit_code == 0

    proc = _start("--port", "0", "--seed", "99", "--answers", str(target))
    try:
        base_url, key, _ = _read_banner(proc)
        kimi = Kimi(api_key=key, base_url=base_url, max_retries=0)
        sdk = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0)
        for prompt in prompts[:2]:
            assert kimi.ask(prompt) == recorded[prompt].answer
            streamed = sdk.chat.completions.create(
                model="moonshot-v1-8k", messages=[{"role": "user", "content": prompt}], stream=True,
            )
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == recorded[prompt].answer
        assert kimi.ask(guided, system="你是导游") == recorded[guided].answer
        # Without the recorded system prompt the line does not apply: seed 99 generates other text.
        assert kimi.ask(guided) != recorded[guided].answer
        thought = kimi.chat.completions.create(
            model="kimi-k2-thinking", messages=[{"role": "user", "content": "想一想再回答"}],
        ).choices[0].message
        assert thought.content == recorded["想一想再回答"].answer
        assert thought.reasoning_content == recorded["想一想再回答"].reasoning
        kimi.close()
        sdk.close()
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
