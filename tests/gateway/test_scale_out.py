"""Three ``kimiflow gateway serve`` processes sharing one Redis: one key's limits and one account's.

Every gateway, the batch and Redis run as real processes on 127.0.0.1; the simulator (tier 1:
200 RPM, 50 in flight) runs in this process so its counters can be read while the load runs.
The store is one PostgreSQL database; each gateway has a KIMIFLOW_HOME of its own with a copy of
the key secret.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kimiflow.sim import Simulator
from tests.gateway.conftest import ADMIN_TOKEN
from tests.gateway.procs import GatewayCluster, GatewayProcess, Process
from tests.redis_server import RedisServer, free_port

BODY: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 16}
WINDOW = 60.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free TCP port for one test, so the default namespace starts empty."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def cluster_factory(tmp_path: Path, postgres_db: str) -> Iterator[Callable[[Simulator], GatewayCluster]]:
    clusters: list[GatewayCluster] = []

    def make(sim: Simulator) -> GatewayCluster:
        cluster = GatewayCluster(tmp_path / f"cluster{len(clusters)}", postgres_db, sim.base_url, sim.api_key,
                                 ADMIN_TOKEN)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


# -- the load generator ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One request of the load: which key, through which gateway, what came back and when."""

    key: str
    gateway: int
    status: int
    sent: float
    received: float
    retry_after: str | None
    body: bytes


class Load:
    """Callers per key, each sending one request after another, the gateways taken in turn.

    A refused caller pauses ``pause`` seconds (not Retry-After: the point is to keep the gateways
    under pressure); everything stops at ``max_requests`` or when ``run``'s time is up.
    """

    def __init__(self, gateways: Sequence[GatewayProcess], *, pause: float = 0.1, max_requests: int = 20_000) -> None:
        self.gateways = list(gateways)
        self.pause = pause
        self.max_requests = max_requests
        self.answers: list[Answer] = []
        self._turn = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_at = 0.0
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Load:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                           timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._http is not None
        await self._http.close()

    def start(self, name: str, key: str, callers: int, until: float) -> None:
        """``callers`` concurrent callers on ``key`` until monotonic time ``until``."""
        for _ in range(callers):
            self._tasks.append(asyncio.create_task(self._caller(name, key, until)))

    async def wait(self, timeout: float) -> None:
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)

    async def _caller(self, name: str, key: str, until: float) -> None:
        assert self._http is not None
        headers = {"Authorization": f"Bearer {key}"}
        while time.monotonic() < until and len(self.answers) < self.max_requests:
            n = next(self._turn) % len(self.gateways)
            sent = time.monotonic()
            async with self._http.post(self.gateways[n].base_url + "/chat/completions", json=BODY,
                                       headers=headers) as response:
                body = await response.read()
            self.answers.append(Answer(name, n, response.status, sent, time.monotonic(),
                                       response.headers.get("Retry-After"), b"" if response.status == 200 else body))
            if response.status != 200:
                await asyncio.sleep(self.pause)

    def of(self, key: str, status: int | None = None) -> list[Answer]:
        return [a for a in self.answers if a.key == key and (status is None or a.status == status)]


class Admissions:
    """The simulator's admitted requests (arrived minus refused) sampled every ``every`` seconds."""

    def __init__(self, sim: Simulator, every: float = 0.02) -> None:
        self.sim = sim
        self.every = every
        self.samples: list[tuple[float, int]] = []

    def now(self) -> int:
        return self.sim.stats.requests - self.sim.stats.rate_limited

    async def sample(self, until: float) -> None:
        while time.monotonic() < until:
            self.samples.append((time.monotonic(), self.now()))
            await asyncio.sleep(self.every)
        self.samples.append((time.monotonic(), self.now()))

    def at(self, moment: float) -> int:
        """Admissions counted by the last sample taken no later than ``moment``."""
        return max((n for t, n in self.samples if t <= moment), default=0)

    def busiest(self, span: float) -> int:
        """The most admissions certainly inside one ``span``-second window (between two samples)."""
        best, j = 0, 0
        for i, (start, before) in enumerate(self.samples):
            j = max(j, i)
            while j + 1 < len(self.samples) and self.samples[j + 1][0] <= start + span:
                j += 1
            best = max(best, self.samples[j][1] - before)
        return best


def most_in_one_window(answers: Sequence[Answer], span: float = WINDOW) -> int:
    """The most of ``answers`` certainly admitted inside one ``span``-second window.

    Each was admitted somewhere between ``sent`` and ``received``; the window opening at one's
    ``sent`` surely holds every one sent no earlier and answered before it closes. (A lower bound:
    it never counts a request the gateways might have admitted outside the window.)
    """
    ordered = sorted(answers, key=lambda a: a.sent)
    return max((sum(1 for b in ordered[i:] if b.received < a.sent + span) for i, a in enumerate(ordered)), default=0)


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


