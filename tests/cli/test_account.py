"""``kimiflow models|balance|tokens|files`` against the simulator: tables for people, JSON for scripts."""

from __future__ import annotations

import json
from pathlib import Path

from kimiflow import Kimi


def test_models_json_and_table(run, sim_env) -> None:
    data = json.loads(run("models", "--json").stdout)
    ids = [m["id"] for m in data]
    assert "moonshot-v1-8k" in ids and "kimi-k2.5" in ids
    table = run("models").stdout.splitlines()
    assert table[0].split("\t") == ["id", "context", "thinking", "input ¥/1M", "output ¥/1M"]
    row = next(line.split("\t") for line in table if line.startswith("moonshot-v1-8k\t"))
    assert row == ["moonshot-v1-8k", "8192", "", "2", "10"]
    assert len(table) == len(ids) + 1


def test_balance_json_and_table(run, sim_env) -> None:
    with Kimi(api_key=sim_env.api_key, base_url=sim_env.base_url) as client:
        available = client.balance().data.available_balance
    data = json.loads(run("balance", "--json").stdout)
    assert data["code"] == 0 and data["status"] is True
    assert abs(data["data"]["available_balance"] - available) < 1.0
    lines = run("balance").stdout.splitlines()
    assert lines[0] == "available\tvoucher\tcash"


def test_tokens_from_argument_and_stdin(run, sim_env) -> None:
    with Kimi(api_key=sim_env.api_key, base_url=sim_env.base_url) as client:
        expected = client.tokens.count(model="moonshot-v1-8k",
                                       messages=[{"role": "user", "content": "你好，世界"}]).total_tokens
    assert run("tokens", "你好，世界").stdout.strip() == str(expected)
    assert run("tokens", input="你好，世界").stdout.strip() == str(expected)
    data = json.loads(run("tokens", "你好，世界", "--json").stdout)
    assert data["data"]["total_tokens"] == expected
    longer = int(run("tokens", "你好，世界", "-s", "你是一位語言藝術大師").stdout)
    assert longer > expected
    empty = run("tokens", input="")
    assert empty.exit_code == 2 and "no text" in empty.output


def test_files_upload_list_content_rm(run, sim_env, tmp_path: Path) -> None:
    doc = tmp_path / "notes.txt"
    doc.write_text("kimiflow 文件测试：第42条。", encoding="utf-8")
    uploaded = run("files", "upload", str(doc))
    assert uploaded.exit_code == 0, uploaded.stderr
    file_id = uploaded.stdout.strip()
    assert file_id and "notes.txt" in uploaded.stderr
    listed = json.loads(run("files", "list", "--json").stdout)
    assert any(f["id"] == file_id and f["purpose"] == "file-extract" for f in listed)
    assert file_id in run("files", "list").stdout
    assert "第42条" in run("files", "content", file_id).stdout
    removed = run("files", "rm", file_id)
    assert removed.exit_code == 0 and f"Deleted {file_id}" in removed.stderr
    assert all(f["id"] != file_id for f in json.loads(run("files", "list", "--json").stdout))
    gone = run("files", "content", file_id)
    assert gone.exit_code == 1
    assert gone.stderr.startswith("Error: ") and len(gone.stderr.strip().splitlines()) == 1


def test_tables_are_drawn_with_rich_on_a_terminal(run, sim_env, monkeypatch) -> None:
    monkeypatch.setattr("kimiflow.cli.output.stdout_is_tty", lambda: True)
    out = run("models").stdout
    assert "Models" in out and "┃" in out  # rich's box drawing, not tab-separated text
    assert "moonshot-v1-8k" in out and "\t" not in out
