"""Tier limits (docs/kimi-api.md §6) with an injected clock, and the balance running out."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from kimiflow.core.tokens import estimate_message_tokens
from tests.sim.conftest import Api, FakeClock, SimFactory, user

RPM_MESSAGE = re.compile(
    r"Your account org-\w+<ak-[0-9a-f]{16}> request reached organization max RPM: 3, "
    r"please try again after (\d+) seconds"
)


async def test_tier0_rpm_window_slides_with_the_clock(make_api: SimFactory) -> None:
    clock = FakeClock()
    api = await make_api(tier=0, clock=clock)
    for _ in range(3):
        assert (await api.chat({})).status == 200
        clock.advance(10)
    limited = await api.chat({})
    assert limited.status == 429
    assert limited.error["type"] == "rate_limit_reached_error"
    match = RPM_MESSAGE.fullmatch(limited.error["message"])
    assert match, limited.error["message"]
    assert int(match.group(1)) == 30  # the first request leaves the 60 s window 30 s from now
    assert "Retry-After" not in limited.headers
    assert limited.headers["Msh-Gid"] == "enterprise-tier-0"
    assert api.sim.api_key not in limited.error["message"]
    clock.advance(30)
    assert (await api.chat({})).status == 200
    assert api.sim.stats.rate_limited == 1


async def test_tier0_concurrency_counts_open_streams(make_api: SimFactory) -> None:
    gate = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await gate.wait()

    api = await make_api(tier=0, latency="realistic", sleep=held_sleep)
    first = asyncio.create_task(api.chat({"stream": True}))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if api.sim.limiter.in_flight(api.sim.api_key):
            break
    second = await api.chat({})
    assert second.status == 429
    assert second.error["message"].endswith(
        "request reached organization max concurrency: 1, please try again after 1 seconds"
    )
    gate.set()
    assert (await first).status == 200
    assert api.sim.limiter.in_flight(api.sim.api_key) == 0


async def test_limits_are_per_key(make_api: SimFactory) -> None:
    api = await make_api(tier=0, keys=("sk-sim-one", "sk-sim-two"), clock=FakeClock())
    for _ in range(3):
        assert (await api.chat({}, key="sk-sim-one")).status == 200
    assert (await api.chat({}, key="sk-sim-one")).status == 429
    assert (await api.chat({}, key="sk-sim-two")).status == 200


async def test_tpm_counts_prompt_plus_max_tokens(make_api: SimFactory) -> None:
    clock = FakeClock()
    api = await make_api(tier=0, clock=clock)
    # Tier 0 allows 500,000 TPM; max_tokens is charged in full whatever the real output.
    body = {"model": "kimi-k2-0905-preview", "max_tokens": 200_000, "messages": user("hi")}
    prompt = estimate_message_tokens(user("hi"))
    assert (await api.chat(body)).status == 200
    assert (await api.chat(body)).status == 200
    limited = await api.chat(body)
    assert limited.status == 429
    assert limited.error["type"] == "rate_limit_reached_error"
    assert limited.error["message"].endswith(
        f"request reached organization TPM rate limit, current:{2 * (200_000 + prompt)}, limit:500000"
    )
    clock.advance(61)
    assert (await api.chat(body)).status == 200


async def test_tpm_uses_default_max_tokens_when_absent(make_api: SimFactory) -> None:
    api = await make_api(tier=0, clock=FakeClock(), default_max_tokens=300_000)
    assert (await api.chat({"model": "kimi-k2-0905-preview"})).status == 200
    limited = await api.chat({"model": "kimi-k2-0905-preview"})
    assert "TPM rate limit" in limited.error["message"]


async def test_tpd_resets_after_a_day(make_api: SimFactory) -> None:
    clock = FakeClock()
    api = await make_api(tier=0, clock=clock)
    body = {"model": "kimi-k2-0905-preview", "max_tokens": 250_000}
    for _ in range(5):
        assert (await api.chat(body)).status == 200
        clock.advance(61)
    limited = await api.chat(body)
    assert limited.status == 429
    assert re.search(r"request reached organization TPD rate limit,current:\d+, limit:1500000$", limited.error["message"])
    clock.advance(86_400)
    assert (await api.chat(body)).status == 200


async def test_unlimited_by_default(make_api: SimFactory) -> None:
    api = await make_api(clock=FakeClock())
    replies = await asyncio.gather(*(api.chat({}) for _ in range(20)))
    assert {r.status for r in replies} == {200}


async def test_quota_error_when_balance_is_used_up(make_api: SimFactory) -> None:
    api = await make_api(balance=0.0005)
    first = await api.chat({"model": "moonshot-v1-8k"}, headers={"X-Kimiflow-Sim-Tokens": "100"})
    assert first.status == 200  # 0.001 CNY: the balance goes below zero
    assert api.sim.balance < 0
    refused = await api.chat({})
    assert refused.status == 429
    assert refused.error["type"] == "exceeded_current_quota_error"
    assert refused.error["message"].startswith("You exceeded your current token quota: <org-")
    assert refused.error["message"].endswith("please check your account balance")
    balance = (await api.request("GET", "/users/me/balance")).json()["data"]
    assert balance["cash_balance"] < 0
    assert balance["available_balance"] == balance["voucher_balance"] == 0


async def test_failed_and_cut_requests_are_not_billed(api: Api) -> None:
    before = api.sim.balance
    await api.chat({"model": "nope"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.chat({"stream": True}, headers={"X-Kimiflow-Sim-Fault": "cut;after=2"})
    assert api.sim.balance == before