def batch_lines(path: Path, count: int) -> Path:
    lines = (json.dumps({"custom_id": f"line-{n}", "prompt": f"第{n}张工单：请分类。"}, ensure_ascii=False)
             for n in range(count))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def done_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.exists() else 0


# -- 1 + 2: one key's RPM and the account's tier, across three gateways and a batch ---------------

LOAD_SECONDS = 65.0
ACCOUNT_RPM = 196
"""Tier 1's 200 RPM less kimiflow's 2 % margin (``RateLimits.margin``): what the gateways fill."""
BATCH_CEILING = 177
"""The batch class fills at most 90 % of that (``PRIORITY_SHARE``): 196 - floor(19.6)."""


@pytest.mark.timeout(180)
def test_three_gateways_and_a_batch_share_one_keys_rpm_and_one_accounts_tier(
    tmp_path: Path, sim_factory: Callable[..., Simulator], cluster_factory: Callable[[Simulator], GatewayCluster],
    redis_server: RedisServer,
) -> None:
    """Key A (100 RPM) gets 100 in the first minute through three gateways, never 101 in 60 s; key B
    (unlimited) and a ``kimiflow batch`` on the same Kimi key fill the account: >= 95 % of tier 1's
    200 RPM reaches the simulator, and not one 429 comes back from it.

    Key A starts first: until it has its 100 the account has room for all of them (it is the key's
    limit under test, not the account's). Then the batch starts, and once it has a request through,
    key B's callers join: from then on the account is the bottleneck.
    """
    sim = sim_factory(tier=1, seed=21)
    cluster = cluster_factory(sim)
    key_a = cluster.create_key("key-a", rpm=100)
    key_b = cluster.create_key("key-b")
    gateways = cluster.start(3, "--tier", "1", "--redis", redis_server.url)
    source, output = batch_lines(tmp_path / "tickets.jsonl", 600), tmp_path / "classified.jsonl"
    admissions = Admissions(sim)

    async def run() -> tuple[float, float, list[Answer], Process]:
        async with Load(gateways) as load:
            t0 = time.monotonic()
            end = t0 + LOAD_SECONDS
            sampler = asyncio.create_task(admissions.sample(end))
            load.start("a", key_a, 8, end)
            await until(lambda: len(load.of("a", 200)) >= 100, 15, "key A's first 100 requests")
            batch = cluster.run("batch", ["batch", str(source), "-o", str(output), "--tier", "1", "--limits", redis_server.url,
                                  "-m", "moonshot-v1-8k", "--max-tokens", "16", "--quiet"])
            await until(lambda: admissions.now() > len(load.of("a", 200)), 20, "the batch's first request")
            b_start = time.monotonic()
            load.start("b", key_b, 12, end)
            await load.wait(end - time.monotonic() + 30)
            await sampler
        return t0, b_start, load.answers, batch

    t0, b_start, answers, batch = asyncio.run(run())
    batch_exit = batch.stop(signal.SIGINT, timeout=40)
    a_all = [a for a in answers if a.key == "a"]
    a_ok = [a for a in a_all if a.status == 200]
    b_all = [a for a in answers if a.key == "b"]
    first_minute = [a for a in a_ok if a.sent < t0 + WINDOW]
    b_first_minute = [a for a in b_all if a.status == 200 and a.sent < t0 + WINDOW]
    batch_first_minute = admissions.at(t0 + WINDOW) - len(first_minute) - len(b_first_minute)
    figures = {
        "key A 200s in the first 60 s": len(first_minute), "key A most in one 60 s window": most_in_one_window(a_ok),
        "key A requests": len(a_all), "key B 200s": sum(a.status == 200 for a in b_all), "key B requests": len(b_all),
        "sim admitted, busiest 60 s": admissions.busiest(WINDOW), "sim 429s": sim.stats.rate_limited,
        "sim by status": dict(sim.stats.by_status), "batch lines done": done_lines(output), "batch exit": batch_exit,
        "key B joined after (s)": round(b_start - t0, 2), "key B 200s in the first 60 s": len(b_first_minute),
        "batch admitted in the first 60 s": batch_first_minute,
    }
    print(figures)
    assert 99 <= len(first_minute) <= 101, figures
    assert {a.gateway for a in first_minute} == {0, 1, 2}, "key A's answers did not come from all three gateways"
    assert most_in_one_window(a_ok) <= 100, figures
    refused = [a for a in a_all + b_all if a.status != 200]
    assert refused and all(a.status == 429 and a.retry_after and int(a.retry_after) >= 1 for a in refused), \
        {(a.status, a.retry_after, a.body[:200]) for a in refused if a.status != 429 or not a.retry_after}
    assert sim.stats.rate_limited == 0 and sim.stats.by_status.get(429, 0) == 0, figures
    assert admissions.busiest(WINDOW) >= 0.95 * 200, figures
    assert done_lines(output) >= 1 and batch_exit == 130, (figures, batch.stderr()[-2000:])  # 130: stopped by Ctrl-C
    # Near the limit the batch yields first: it stops at its ceiling (key A's 100 came before it),
    # and key B's interactive requests take the rest of the account's minute. (1 for the edges.)
    assert len(first_minute) + batch_first_minute <= BATCH_CEILING + 1, figures
    assert len(b_first_minute) >= ACCOUNT_RPM - BATCH_CEILING - 1, figures


