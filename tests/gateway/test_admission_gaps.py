"""Admission gaps: an account refusal leaves the key's books untouched; x-ratelimit-* on every answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from kimiflow.gateway.admission import Books, Grant, Rejection
from kimiflow.gateway.keys import KeyLimits, KeyRecord
from kimiflow.limits.books import LimiterState, RateLimits
from kimiflow.sim import FAULT_HEADER, LatencyModel, Simulator
from tests.gateway.conftest import RunningGateway

MODEL = "moonshot-v1-8k"
BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 50}
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
    async with http.post(url + "/chat/completions", json=BODY if body is None else body,
                         headers={"Authorization": f"Bearer {key}", **(headers or {})}) as r:
        return r.status, await r.json(), r.headers


def _window(state: LimiterState) -> tuple[float, float, float, int, int, int, int]:
    """Everything a request leaves in a limiter's books."""
    r, t, d = state._requests, state._tokens, state._day_tokens
    return r.total, t.total, d.total, len(r), len(t), state.in_flight, state.admitted_count


# -- the books, without I/O ---------------------------------------------------------------------


def test_an_account_refusal_leaves_the_key_books_exactly_as_they_were() -> None:
    now = [100.0]
    books = Books(RateLimits(concurrency=1, rpm=100, tpm=10_000, margin=0.0, guard_seconds=0.0),
                  clock=lambda: now[0], wall=lambda: 1_800_000_000.0)
    hog = KeyRecord("k1", "hog", "h1", "sk-…hog1")
    crm = KeyRecord("k2", "crm", "h2", "sk-…crm2", KeyLimits(rpm=2, tpm=5_000, concurrency=2))
    books.load([hog, crm], lambda key_id, day: 0.0)
    held = books.admit(hog, tokens=300, worst_cny=0.0)
    assert isinstance(held, Grant)
    key_state = books._keys["k2"].state
    before = _window(key_state)
    assert before == (0, 0, 0, 0, 0, 0, 0)
    for step in range(5):  # refused by the account's concurrency, again and again
        now[0] += 0.3
        refused = books.admit(crm, tokens=1_000, worst_cny=0.0)
        assert isinstance(refused, Rejection), step
        assert refused.reason == "account_concurrency" and "account tier concurrency" in refused.message
        assert _window(key_state) == before
    assert books.headers(crm)["x-ratelimit-remaining-requests"] == "2"
    books.release(held)
    for expected in (1, 2):  # the key's 2 RPM are both for answers, none lost to the refusals
        grant = books.admit(crm, tokens=1_000, worst_cny=0.0)
        assert isinstance(grant, Grant)
        assert _window(key_state)[:3] == (expected, 1_000 * expected, 0) and key_state.in_flight == 1
        books.release(grant)
    third = books.admit(crm, tokens=1_000, worst_cny=0.0)
    assert isinstance(third, Rejection) and third.reason == "key_rpm"


def test_refusal_records_nothing_and_commit_records_one_admission() -> None:
    state = LimiterState(RateLimits(concurrency=3, rpm=3, tpm=1_000, tpd=5_000, margin=0.0, guard_seconds=0.0))
    empty = _window(state)
    assert state.refusal(400, now=1.0) is None
    assert _window(state) == empty
    ticket = state.commit(400, now=1.0)
    assert _window(state) == (1, 400, 400, 1, 1, 1, 1) and ticket.tokens == 400
    state.commit(400, now=1.5)
    refused = state.refusal(400, now=2.0)
    assert refused is not None and refused.reason == "tpm" and refused.ticket is None
    assert refused.wait is not None and 58.9 < refused.wait <= 59.0
    assert _window(state)[:3] == (2, 800, 800)
    # try_acquire is the two together: same answers as before the split
    assert state.try_acquire(400, now=2.0).reason == "tpm"
    assert state.try_acquire(100, now=2.0).ticket is not None
    assert state.try_acquire(0, now=2.0).reason == "concurrency"


