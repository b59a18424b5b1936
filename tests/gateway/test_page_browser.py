"""The usage page in a real browser: headless Chromium (Debian's package) driven by playwright-core.

Requests go through the gateway first; the browser signs in through the page's form and must show
exactly what the ledger holds (compared with the raw ledger rows, not with the page's own rollups).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from kimiflow.gateway.page import CHART_DAYS, SESSION_COOKIE
from kimiflow.sim import FAULT_HEADER
from tests.gateway.conftest import ADMIN_TOKEN, RunningGateway
from tests.gateway.nodejs import require_chromium, run_node

BODY = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好，网关"}], "max_tokens": 40}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _traffic(gateway: RunningGateway, calls: list[tuple[str, str | None]]) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            for key, fault in calls:
                headers = {"Authorization": f"Bearer {key}", **({FAULT_HEADER: fault} if fault else {})}
                async with http.post(gateway.base_url + "/chat/completions", json=BODY, headers=headers) as r:
                    await r.read()

    asyncio.run(run())
    gateway.flush()


def _browse(gateway: RunningGateway, token: str, tmp_path: Path, name: str) -> tuple[dict[str, Any], Path]:
    shot = tmp_path / f"{name}.png"
    profile = tmp_path / f"profile-{name}"
    profile.mkdir()
    env = {"PAGE_URL": gateway.url + "/", "PAGE_TOKEN": token, "PAGE_SCREENSHOT": str(shot),
           "PAGE_PROFILE": str(profile), "CHROMIUM": require_chromium()}
    return run_node("page.mjs", env=env, timeout=40), shot


def _money(value: float) -> str:
    return f"{value:.4f}"


def test_chromium_shows_the_ledgers_figures_and_a_key_sees_only_itself(
        node_modules: Path, gateway: RunningGateway, tmp_path: Path) -> None:
    started = time.monotonic()
    crm = gateway.create_key("crm", budget_cny=2.0, budget_period="month", rpm=50)
    tickets = gateway.create_key("tickets", tpm=90_000)
    _traffic(gateway, [(crm, None), (crm, None), (crm, "500"), (tickets, None)])
    store = gateway.gw.store
    ids = {name: gateway.record(name).id for name in ("crm", "tickets")}
    rows = {name: store.ledger_rows(key_id=key_id) for name, key_id in ids.items()}
    assert [len(rows["crm"]), len(rows["tickets"])] == [3, 1]
    spent = {name: sum(r.cost_cny for r in key_rows) for name, key_rows in rows.items()}
    assert spent["crm"] > 0 and spent["tickets"] > 0

    admin, admin_shot = _browse(gateway, ADMIN_TOKEN, tmp_path, "admin")
    assert admin["loginStatus"] == 401 and admin["finalUrl"] == gateway.url + "/"
    assert [c["name"] for c in admin["cookies"]] == [SESSION_COOKIE] and admin["cookies"][0]["httpOnly"]
    assert ADMIN_TOKEN not in admin["cookies"][0]["value"]
    assert admin["heading"] == "Usage — admin — all keys"
    shown = {k["name"]: k for k in admin["keys"]}
    assert sorted(shown) == ["crm", "tickets"]
    for name in shown:
        assert shown[name]["today"] == shown[name]["month"] == _money(spent[name])
    assert shown["crm"]["budget"] == "2.0000 / month" and shown["crm"]["remaining"] == _money(2.0 - spent["crm"])
    assert shown["crm"]["rpm"] == "50 (47)" and shown["tickets"]["remaining"] == "—"
    assert shown["tickets"]["tpm"].startswith("90000 (")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    everything = rows["crm"] + rows["tickets"]
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in everything)
    assert admin["days"] == [{"day": today, "requests": "4", "tokens": str(tokens),
                              "cost": _money(sum(r.cost_cny for r in everything))}]
    assert [p[1:] for p in admin["problems"]] == [["crm", "moonshot-v1-8k", "500", "upstream_error"]]
    for chart in ("requests", "tokens", "cost"):
        bars = admin["charts"][chart]
        # Only today has traffic: one full-height bar (the chart is 120 px tall), the others flat.
        assert bars["bars"] == CHART_DAYS and bars["heights"][-1] > 100 and max(bars["heights"][:-1]) == 0
    assert admin["charts"]["requests"]["titles"][-1] == f"{today}: 4"
    _assert_png(admin_shot)

    own, own_shot = _browse(gateway, crm, tmp_path, "crm")
    assert own["heading"] == "Usage — crm"
    assert [k["name"] for k in own["keys"]] == ["crm"] and own["keys"][0] == shown["crm"]
    crm_tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows["crm"])
    assert own["days"] == [{"day": today, "requests": "3", "tokens": str(crm_tokens), "cost": _money(spent["crm"])}]
    assert [p[1] for p in own["problems"]] == ["crm"]
    assert own["charts"]["requests"]["titles"][-1] == f"{today}: 3"
    assert all("tickets" not in str(v) for v in own["keys"][0].values())
    _assert_png(own_shot)
    assert time.monotonic() - started < 60


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    # A full page of tables and three charts: wider than the viewport's half and taller than a screen.
    assert width >= 1000 and height >= 800 and len(data) > 20_000, (width, height, len(data))