# -- helpers for the short tests ------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def error_type(self) -> str:
        try:
            return str(json.loads(self.body)["error"]["type"])
        except (ValueError, KeyError, TypeError):
            return ""

    def message(self) -> str:
        try:
            return str(json.loads(self.body)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            return ""


async def ask(http: aiohttp.ClientSession, gateway: GatewayProcess, key: str, **extra: Any) -> Reply:
    async with http.post(gateway.base_url + "/chat/completions", json={**BODY, **extra},
                         headers={"Authorization": f"Bearer {key}"}) as response:
        return Reply(response.status, dict(response.headers), await response.read())


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


# -- 3: a replica killed while it holds a key's concurrency slots ---------------------------------

LEASE_SECONDS = 3.0


@pytest.mark.timeout(90)
def test_a_killed_replicas_slots_come_back_within_the_lease_time(
    sim_factory: Callable[..., Simulator], cluster_factory: Callable[[Simulator], GatewayCluster],
    redis_server: RedisServer,
) -> None:
    """Four slow streams hold a key's four slots through X; ``kill -9`` X: until the lease ends Y
    refuses with 429 (concurrency), then the slots are free again, all four; other keys never stop."""
    from kimiflow.sim import FAULT_HEADER

    sim = sim_factory(tier=1, seed=31)
    cluster = cluster_factory(sim)
    narrow = cluster.create_key("narrow", concurrency=4)
    other = cluster.create_key("other")
    x, y, z = cluster.start(3, "--tier", "1", "--redis", redis_server.url, "--lease-seconds", str(LEASE_SECONDS))
    slow = {"stream": True, "max_tokens": 400}
    trickle = {FAULT_HEADER: "trickle;interval=0.5"}  # a token every half second: a stream of minutes

    async def open_stream(http: aiohttp.ClientSession, gateway: GatewayProcess) -> aiohttp.ClientResponse:
        response = await http.post(gateway.base_url + "/chat/completions", json={**BODY, **slow},
                                   headers={"Authorization": f"Bearer {narrow}", **trickle})
        assert response.status == 200, await response.text()
        assert await response.content.readany()  # upstream bytes flow: the slot is taken
        return response

    async def run() -> dict[str, Any]:
        async with session() as http:
            held = [await open_stream(http, x) for _ in range(4)]
            busy = await ask(http, y, narrow)
            assert busy.status == 429 and "concurrency" in busy.message() and busy.headers.get("Retry-After"), busy
            x.kill()
            killed = time.monotonic()
            for response in held:
                response.close()
            for gateway in (y, z):  # the other replicas serve on: another key is not held up at all
                assert (await ask(http, gateway, other)).status == 200
            refused: list[tuple[float, Reply]] = []
            while (reply := await ask(http, (y, z)[len(refused) % 2], narrow)).status != 200:
                refused.append((time.monotonic() - killed, reply))
                assert time.monotonic() - killed < LEASE_SECONDS + 2.0, f"the slots did not come back: {refused[-1]}"
                await asyncio.sleep(0.1)
            back = time.monotonic() - killed
            # All four slots are back: four streams at once through the survivors.
            again = [await open_stream(http, (y, z)[n % 2]) for n in range(4)]
            fifth = await ask(http, y, narrow)
            for response in again:
                response.close()
            return {"refused": refused, "back": back, "fifth": fifth}

    outcome = asyncio.run(run())
    refused: list[tuple[float, Reply]] = outcome["refused"]
    print({"slots back after (s)": round(outcome["back"], 2), "refusals before": len(refused),
           "first refusal after (s)": round(refused[0][0], 2) if refused else None})
    # The lease was last renewed at most a third of its time before the kill: it held at least 2 s.
    assert refused and refused[-1][0] >= LEASE_SECONDS * 2 / 3 - 0.2, refused[-1:]
    assert all(r.status == 429 and "concurrency" in r.message() and r.headers.get("Retry-After") for _, r in refused)
    assert outcome["back"] <= LEASE_SECONDS + 1.0
    assert outcome["fifth"].status == 429 and "concurrency" in outcome["fifth"].message()
    assert sim.stats.rate_limited == 0


# -- 4: Redis goes away ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_without_redis_fail_closed_refuses_with_503_and_local_share_serves_a_third(
    sim_factory: Callable[..., Simulator], cluster_factory: Callable[[Simulator], GatewayCluster],
    redis_server: RedisServer,
) -> None:
    """Redis stopped: a fail-closed gateway answers 503 + Retry-After and sends nothing to Kimi, and
    serves again once Redis is back on its port; a local-share gateway (--replicas 3) keeps serving a
    30 RPM key at 10 RPM, its third, and says so with a WARNING on stderr."""
    sim = sim_factory(tier=1, seed=41)
    cluster = cluster_factory(sim)
    closed_key = cluster.create_key("closed")
    shared_key = cluster.create_key("shared", rpm=30)
    common = ("--tier", "1", "--redis", redis_server.url)
    closed, = cluster.start(1, *common, "--redis-unavailable", "fail-closed")
    local, = cluster.start(1, *common, "--redis-unavailable", "local-share", "--replicas", "3")

    async def run() -> dict[str, Any]:
        async with session() as http:
            assert (await ask(http, closed, closed_key)).status == 200
            assert (await ask(http, local, shared_key)).status == 200
            redis_server.stop()
            before = sim.stats.requests
            down = [await ask(http, closed, closed_key) for _ in range(3)]
            reached = sim.stats.requests - before
            shared = [await ask(http, local, shared_key) for _ in range(15)]
            redis_server.start()
            restarted = time.monotonic()
            while (reply := await ask(http, closed, closed_key)).status != 200:
                assert reply.status == 503 and time.monotonic() - restarted < 10, reply
                await asyncio.sleep(0.2)
            return {"down": down, "reached": reached, "shared": shared, "back": time.monotonic() - restarted}

    outcome = asyncio.run(run())
    down: list[Reply] = outcome["down"]
    shared: list[Reply] = outcome["shared"]
    print({"fail-closed answers": [r.status for r in down], "back after restart (s)": round(outcome["back"], 2),
           "local-share answers": [r.status for r in shared]})
    assert all(r.status == 503 and int(r.headers["Retry-After"]) >= 1 for r in down), down
    assert outcome["reached"] == 0, "a fail-closed gateway sent requests to Kimi without its limits"
    assert [r.status for r in shared] == [200] * 10 + [429] * 5, [(r.status, r.message()) for r in shared]
    assert all(r.headers.get("Retry-After") for r in shared[10:])
    warnings = [line for line in local.stderr().splitlines() if " WARNING kimiflow.gateway.shared " in line]
    assert any("unreachable" in line and "divided by 3" in line for line in warnings), local.stderr()[-2000:]


