"""``kimiflow logs``: newest N, search, JSON, empty log."""

from __future__ import annotations

import json

from kimiflow.cli.home import logs_path
from kimiflow.cli.logstore import Exchange, LogStore


def _seed(n: int) -> None:
    store = LogStore(logs_path())
    cid = store.new_conversation("moonshot-v1-8k")
    for i in range(n):
        store.record(Exchange(conversation_id=cid, model="moonshot-v1-8k", prompt=f"问题{i}",
                              answer=f"回答{i}",
                              prompt_tokens=10, completion_tokens=5, total_tokens=15, cost_cny=0.00007,
                              latency_ms=321.0, request_id=f"req-{i}"))


def test_empty_log_says_so(run) -> None:
    result = run("logs")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No logged exchanges yet." in result.stderr


def test_newest_n_in_chronological_order(run) -> None:
    _seed(5)
    out = run("logs", "-n", "2").stdout
    assert "问题2" not in out
    assert out.index("> 问题3") < out.index("> 问题4")
    assert "10 prompt + 5 completion = 15 tokens" in out
    assert "¥0.000070" in out and "321 ms" in out and "request req-4" in out


def test_json_and_query(run) -> None:
    _seed(12)
    data = json.loads(run("logs", "-n", "50", "--json", "-q", "问题1").stdout)
    assert [row["prompt"] for row in data] == ["问题1", "问题10", "问题11"]
    assert data[0]["answer"] == "回答1"
    assert data[0]["usage"]["total_tokens"] == 15
    assert data[0]["request_id"] == "req-1"
    assert "No logged exchanges matching 'nothing'" in run("logs", "-q", "nothing").stderr


def test_path_and_bad_count(run, isolated_home) -> None:
    assert run("logs", "--path").stdout.strip() == str(isolated_home / "logs.db")
    bad = run("logs", "-n", "0")
    assert bad.exit_code == 2
