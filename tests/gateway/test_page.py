"""The usage page at ``GET /``: the admin sees every key, a key sees only itself; figures from the ledger."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from kimiflow.sim import FAULT_HEADER
from tests.gateway.conftest import ADMIN_TOKEN, RunningGateway

BODY = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 30}


def test_page_shows_the_ledgers_figures_to_the_right_viewer(gateway: RunningGateway) -> None:
    crm = gateway.create_key("crm", budget_cny=1.0, budget_period="day", rpm=50)
    gateway.create_key("tickets")

    async def run() -> tuple[str, str, int, str, str]:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {crm}"}
            for fault in (None, None, "500"):
                headers = {**auth, FAULT_HEADER: fault} if fault else auth
                async with http.post(gateway.base_url + "/chat/completions", json=BODY, headers=headers) as r:
                    await r.read()
            gateway.flush()
            async with http.get(gateway.url + "/") as r:
                anonymous = r.status
            async with http.get(gateway.url + "/", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                admin = await r.text()
            async with http.get(gateway.url + "/", headers=auth) as r:
                own = await r.text()
        # A browser: the sign-in form sets a session cookie; the key never appears in a URL.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.post(gateway.url + "/login", data={"token": "wrong"}) as r:
                failed = await r.text()
            async with browser.post(gateway.url + "/login", data={"token": crm}) as r:
                assert str(r.url).endswith("/") and crm not in str(r.url)
                signed_in = await r.text()
        return admin, own, anonymous, failed, signed_in

    admin, own, anonymous, failed, signed_in = asyncio.run(run())
    assert anonymous == 401 and 'id="failed"' in failed
    rows = gateway.gw.store.ledger_rows()
    spent = sum(r.cost_cny for r in rows)
    assert "crm" in admin and "tickets" in admin
    assert "tickets" not in own and "crm" in own
    assert "tickets" not in signed_in and f"{spent:.4f}" in signed_in
    assert f"{spent:.4f}" in own and f"{1.0 - spent:.4f}" in own  # spend today and what is left of the budget
    problems = own.split('id="problems"', 1)[1]
    assert re.search(r'class="bad">500</td><td>upstream_error', problems)
    assert own.count('class="bar"') == 3 * 30
