"""``kimiflow chat PROMPT`` against the simulator over loopback HTTP: streaming, options, stdin,
files, logging, continuation."""

from __future__ import annotations

import json
from pathlib import Path

from kimiflow import Kimi
from kimiflow.cli.home import logs_path
from kimiflow.cli.logstore import LogStore
from kimiflow.core.pricing import usage_cost_cny


def _logged() -> list:
    return list(reversed(LogStore(logs_path()).recent(limit=100)))


def test_streamed_answer_is_the_apis_answer(run, sim_env) -> None:
    # The simulator's answer is fixed by the request body, so the same call made directly must match.
    request = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 40}
    with Kimi(api_key=sim_env.api_key, base_url=sim_env.base_url) as client:
        with client.chat.completions.stream(**request) as s:
            streamed = s.get_final_completion().choices[0].message.content
        whole = client.chat.completions.create(**request).choices[0].message.content
    streams_before = sim_env.stats.streams
    result = run("chat", "你好", "--max-tokens", "40")
    assert result.exit_code == 0, result.stderr
    assert streamed and result.stdout == streamed + "\n"
    assert sim_env.stats.streams == streams_before + 1  # it really streamed
    no_stream = run("chat", "你好", "--max-tokens", "40", "--no-stream")
    assert sim_env.stats.streams == streams_before + 1
    assert whole and no_stream.stdout == whole + "\n"


def test_json_prints_the_raw_completion(run, sim_env) -> None:
    result = run("chat", "講個冷笑話吧", "--json", "-m", "kimi-k2-turbo-preview", "--max-tokens", "20")
    data = json.loads(result.stdout)
    assert data["object"] == "chat.completion"
    assert data["model"] == "kimi-k2-turbo-preview"
    assert data["choices"][0]["message"]["content"]
    assert data["usage"]["completion_tokens"] <= 20
    assert data["id"]


