"""Admission: key RPM, TPM, concurrency and budget, the account's tier above all keys, live key changes.

Every test runs with the books in this process and with the books in Redis (``--redis``), against
the same assertions: the shared books must admit exactly what the local ones do.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from kimiflow.core.pricing import cost_cny
from kimiflow.gateway.keys import KeyLimits
from kimiflow.gateway.shared import SharedBooks
from kimiflow.sim import LatencyModel, Simulator
from tests.gateway.conftest import RunningGateway

MODEL = "moonshot-v1-8k"
BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 50}


@pytest.fixture(params=["local-books", "redis-books"])
def limits_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "local-books":
        return {}
    return {"redis_url": request.getfixturevalue("redis_url"), "redis_namespace": f"t{uuid.uuid4().hex[:12]}"}


@pytest.fixture
def gateway_factory(gateway_factory: Callable[..., RunningGateway],
                    limits_backend: dict[str, Any]) -> Callable[..., RunningGateway]:
    def make(sim: Simulator, **options: Any) -> RunningGateway:
        running = gateway_factory(sim, **limits_backend, **options)
        assert isinstance(running.gw.books, SharedBooks) == bool(limits_backend)
        return running

    return make


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any], Any]:
    async with http.post(url + "/chat/completions", json=body or BODY, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json(), r.headers


async def _burst(url: str, key: str, n: int, body: dict[str, Any] | None = None) -> list[tuple[int, dict[str, Any], Any]]:
    async with aiohttp.ClientSession() as http:
        return list(await asyncio.gather(*(_post(http, url, key, body) for _ in range(n))))


def test_rpm_5_answers_exactly_5_of_8(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("crm", rpm=5)
    results = asyncio.run(_burst(gateway.base_url, key, 8))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 5 + [429] * 3
    refused = [(body, headers) for status, body, headers in results if status == 429]
    for body, headers in refused:
        assert body["error"]["type"] == "rate_limit_reached_error"
        assert "key RPM" in body["error"]["message"] and "crm" in body["error"]["message"]
        assert int(headers["Retry-After"]) >= 1
    assert sim.stats.chat_completions == 5


def test_budget_covering_10_lets_at_most_10_upstream_of_50_parallel(gateway: RunningGateway, sim: Simulator) -> None:
    """Reservation of the worst case under one lock: no overshoot even when all 50 arrive together."""
    import httpx

    probe = httpx.post(sim.base_url + "/chat/completions", json=BODY, headers={"Authorization": f"Bearer {sim.api_key}"})
    usage = probe.json()["usage"]
    one = cost_cny(MODEL, usage["prompt_tokens"], usage["completion_tokens"])
    budget = round(one * 10, 9)
    key = gateway.create_key("tickets", budget_cny=budget, budget_period="total")
    before = sim.stats.chat_completions
    results = asyncio.run(_burst(gateway.base_url, key, 50))
    upstream = sim.stats.chat_completions - before
    answered = sum(1 for status, _, _ in results if status == 200)
    assert 1 <= answered == upstream <= 10
    refused = [body for status, body, _ in results if status != 200]
    assert all(body["error"]["type"] == "exceeded_current_quota_error" for body in refused)
    gateway.flush()
    spent = sum(r.cost_cny for r in gateway.gw.store.ledger_rows())
    assert spent <= budget + 1e-12  # overshoot 0


def test_concurrency_limit(sim_factory: Callable[..., Simulator], gateway_factory: Callable[..., RunningGateway]) -> None:
    sim = sim_factory(latency=LatencyModel(ttft_s=1.0))  # long enough that all 10 overlap, even on a busy machine
    gateway = gateway_factory(sim)
    key = gateway.create_key("java", concurrency=3)
    results = asyncio.run(_burst(gateway.base_url, key, 10))
    assert sorted(s for s, _, _ in results) == [200] * 3 + [429] * 7
    assert all("key concurrency" in b["error"]["message"] for s, b, _ in results if s == 429)
    assert sim.stats.chat_completions == 3


def test_tpm_counts_prompt_plus_max_tokens(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("lowcode", tpm=2500)
    body = {**BODY, "max_tokens": 1000}
    results = asyncio.run(_burst(gateway.base_url, key, 4, body))
    assert sorted(s for s, _, _ in results) == [200, 200, 429, 429]
    assert all("key TPM" in b["error"]["message"] for s, b, _ in results if s == 429)
    assert sim.stats.chat_completions == 2


def test_account_tier_sits_above_all_keys(sim_factory: Callable[..., Simulator],
                                          gateway_factory: Callable[..., RunningGateway]) -> None:
    """Tier 0 allows 3 RPM for the whole account: two unlimited keys together get 3 answers."""
    sim = sim_factory(tier=0)
    gateway = gateway_factory(sim, tier=0)
    a, b = gateway.create_key("a"), gateway.create_key("b")

    async def run() -> list[int]:
        async with aiohttp.ClientSession() as http:
            out = []
            for key in (a, b, a, b, a):
                status, body, _ = await _post(http, gateway.base_url, key)
                out.append(status)
                if status == 429:
                    assert "account tier" in body["error"]["message"]
            return out

    assert sorted(asyncio.run(run())) == [200, 200, 200, 429, 429]
    assert sim.stats.rate_limited == 0  # the gateway, not Kimi, said no


def test_key_changes_from_another_process_apply_within_a_second(gateway: RunningGateway) -> None:
    """Written straight to the database (as the CLI does), picked up by the poll without a restart."""
    key = gateway.create_key("crm", rpm=1)
    store = gateway.gw.store

    async def check() -> None:
        async with aiohttp.ClientSession() as http:
            assert (await _post(http, gateway.base_url, key))[0] == 200
            assert (await _post(http, gateway.base_url, key))[0] == 429
            store.update_key("crm", KeyLimits(rpm=10), actor="cli")
            changed = time.monotonic()
            while (await _post(http, gateway.base_url, key))[0] != 200:
                assert time.monotonic() - changed < 1.0, "the new limit did not apply within 1 s"
                await asyncio.sleep(0.05)
            store.revoke_key("crm", actor="cli")
            changed = time.monotonic()
            while (await _post(http, gateway.base_url, key))[0] != 401:
                assert time.monotonic() - changed < 1.0, "the revocation did not apply within 1 s"
                await asyncio.sleep(0.05)

    asyncio.run(check())


@pytest.mark.parametrize("cap", [100])
def test_max_tokens_cap(gateway: RunningGateway, cap: int) -> None:
    key = gateway.create_key("crm", max_tokens=cap)
    results = asyncio.run(_burst(gateway.base_url, key, 1, {**BODY, "max_tokens": cap + 1}))
    assert results[0][0] == 400 and f"cap of {cap}" in results[0][1]["error"]["message"]
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert asyncio.run(_burst(gateway.base_url, key, 1, body))[0][0] == 200


def test_a_budgeted_key_cannot_use_a_model_without_a_price(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("crm", budget_cny=1.0)
    results = asyncio.run(_burst(gateway.base_url, key, 1, {**BODY, "model": "moonshot-v2-unpriced"}))
    status, body, _ = results[0]
    assert status == 403 and "no known price" in body["error"]["message"]
    assert sim.stats.chat_completions == 0
