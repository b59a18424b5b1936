"""Batch runs sharing one account's limits through Redis: together they stay under the tier, so 0 429s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kimiflow.batch import RateLimiter, RateLimits, run_batch
from kimiflow.cli.main import cli
from kimiflow.limits import Limiter, RedisLimiter
from kimiflow.sim import SimConfig, Simulator, run_in_thread
from kimiflow.sim.config import LatencyModel

from .conftest import prompts, read_jsonl, write_jsonl

# Tier 0 is 1 request in flight and 3 RPM: two runs of 2 + 1 requests fill the minute exactly, and
# with 0.3 s per answer two runs that keep their own books are sure to overlap.
SLOW = LatencyModel(ttft_s=0.3)


@pytest.fixture
def tier0_sim() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(tier=0, latency=SLOW, seed=3)) as server:
        yield server


async def two_runs(tmp_path: Path, sim: Simulator, limiters: list[Limiter]) -> list[int]:
    sizes = [2, 1]
    runs = []
    for n, (size, limiter) in enumerate(zip(sizes, limiters, strict=True)):
        src = write_jsonl(tmp_path / f"in{n}.jsonl", prompts(size))
        runs.append(run_batch(src, tmp_path / f"out{n}.jsonl", api_key=sim.api_key, base_url=sim.base_url,
                              limiter=limiter, model="moonshot-v1-8k", max_attempts=5))
    summaries = await asyncio.wait_for(asyncio.gather(*runs), timeout=60)
    return [s.succeeded for s in summaries]


async def test_two_batch_runs_on_one_redis_meet_no_429(tmp_path: Path, tier0_sim: Simulator, redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    limits = RateLimits.for_tier(0)
    async with RedisLimiter(redis_url, limits, namespace=namespace, key=tier0_sim.api_key, priority="batch") as a, \
            RedisLimiter(redis_url, limits, namespace=namespace, key=tier0_sim.api_key, priority="batch") as b:
        assert await two_runs(tmp_path, tier0_sim, [a, b]) == [2, 1]
    assert tier0_sim.stats.requests == 3
    assert tier0_sim.stats.rate_limited == 0 and tier0_sim.stats.by_status.get(429, 0) == 0
    assert len(read_jsonl(tmp_path / "out0.jsonl")) == 2 and len(read_jsonl(tmp_path / "out1.jsonl")) == 1


async def test_the_same_runs_keeping_their_own_books_meet_429s(tmp_path: Path, tier0_sim: Simulator) -> None:
    """The control: what the shared limits prevent."""
    limiters: list[Limiter] = [RateLimiter(RateLimits.for_tier(0)), RateLimiter(RateLimits.for_tier(0))]
    await two_runs(tmp_path, tier0_sim, limiters)
    assert tier0_sim.stats.rate_limited >= 1


def test_kimiflow_batch_limits_flag_paces_through_redis(tmp_path: Path, tier0_sim: Simulator, redis_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_BASE_URL", tier0_sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", tier0_sim.api_key)
    src = write_jsonl(tmp_path / "in.jsonl", prompts(2))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(out), "--tier", "0", "-m", "moonshot-v1-8k",
                                      "--limits", redis_url, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "completed: 2/2 succeeded" in result.output and len(read_jsonl(out)) == 2
    # The run's admissions are in Redis, under a hash of the key: a second run on the key sees them.
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        names = [k.decode() for k in client.scan_iter(match="kimiflow:*:rpm")]
        assert names and all(tier0_sim.api_key not in k for k in names)
        assert sum(int(v) for k in names for v in client.hvals(k)) >= 2
    finally:
        client.close()


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:6379/0", "need a redis://, rediss:// or unix:// URL"),
    ("redis://:hunter2@127.0.0.1:1/0", "Redis at redis://127.0.0.1:1/0 are unreachable"),
])
def test_a_bad_or_unreachable_limits_url_is_one_line_and_nothing_is_sent(
    tmp_path: Path, tier0_sim: Simulator, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("MOONSHOT_BASE_URL", tier0_sim.base_url)
    monkeypatch.setenv("MOONSHOT_API_KEY", tier0_sim.api_key)
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    result = CliRunner().invoke(cli, ["batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--tier", "0",
                                      "--limits", url, "--quiet"])
    assert result.exit_code == 1, result.output
    assert message in result.output and "hunter2" not in result.output
    assert result.output.strip().count("\n") == 0
    assert tier0_sim.stats.requests == 0


async def test_a_batch_sits_out_a_redis_restart_and_finishes_every_request(tmp_path: Path) -> None:
    from kimiflow.cli.batch import OUTAGE_WAIT

    from ..redis_server import RedisServer, free_port

    assert OUTAGE_WAIT >= 60  # the CLI's choice: a restart pauses the run, it does not fail the rest
    server = RedisServer(tmp_path, port=free_port()).start()
    src = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    try:
        async with Simulator(SimConfig(latency=LatencyModel(ttft_s=0.05), seed=2)) as sim, \
                RedisLimiter(server.url, RateLimits(concurrency=2, rpm=100_000, tpm=10**9), key=sim.api_key,
                             priority="batch", outage_wait=OUTAGE_WAIT) as limiter:
            async def restart() -> None:
                await asyncio.sleep(0.3)
                server.stop()
                await asyncio.sleep(1.5)
                server.start()

            restarting = asyncio.create_task(restart())
            summary = await asyncio.wait_for(run_batch(src, tmp_path / "out.jsonl", api_key=sim.api_key,
                                                       base_url=sim.base_url, limiter=limiter,
                                                       model="moonshot-v1-8k"), timeout=60)
            await restarting
        assert summary.succeeded == 30 and summary.failed == 0
        assert len(read_jsonl(tmp_path / "out.jsonl")) == 30
    finally:
        server.stop()
