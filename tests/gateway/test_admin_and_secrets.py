"""``/admin/`` over HTTP, ``/metrics`` and ``/healthz``, and the search for leaked keys everywhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kimiflow.sim import FAULT_HEADER, Simulator
from tests.gateway.conftest import ADMIN_TOKEN, UPSTREAM_KEY, RunningGateway, StoreBackend

BODY: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 30}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _call(http: aiohttp.ClientSession, method: str, url: str, seen: list[bytes], **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as r:
        raw = await r.read()
        seen.append(raw + b"".join(f"{k}: {v}\n".encode() for k, v in r.headers.items()))
        try:
            return r.status, await r.json(content_type=None)
        except ValueError:
            return r.status, raw.decode()


def test_admin_api_manages_keys_live_and_audits(gateway: RunningGateway) -> None:
    base = gateway.url
    seen: list[bytes] = []

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            assert (await _call(http, "GET", base + "/admin/keys", seen))[0] == 401
            assert (await _call(http, "GET", base + "/admin/keys", seen, headers={"Authorization": "Bearer nope"}))[0] == 401
            status, created = await _call(http, "POST", base + "/admin/keys", seen, headers=ADMIN,
                                          json={"name": "crm", "rpm": 1, "models": ["moonshot-v1-8k"]})
            assert status == 201 and set(created) == {"key", "id", "name", "limits"} and created["limits"]["rpm"] == 1
            auth = {"Authorization": f"Bearer {created['key']}"}
            assert (await _call(http, "POST", base + "/v1/chat/completions", seen, headers=auth, json=BODY))[0] == 200
            assert (await _call(http, "POST", base + "/v1/chat/completions", seen, headers=auth, json=BODY))[0] == 429
            status, updated = await _call(http, "PATCH", base + "/admin/keys/crm", seen, headers=ADMIN, json={"rpm": 5})
            assert status == 200 and updated["limits"]["rpm"] == 5 and updated["limits"]["models"] == ["moonshot-v1-8k"]
            assert (await _call(http, "POST", base + "/v1/chat/completions", seen, headers=auth, json=BODY))[0] == 200
            status, shown = await _call(http, "GET", base + "/admin/keys/crm", seen, headers=ADMIN)
            assert shown["spent_cny"] > 0 and "key_hash" not in shown and shown["key"].endswith(created["key"][-4:])
            status, bad = await _call(http, "PATCH", base + "/admin/keys/crm", seen, headers=ADMIN, json={"rpn": 5})
            assert status == 400 and "unknown limit field(s) rpn" in bad["error"]["message"]
            gateway.flush()
            status, usage = await _call(http, "GET", base + "/admin/usage?by=key", seen, headers=ADMIN)
            assert usage["data"][0]["name"] == "crm" and usage["data"][0]["requests"] == 3
            assert (await _call(http, "DELETE", base + "/admin/keys/crm", seen, headers=ADMIN))[0] == 200
            assert (await _call(http, "POST", base + "/v1/chat/completions", seen, headers=auth, json=BODY))[0] == 401
            status, audit = await _call(http, "GET", base + "/admin/audit", seen, headers=ADMIN)
            assert [a["action"] for a in audit["data"]] == ["keys.create", "keys.update", "keys.revoke"]
            assert {a["actor"] for a in audit["data"]} == {"http"}

    asyncio.run(run())


def test_metrics_and_healthz(gateway: RunningGateway) -> None:
    key = gateway.create_key("crm", rpm=1)
    record = gateway.record("crm")
    seen: list[bytes] = []

    async def run() -> str:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {key}"}
            await _call(http, "POST", gateway.base_url + "/chat/completions", seen, headers=auth, json=BODY)
            await _call(http, "POST", gateway.base_url + "/chat/completions", seen, headers=auth, json=BODY)
            gateway.flush()
            assert (await _call(http, "GET", gateway.url + "/healthz", seen)) == (200, {"status": "ok"})
            status, text = await _call(http, "GET", gateway.url + "/metrics", seen)
            assert status == 200
            return str(text)

    text = asyncio.run(run())
    assert f'kimiflow_gateway_requests_total{{ended="ok",key_id="{record.id}",model="moonshot-v1-8k",status="200"}} 1.0' in text
    assert 'kimiflow_gateway_rejections_total{reason="key_rpm"} 1.0' in text
    assert "kimiflow_gateway_cost_cny_total" in text and "kimiflow_gateway_ttft_seconds_bucket" in text
    assert "crm" not in text and key not in text


def test_no_key_leaks_into_responses_logs_database_or_metrics(
    gateway_factory: Callable[..., RunningGateway], sim: Simulator, caplog: pytest.LogCaptureFixture, tmp_path: Path,
    store_backend: StoreBackend,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = gateway_factory(sim, db_path=tmp_path / "leak.sqlite")
    key = gateway.create_key("crm", models="moonshot-v1-8k", budget_cny=0.001)
    seen: list[bytes] = []

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {key}"}
            chat = gateway.base_url + "/chat/completions"
            await _call(http, "POST", chat, seen, headers=auth, json=BODY)
            await _call(http, "POST", chat, seen, headers=auth, json={**BODY, "stream": True})
            for fault in ("quota", "500", "429", "reset", "cut", "error-event"):
                await _call(http, "POST", chat, seen, headers={**auth, FAULT_HEADER: fault}, json={**BODY, "stream": True})
            await _call(http, "POST", chat, seen, headers=auth, json={**BODY, "model": "kimi-k2.5"})
            await _call(http, "POST", chat, seen, headers=auth, json={**BODY, "max_tokens": 100_000})
            await _call(http, "POST", chat, seen, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}, json=BODY)
            await _call(http, "POST", chat, seen, headers=auth, data=b"{not json")
            for path in ("/models", "/users/me/balance"):
                await _call(http, "GET", gateway.base_url + path, seen, headers=auth)
            await _call(http, "POST", gateway.base_url + "/tokenizers/estimate-token-count", seen, headers=auth,
                        json={"model": "moonshot-v1-8k", "messages": BODY["messages"]})
            for path in ("/metrics", "/healthz", "/admin/keys", "/admin/usage", "/admin/audit"):
                await _call(http, "GET", gateway.url + path, seen, headers=ADMIN)
            gateway.flush()

    asyncio.run(run())
    # An upstream that does not answer: the error names the host, never the key.
    dead = gateway_factory(sim, db_path=tmp_path / "dead.sqlite", upstream={"attempts": 1})
    dead.gw.upstream._base = "http://127.0.0.1:9/v1"
    dead_key = dead.create_key("crm")

    async def unreachable() -> None:
        async with aiohttp.ClientSession() as http:
            status, body = await _call(http, "POST", dead.base_url + "/chat/completions", seen,
                                       headers={"Authorization": f"Bearer {dead_key}"}, json=BODY)
            assert status == 502 and body["error"]["type"] == "server_error"

    asyncio.run(unreachable())
    in_database = store_backend.contents(gateway.gw.store) + store_backend.contents(dead.gw.store)
    stored = in_database + b"".join(p.read_bytes() for p in tmp_path.iterdir()
                                    if p.name.startswith(("leak.sqlite", "dead.sqlite")) and not p.name.endswith(".secret"))
    logs = caplog.text + repr(gateway.gw.settings) + repr(gateway.gw.settings.upstream)
    for secret in (UPSTREAM_KEY, key, dead_key):
        needle = secret.encode()
        assert not any(needle in blob for blob in seen), f"{secret[:8]}… found in a response"
        assert secret not in logs, f"{secret[:8]}… found in a log line"
        assert needle not in stored, f"{secret[:8]}… found in the database files"
    assert len(seen) > 15 and logs  # the search looked at something
    assert gateway.record("crm").key_hash.encode() in stored and b"keys.create" in stored  # it read the stored rows


def test_structured_access_log_line_per_request(gateway: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="kimiflow.gateway.access")
    key = gateway.create_key("crm")
    record = gateway.record("crm")

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            await _call(http, "POST", gateway.base_url + "/chat/completions", [],
                        headers={"Authorization": f"Bearer {key}"}, json=BODY)

    asyncio.run(run())
    gateway.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "kimiflow.gateway.access"]
    assert len(lines) == 1
    assert f"key_id={record.id}" in lines[0] and "status=200 ended=ok" in lines[0] and "usage=kimi" in lines[0]
    assert key not in lines[0]