# -- 5: key changes through one replica reach the others ------------------------------------------


@pytest.mark.timeout(60)
def test_a_key_changed_or_revoked_through_replica_a_applies_on_replica_c_within_a_second(
    sim_factory: Callable[..., Simulator], cluster_factory: Callable[[Simulator], GatewayCluster],
    redis_server: RedisServer,
) -> None:
    sim = sim_factory(tier=1, seed=51)
    cluster = cluster_factory(sim)
    key = cluster.create_key("crm", rpm=1)
    a, _, c = cluster.start(3, "--tier", "1", "--redis", redis_server.url)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def run() -> dict[str, float]:
        async with session() as http:
            assert (await ask(http, c, key)).status == 200
            full = await ask(http, c, key)
            assert full.status == 429 and "RPM" in full.message(), full
            async with http.patch(a.url + "/admin/keys/crm", json={"rpm": 5}, headers=admin) as response:
                assert response.status == 200, await response.text()
            changed = time.monotonic()
            while (reply := await ask(http, c, key)).status != 200:
                assert reply.status == 429 and time.monotonic() - changed < 1.0, "the new RPM did not reach C in 1 s"
                await asyncio.sleep(0.05)
            updated = time.monotonic() - changed
            assert reply.headers.get("x-ratelimit-limit-requests") == "5", reply.headers
            async with http.delete(a.url + "/admin/keys/crm", headers=admin) as response:
                assert response.status == 200, await response.text()
            revoked = time.monotonic()
            while (reply := await ask(http, c, key)).status != 401:
                assert reply.status in (200, 429) and time.monotonic() - revoked < 1.0, \
                    "the revocation did not reach C in 1 s"
                await asyncio.sleep(0.05)
            return {"rpm change (s)": round(updated, 3), "revocation (s)": round(time.monotonic() - revoked, 3)}

    print(asyncio.run(run()))