def test_options_reach_the_request(run, sim_env) -> None:
    capped = json.loads(run("chat", "写一篇长文章", "--json", "-o", "max_tokens=3").stdout)
    assert capped["usage"]["completion_tokens"] == 3
    assert capped["choices"][0]["finish_reason"] == "length"
    bad = run("chat", "hi", "-o", "no-equals-sign")
    assert bad.exit_code == 2
    assert "is not key=value" in bad.output
    # The system prompt is sent: it adds prompt tokens.
    plain = json.loads(run("chat", "hi", "--json", "--max-tokens", "5").stdout)
    with_system = json.loads(run("chat", "hi", "--json", "--max-tokens", "5", "-s", "你是一位語言藝術大師").stdout)
    assert with_system["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]


def test_usage_line_goes_to_stderr_with_the_right_cost(run, sim_env) -> None:
    result = run("chat", "你好", "--usage", "--max-tokens", "30")
    assert "Usage:" not in result.stdout
    (row,) = _logged()
    assert f"{row.prompt_tokens} prompt + {row.completion_tokens} completion = {row.total_tokens} tokens" \
        in result.stderr
    from kimiflow.types import Usage

    cost = usage_cost_cny("moonshot-v1-8k", Usage(prompt_tokens=row.prompt_tokens,
                                                   completion_tokens=row.completion_tokens))
    assert cost > 0
    assert f"¥{cost:.6f}" in result.stderr
    assert f"request {row.request_id}" in result.stderr


def test_piped_stdin_is_sent_with_the_prompt(run, sim_env) -> None:
    result = run("chat", "总结一下", "--max-tokens", "10", input="第一季度收入增长了百分之十。\n")
    assert result.exit_code == 0
    assert _logged()[-1].prompt == "第一季度收入增长了百分之十。\n\n总结一下"
    only_stdin = run("chat", "--max-tokens", "10", input="只有标准输入")
    assert only_stdin.exit_code == 0
    assert _logged()[-1].prompt == "只有标准输入"
    nothing = run("chat", input="")
    assert nothing.exit_code == 2
    assert "no prompt" in nothing.output


def test_file_is_extracted_into_a_system_message_and_the_upload_removed(run, sim_env, tmp_path: Path) -> None:
    doc = tmp_path / "report.txt"
    doc.write_text("合同编号 KF-2026-0042，违约金为合同金额的百分之五。", encoding="utf-8")
    result = run("chat", "违约金是多少？", "-f", str(doc), "-s", "你是律师", "--max-tokens", "20")
    assert result.exit_code == 0, result.stderr
    row = _logged()[-1]
    assert row.system is not None
    assert row.system.startswith("你是律师")
    assert "KF-2026-0042" in row.system
    assert sim_env.stats.files_uploaded >= 1
    listed = json.loads(run("files", "list", "--json").stdout)
    assert all(f["filename"] != "report.txt" for f in listed)
    missing = run("chat", "hi", "-f", str(tmp_path / "nope.pdf"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_every_exchange_is_logged_without_the_key(run, sim_env) -> None:
    run("chat", "第一个问题", "--max-tokens", "15", "-t", "0.2")
    (row,) = _logged()
    assert row.prompt == "第一个问题"
    assert row.answer
    assert row.model == "moonshot-v1-8k"
    assert row.options == {"temperature": 0.2, "max_tokens": 15}
    assert row.total_tokens == row.prompt_tokens + row.completion_tokens > 0
    assert row.cost_cny and row.cost_cny > 0
    assert row.latency_ms and row.latency_ms > 0
    assert row.request_id
    assert sim_env.api_key.encode() not in logs_path().read_bytes()


def test_no_log_flag_and_env_switch(run, sim_env, monkeypatch) -> None:
    run("chat", "hi", "--no-log", "--max-tokens", "5")
    monkeypatch.setenv("KIMIFLOW_NO_LOG", "1")
    run("chat", "hi", "--max-tokens", "5")
    monkeypatch.delenv("KIMIFLOW_NO_LOG")
    assert _logged() == []


def test_continue_sends_the_history_and_stays_in_the_conversation(run, sim_env) -> None:
    run("chat", "我叫小明", "--max-tokens", "10", "-m", "kimi-k2-turbo-preview")
    fresh = json.loads(run("chat", "我叫什么？", "--max-tokens", "10", "--json", "--no-log").stdout)
    result = run("chat", "我叫什么？", "--max-tokens", "10", "-c", "--usage")
    assert result.exit_code == 0, result.stderr
    first, second = _logged()
    assert second.conversation_id == first.conversation_id
    assert second.model == "kimi-k2-turbo-preview"  # taken from the conversation
    # History was sent: the continued request's prompt is bigger than the same question alone.
    assert second.prompt_tokens > fresh["usage"]["prompt_tokens"]
    by_id = run("chat", "再说一遍", "--max-tokens", "5", "--cid", first.conversation_id)
    assert by_id.exit_code == 0
    assert _logged()[-1].conversation_id == first.conversation_id


def test_continue_with_an_empty_log_is_a_clear_usage_error(run, sim_env) -> None:
    result = run("chat", "hi", "-c")
    assert result.exit_code == 2
    assert "no logged conversation yet to continue" in result.output


def test_thinking_model_reasoning_goes_to_stderr_answer_to_stdout(run, sim_env) -> None:
    result = run("chat", "1+1=?", "-m", "kimi-k2-thinking", "--max-tokens", "60")
    assert result.exit_code == 0, result.stderr
    row = _logged()[-1]
    assert row.reasoning and row.answer
    assert result.stdout == row.answer + "\n"
    assert row.reasoning in result.stderr


_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
           "required": ["city", "rank"], "additionalProperties": False}


def test_schema_answers_one_validated_json_object(run, sim_env, tmp_path: Path) -> None:
    import jsonschema

    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(_SCHEMA), encoding="utf-8")
    requests_before = sim_env.stats.chat_completions
    result = run("chat", "北京 上海 rank them", "--schema", str(schema_file), "--usage", "-m", "kimi-k2.6")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    jsonschema.validate(answer, _SCHEMA)
    assert result.stdout.count("\n") == 1
    assert "1 attempt(s)" in result.stderr and "tokens" in result.stderr
    assert sim_env.stats.chat_completions == requests_before + 1
    whole = json.loads(run("chat", "北京 rank", "--schema", str(schema_file), "--json").stdout)
    assert whole["object"] == "chat.completion" and json.loads(whole["choices"][0]["message"]["content"])


def test_schema_file_problems_are_one_line_errors(run, sim_env, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]", encoding="utf-8")
    unsupported = tmp_path / "open.json"
    unsupported.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "date"}}}), encoding="utf-8")
    bad = run("chat", "hi", "--schema", str(broken))
    assert bad.exit_code == 2 and "is not valid JSON" in bad.stderr
    assert "must hold a JSON Schema object" in run("chat", "hi", "--schema", str(listed)).stderr
    no_prompt = run("chat", "--schema", str(listed), input="")
    assert no_prompt.exit_code == 2
    requests_before = sim_env.stats.chat_completions
    rejected = run("chat", "hi", "--schema", str(unsupported))
    assert "type 'date' is not supported" in rejected.stderr
    assert rejected.exit_code == 1 and rejected.stderr.startswith("Error: ") and rejected.stderr.count("\n") == 1
    assert sim_env.stats.chat_completions == requests_before  # refused before anything was sent
