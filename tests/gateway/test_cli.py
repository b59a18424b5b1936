"""``kimiflow gateway keys|usage`` on the database directly, through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from kimiflow.cli.main import cli
from kimiflow.gateway.store import LedgerRow, SQLiteStore


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_keys_lifecycle(tmp_path: Path) -> None:
    db = str(tmp_path / "g.sqlite")
    code, out, _ = _run("gateway", "keys", "create", "crm", "--rpm", "60", "--tpm", "100000", "--concurrency", "4",
                        "--budget-cny", "5", "--budget-period", "day", "--models", "moonshot-v1-8k,kimi-k2.5",
                        "--max-tokens", "2048", "--json", "--db", db)
    assert code == 0
    created = json.loads(out)
    assert created["key"].startswith("kfg-") and created["name"] == "crm"
    assert created["limits"] == {"rpm": 60, "tpm": 100000, "concurrency": 4, "budget_cny": 5.0, "budget_period": "day",
                                 "models": ["moonshot-v1-8k", "kimi-k2.5"], "max_tokens": 2048}
    code, out, err = _run("gateway", "keys", "create", "tickets", "--db", db)
    assert code == 0 and out.strip().startswith("kfg-") and "not shown again" in err
    code, out, _ = _run("gateway", "keys", "list", "--db", db)
    assert "crm" in out and "tickets" in out and created["key"] not in out and created["key"][-4:] in out
    code, out, _ = _run("gateway", "keys", "update", "crm", "--rpm", "0", "--no-budget", "--json", "--db", db)
    shown = json.loads(out)
    assert shown["limits"]["rpm"] is None and shown["limits"]["budget_cny"] is None and shown["limits"]["tpm"] == 100000
    code, out, _ = _run("gateway", "keys", "revoke", "crm", "--db", db)
    assert code == 0
    code, out, _ = _run("gateway", "keys", "show", "crm", "--json", "--db", db)
    assert json.loads(out)["revoked"] is not None


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    db = str(tmp_path / "g.sqlite")
    _run("gateway", "keys", "create", "crm", "--db", db)
    result = CliRunner().invoke(cli, ["gateway", "keys", "create", "crm", "--db", db])
    assert result.exit_code != 0 and "already exists" in result.stderr
    result = CliRunner().invoke(cli, ["gateway", "keys", "show", "nope", "--db", db])
    assert result.exit_code != 0 and "no key named 'nope'" in result.stderr
    result = CliRunner().invoke(cli, ["gateway", "usage", "--since", "last week", "--db", db])
    assert result.exit_code != 0 and "YYYY-MM-DD" in result.stderr
    result = CliRunner().invoke(cli, ["gateway", "keys", "create", "bad name", "--db", db])
    assert result.exit_code != 0 and "letters, digits" in result.stderr
    result = CliRunner().invoke(cli, ["gateway", "keys", "list", "--db", "mysql://127.0.0.1/y"])
    assert result.exit_code != 0 and "mysql://... is not supported" in result.stderr
    result = CliRunner().invoke(cli, ["gateway", "keys", "list", "--db", "postgresql://nobody@127.0.0.1:1/y"])
    assert result.exit_code != 0 and "cannot connect to the gateway database" in result.stderr


def test_usage_from_the_rollups(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    _, out, _ = _run("gateway", "keys", "create", "crm", "--json", "--db", str(db))
    key_id = json.loads(out)["id"]
    store = SQLiteStore(db)
    store.write_ledger([
        LedgerRow("gw-1", 1_796_000_000.0, key_id, "moonshot-v1-8k", 200, 10, 0, 20, 0.25),
        LedgerRow("gw-2", 1_796_100_000.0, key_id, "kimi-k2.5", 200, 10, 0, 20, 0.75),
    ])
    store.close()
    code, out, _ = _run("gateway", "usage", "--by", "model", "--json", "--db", str(db))
    assert code == 0
    assert [(r["model"], r["cost_cny"]) for r in json.loads(out)] == [("kimi-k2.5", 0.75), ("moonshot-v1-8k", 0.25)]
    _, out, _ = _run("gateway", "usage", "--key", "crm", "--since", "2026-12-01", "--json", "--db", str(db))
    assert [r["day"] for r in json.loads(out)] == ["2026-12-01"]
    _, out, _ = _run("gateway", "usage", "--by", "key", "--db", str(db))
    assert "crm" in out and "1.0000" in out
