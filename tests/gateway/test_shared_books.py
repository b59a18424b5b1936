"""Two gateways sharing their books through one real Redis: one key's RPM, concurrency and budget
hold across both; while Redis is down they fail closed (503 + Retry-After, nothing sent to Kimi)
or admit on a logged local share, and they go back to the shared books when it answers again."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kimiflow.core.pricing import cost_cny
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.gateway import GatewaySettings, UpstreamConfig
from kimiflow.gateway.keys import load_or_create_secret
from kimiflow.gateway.manage import secret_path
from kimiflow.gateway.proxy import _worst_prompt
from kimiflow.gateway.shared import SharedBooks
from kimiflow.gateway.store import SQLiteStore
from kimiflow.sim import FAULT_HEADER, LatencyModel, Simulator
from tests.gateway.conftest import ADMIN_TOKEN, RunningGateway, start_gateway
from tests.redis_server import RedisServer, free_port

MODEL = "moonshot-v1-8k"
BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 50}

Pair = Callable[..., tuple[RunningGateway, RunningGateway]]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own on a fixed port, so it can be stopped and started again."""
    directory = Path(f"/tmp/kf-r-{uuid.uuid4().hex[:8]}")
    directory.mkdir()
    server = RedisServer(directory, port=free_port()).start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Two gateway replicas on one SQLite store and one Redis namespace (the key secret copied, as an
    admin deploying replicas does)."""
    stops: list[Callable[[], None]] = []

    def make(sim: Simulator, redis_url: str, **options: Any) -> tuple[RunningGateway, RunningGateway]:
        namespace = f"t{uuid.uuid4().hex[:12]}"
        one_path, two_path = tmp_path / "one" / "gw.db", tmp_path / "two" / "gw.db"
        one_path.parent.mkdir(exist_ok=True)
        two_path.parent.mkdir(exist_ok=True)
        load_or_create_secret(secret_path(one_path))
        shutil.copy(secret_path(one_path), secret_path(two_path))
        started = []
        for path in (one_path, two_path):
            settings = GatewaySettings(UpstreamConfig(sim.base_url, sim.api_key), ADMIN_TOKEN, path,
                                       redis_url=redis_url, redis_namespace=namespace, **options)
            running, stop = start_gateway(settings, SQLiteStore(one_path))
            assert isinstance(running.gw.books, SharedBooks)
            started.append(running)
            stops.append(stop)
        return started[0], started[1]

    yield make
    for stop in reversed(stops):
        stop()


async def _post(http: aiohttp.ClientSession, gw: RunningGateway, key: str) -> tuple[int, dict[str, Any], Any]:
    async with http.post(gw.base_url + "/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, await r.json(), r.headers


async def _spread(gateways: tuple[RunningGateway, ...], key: str, n: int) -> list[tuple[int, dict[str, Any], Any]]:
    async with aiohttp.ClientSession() as http:
        return list(await asyncio.gather(*(_post(http, gateways[i % len(gateways)], key) for i in range(n))))


def _key_on_both(one: RunningGateway, two: RunningGateway, name: str, **limits: Any) -> str:
    key = one.create_key(name, **limits)
    two.run(two.gw.reload_keys(force=True))
    return key


def test_one_keys_rpm_holds_across_two_replicas(sim: Simulator, redis_url: str, pair: Pair) -> None:
    one, two = pair(sim, redis_url)
    key = _key_on_both(one, two, "crm", rpm=5)
    results = asyncio.run(_spread((one, two), key, 12))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 5 + [429] * 7
    refused = [body for status, body, _ in results if status == 429]
    assert all("max RPM: 5" in body["error"]["message"] for body in refused)
    assert sim.stats.by_status[200] == 5
    # The headers count the books both replicas write to: after 5 admissions nothing is left.
    last = [headers for status, _, headers in results if status == 200]
    assert min(int(h["x-ratelimit-remaining-requests"]) for h in last) == 0
    assert {h["x-ratelimit-limit-requests"] for h in last} == {"5"}


def test_concurrency_across_replicas(sim_factory: Callable[..., Simulator], redis_url: str, pair: Pair) -> None:
    sim = sim_factory(latency=LatencyModel(ttft_s=0.4))
    one, two = pair(sim, redis_url)
    key = _key_on_both(one, two, "etl", concurrency=2)
    results = asyncio.run(_spread((one, two), key, 6))
    assert sorted(status for status, _, _ in results) == [200, 200, 429, 429, 429, 429]
    assert sim.stats.by_status[200] == 2  # the refused four never reached Kimi
    # The slots are back once the answers are in: the next two pass on either replica.
    assert sorted(s for s, _, _ in asyncio.run(_spread((two, one), key, 2))) == [200, 200]


def test_a_budget_holds_across_replicas(sim: Simulator, redis_url: str, pair: Pair) -> None:
    one, two = pair(sim, redis_url)
    # The gateway reserves each request's worst case: a padded prompt estimate and all of max_tokens.
    worst = cost_cny(MODEL, _worst_prompt(estimate_message_tokens(BODY["messages"])), BODY["max_tokens"])
    budget = round(worst * 6, 9)
    key = _key_on_both(one, two, "capped", budget_cny=budget)
    results = asyncio.run(_spread((one, two), key, 30))
    answered = [s for s, _, _ in results if s == 200]
    refused = [b for s, b, _ in results if s == 429]
    # Six worst cases fit; a request arriving after some settled (real cost < worst) may fit too.
    assert len(answered) >= 6 and refused and sim.stats.by_status[200] == len(answered)
    assert all(b["error"]["type"] == "exceeded_current_quota_error" for b in refused)
    one.flush()
    two.flush()
    spent = one.gw.store.spend_since(one.record("capped").id, "")
    assert 0 < spent <= budget + 1e-9


def test_fail_closed_answers_503_and_sends_nothing_while_redis_is_down(sim: Simulator, own_redis: RedisServer,
                                                                       pair: Pair) -> None:
    one, two = pair(sim, own_redis.url)
    key = _key_on_both(one, two, "crm", rpm=100)
    assert [s for s, _, _ in asyncio.run(_spread((one, two), key, 2))] == [200, 200]
    own_redis.stop()
    before = sim.stats.requests
    results = asyncio.run(_spread((one, two), key, 4))
    assert [s for s, _, _ in results] == [503] * 4
    assert all(int(h["Retry-After"]) >= 1 for _, _, h in results)
    assert all("cannot reach its shared limits" in b["error"]["message"] for _, b, _ in results)
    assert sim.stats.requests == before, "nothing may reach Kimi while the limits are unknown"
    own_redis.start()

    async def until_served() -> int:
        async with aiohttp.ClientSession() as http:
            for attempt in range(40):  # the replica tries Redis again once a second
                status, _, _ = await _post(http, one, key)
                if status == 200:
                    return attempt
                assert status == 503
                await asyncio.sleep(0.1)
        raise AssertionError("the gateway did not go back to the shared limits within 4 s")

    assert asyncio.run(until_served()) <= 20


def test_local_share_divides_the_limits_and_says_so(sim: Simulator, own_redis: RedisServer, pair: Pair,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    one, two = pair(sim, own_redis.url, redis_unavailable="local-share", replicas=2)
    key = _key_on_both(one, two, "crm", rpm=6)
    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="kimiflow.gateway.shared"):
        statuses = [s for s, _, _ in asyncio.run(_spread((one,), key, 6))]
    # Replica one alone may use its share: 6 RPM over 2 replicas is 3.
    assert sorted(statuses) == [200, 200, 200, 429, 429, 429]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("unreachable" in m and "divided by 2" in m for m in warned), warned


def test_redis_holds_no_key_or_secret_and_every_name_expires(sim: Simulator, redis_url: str, pair: Pair) -> None:
    import redis.asyncio

    one, two = pair(sim, redis_url, tier=1)
    key = _key_on_both(one, two, "crm", rpm=50, tpm=100_000, concurrency=5, budget_cny=10.0)
    assert {s for s, _, _ in asyncio.run(_spread((one, two), key, 4))} == {200}
    key_id = one.record("crm").id
    namespace = one.gw.settings.redis_namespace

    async def check() -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            names = [k.decode() async for k in client.scan_iter(match=f"{namespace}:*")]
            for name in names:
                for secret in (key, key_id, sim.api_key):
                    assert secret not in name
                    dumped = await client.dump(name)
                    assert dumped is not None and secret.encode() not in dumped
                assert 0 < await client.pttl(name) <= 86_400_000 + 200_000, name  # nothing stays forever
            return names
        finally:
            await client.aclose()

    deadline = time.monotonic() + 3
    while True:  # the releases go out just after the answers
        names = one.run(check())
        if not any(n.endswith((":leases", ":reserved")) for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # Left: the windows of the key and of the account, and the key's spent counter for the month; the
    # leases and reservations left with their requests. All under one hash tag (one cluster slot).
    tails = sorted(n.split(":", 2)[2] for n in names)
    assert sum(t.startswith("sub:") for t in tails) == 3 and len(tails) == 5, tails
    assert {t.rsplit(":", 1)[-1] for t in tails} == {"rpm", "tpm", _month()}, tails
    assert len({n.split(":")[1] for n in names}) == 1


def _month() -> str:
    from kimiflow.gateway.admission import period_start

    return period_start("month", time.time())


async def _dead_holder(url: str, namespace: str, upstream_key: str, key_id: str, budget: float, worst: float) -> None:
    """A replica that admitted a request and died (no release, no renewal): its lease and reservation stay."""
    from kimiflow.limits import Charge, RateLimits, RedisLimiter
    from kimiflow.limits.redis import SharedBudget

    limiter = RedisLimiter(url, RateLimits(), namespace=namespace, key=upstream_key, lease_seconds=1.0)
    reservations, spent = limiter.budget_keys(key_id, "")
    await limiter.seed_spent(spent, 0)
    book = limiter.book(key_id, RateLimits(concurrency=1, margin=0.0, guard_seconds=0.0))
    admitted = await limiter.admit(Charge(10, 0), above=(book,),
                                   budget=SharedBudget(reservations, spent, int(budget * 1e9), int(worst * 1e9)))
    assert admitted.lease is not None
    limiter._held.clear()  # stop renewing, as a killed process does
    await limiter._redis.aclose()


def test_a_dead_replicas_slot_and_reservation_come_back_after_the_lease(sim: Simulator, redis_url: str,
                                                                       pair: Pair) -> None:
    one, two = pair(sim, redis_url)
    key = _key_on_both(one, two, "solo", concurrency=1, budget_cny=1.0, budget_period="total")
    record = one.record("solo")
    # The dead replica reserved almost all of the budget and holds the only slot.
    asyncio.run(_dead_holder(redis_url, one.gw.settings.redis_namespace, sim.api_key, record.id, 1.0, 0.999))
    status, body, _ = asyncio.run(_spread((one,), key, 1))[0]
    assert status == 429 and body["error"]["type"] in ("exceeded_current_quota_error", "rate_limit_reached_error")
    time.sleep(1.2)
    assert [s for s, _, _ in asyncio.run(_spread((two,), key, 1))] == [200]


def test_a_429_through_one_replica_pauses_the_account_on_the_other(sim: Simulator, redis_url: str,
                                                                   pair: Pair) -> None:
    one, two = pair(sim, redis_url, tier=1)
    key = _key_on_both(one, two, "crm")

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {key}", FAULT_HEADER: "429-retry-after"}
            async with http.post(one.base_url + "/chat/completions", json=BODY, headers=headers) as r:
                assert r.status == 429 and "Retry-After" in r.headers
                pause = float(r.headers["Retry-After"])
            before = sim.stats.requests
            status, body, answer_headers = await _post(http, two, key)
            assert status == 429 and "paused after Kimi answered 429 (account tier)" in body["error"]["message"]
            assert 1 <= int(answer_headers["Retry-After"]) <= pause + 1
            assert sim.stats.requests == before, "the paused account sent nothing to Kimi"
            await asyncio.sleep(pause + 0.2)
            assert (await _post(http, two, key))[0] == 200

    asyncio.run(run())