def test_headers_report_the_tighter_of_key_and_account() -> None:
    now = [0.0]
    books = Books(RateLimits(rpm=10, tpm=10_000, margin=0.0, guard_seconds=0.0), clock=lambda: now[0],
                  wall=lambda: 1_800_000_000.0)
    wide = KeyRecord("k1", "wide", "h1", "d1", KeyLimits(rpm=500))
    narrow = KeyRecord("k2", "narrow", "h2", "d2", KeyLimits(rpm=3, tpm=50_000))
    bare = KeyRecord("k3", "bare", "h3", "d3")
    books.load([wide, narrow, bare], lambda key_id, day: 0.0)
    for _ in range(4):
        grant = books.admit(wide, tokens=1_000, worst_cny=0.0)
        assert isinstance(grant, Grant)
    assert books.headers(wide) == {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "6",
                                   "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "6000"}
    assert books.headers(narrow) == {"x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "3",
                                     "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "6000"}
    assert books.headers(bare)["x-ratelimit-limit-requests"] == "10"
    alone = Books(None)
    alone.load([wide, bare], lambda key_id, day: 0.0)
    assert alone.headers(bare) == {}  # no limit anywhere: nothing to report
    assert alone.headers(wide) == {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "500"}


# -- through real HTTP, a gateway in front of the simulator --------------------------------------


def test_a_key_behind_a_refusing_account_still_gets_its_full_rpm(
        sim_factory: Callable[..., Simulator], gateway_factory: Callable[..., RunningGateway]) -> None:
    """Tier 0: one request at a time for the whole account, 3 RPM. While another key's slow request
    holds the account's slot, 'crm' (--rpm 2) is refused three times by the account; afterwards it
    still gets both of its answers, and only then its own RPM refuses."""
    sim = sim_factory(latency=LatencyModel(ttft_s=2.0))
    gateway = gateway_factory(sim, tier=0)
    hog, crm = gateway.create_key("hog"), gateway.create_key("crm", rpm=2)
    account = gateway.gw.books.account
    assert account is not None

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            slow = asyncio.ensure_future(_post(http, gateway.base_url, hog))
            deadline = time.monotonic() + 10
            while account.in_flight == 0:
                assert time.monotonic() < deadline, "the slow request never reached the gateway"
                await asyncio.sleep(0.01)
            refused = await asyncio.gather(*(_post(http, gateway.base_url, crm) for _ in range(3)))
            assert not slow.done(), "the slow request ended before the refusals were tested; raise ttft_s"
            for status, body, headers in refused:
                assert status == 429, body
                assert "account tier concurrency" in body["error"]["message"]
                assert headers["x-ratelimit-limit-requests"] == "2"
                assert headers["x-ratelimit-remaining-requests"] == "2"  # the refusals cost the key nothing
            assert (await slow)[0] == 200
            answers = [await _post(http, gateway.base_url, crm) for _ in range(2)]
            assert [status for status, _, _ in answers] == [200, 200]
            assert [h["x-ratelimit-remaining-requests"] for _, _, h in answers] == ["1", "0"]
            status, body, headers = await _post(http, gateway.base_url, crm)
            assert status == 429 and "key RPM" in body["error"]["message"]
            assert headers["x-ratelimit-remaining-requests"] == "0"

    asyncio.run(run())
    assert sim.stats.chat_completions == 3


def test_every_answer_carries_rate_headers_with_the_account_limits(
        sim: Simulator, gateway_factory: Callable[..., RunningGateway]) -> None:
    """A key with no limits of its own behind tier 1: the account's limits, on 200, 429s and 400s."""
    gateway = gateway_factory(sim, tier=1)
    bare = gateway.create_key("bare")
    budget = gateway.create_key("budget", budget_cny=1e-9, budget_period="total", rpm=100_000)

    async def run() -> list[tuple[str, int, Any]]:
        async with aiohttp.ClientSession() as http:
            out = []
            for label, key, body, extra in (
                ("ok", bare, None, None),
                ("stream", bare, {**BODY, "stream": True}, None),
                ("upstream quota", bare, None, {FAULT_HEADER: "quota"}),
                ("budget", budget, None, None),
                ("bad body", bare, [1, 2], None),
                ("no model", bare, {"messages": []}, None),
            ):
                async with http.post(gateway.base_url + "/chat/completions", json=BODY if body is None else body,
                                     headers={"Authorization": f"Bearer {key}", **(extra or {})}) as r:
                    await r.read()
                    out.append((label, r.status, r.headers))
            return out

    results = asyncio.run(run())
    assert [status for _, status, _ in results] == [200, 200, 429, 429, 400, 400]
    tier1 = RateLimits.for_tier(1)
    eff = LimiterState(tier1).effective()
    for label, _, headers in results:
        for name in RATE_HEADERS:
            assert name in headers, (label, name)
        assert headers["x-ratelimit-limit-tokens"] == str(int(eff["tpm"])), label
        assert int(headers["x-ratelimit-remaining-requests"]) <= int(headers["x-ratelimit-limit-requests"])
    by_label = {label: headers for label, _, headers in results}
    assert by_label["ok"]["x-ratelimit-limit-requests"] == str(int(eff["rpm"]))
    assert int(by_label["stream"]["x-ratelimit-remaining-requests"]) == int(eff["rpm"]) - 2
    assert by_label["budget"]["x-ratelimit-limit-requests"] == str(int(eff["rpm"]))  # tighter than 100000


def test_no_limit_anywhere_means_no_rate_headers(gateway: RunningGateway) -> None:
    key = gateway.create_key("free")

    async def run() -> Any:
        async with aiohttp.ClientSession() as http:
            return await _post(http, gateway.base_url, key)

    status, _, headers = asyncio.run(run())
    assert status == 200
    assert not [name for name in RATE_HEADERS if name in headers]
