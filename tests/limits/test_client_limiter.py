"""``AsyncKimi(limiter=...)`` and ``Kimi(limiter=...)``: every chat call paced through a Limiter, against a real sim."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kimiflow import AsyncKimi, Kimi
from kimiflow.core.errors import InvalidArgumentError, RateLimitError
from kimiflow.limits import RateLimiter, RateLimits, RedisLimiter
from kimiflow.sim import SimConfig, Simulator, run_in_thread
from kimiflow.sim.config import LatencyModel

# Tier 0: 1 request in flight, 3 RPM. With 0.3 s per answer, 3 concurrent calls are sure to overlap.
SLOW = LatencyModel(ttft_s=0.3)
MSGS: Any = [{"role": "user", "content": "hi"}]
MODEL = "moonshot-v1-8k"


@pytest.fixture
def tier0_sim() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(tier=0, latency=SLOW, seed=5)) as server:
        yield server


async def _three_calls(sim: Simulator, limiter: RateLimiter | RedisLimiter | None) -> list[object]:
    async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url, max_retries=0, limiter=limiter) as client:
        calls = [client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=64) for _ in range(3)]
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), timeout=30)


async def test_async_client_paced_by_local_limiter_meets_no_429(tier0_sim: Simulator) -> None:
    limiter = RateLimiter(RateLimits.for_tier(0))
    results = await _three_calls(tier0_sim, limiter)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert tier0_sim.stats.rate_limited == 0 and tier0_sim.stats.chat_completions == 3
    assert limiter.state.in_flight == 0  # every lease released
    # Settled: the window holds the real prompt tokens + the whole budget of each call.
    prompt = sum(r.usage.prompt_tokens for r in results if not isinstance(r, BaseException) and r.usage)  # type: ignore[attr-defined]
    assert limiter.state._tokens.total == prompt + 3 * 64


async def test_the_same_calls_without_limiter_meet_429s(tier0_sim: Simulator) -> None:
    """The control: what the limiter prevents."""
    results = await _three_calls(tier0_sim, None)
    assert any(isinstance(r, RateLimitError) for r in results)
    assert tier0_sim.stats.rate_limited >= 1


async def test_async_client_paced_by_redis_limiter_meets_no_429(tier0_sim: Simulator, redis_url: str) -> None:
    async with RedisLimiter(redis_url, RateLimits.for_tier(0), namespace=f"t-{uuid.uuid4().hex[:12]}",
                            key=tier0_sim.api_key) as limiter:
        results = await _three_calls(tier0_sim, limiter)
    assert all(not isinstance(r, BaseException) for r in results), results
    assert tier0_sim.stats.rate_limited == 0


async def test_a_429_that_gets_through_is_reported_to_the_limiter(tier0_sim: Simulator) -> None:
    # A limiter that believes in a bigger tier than the account's lets 429s through; each is reported.
    limiter = RateLimiter(RateLimits.for_tier(3))
    results = await _three_calls(tier0_sim, limiter)
    refused = sum(isinstance(r, RateLimitError) for r in results)
    assert refused >= 1 and limiter.state.rate_limited_count == refused
    assert limiter.state.in_flight == 0


def test_sync_client_paced_from_threads_meets_no_429(tier0_sim: Simulator) -> None:
    limiter = RateLimiter(RateLimits.for_tier(0))
    with Kimi(api_key=tier0_sim.api_key, base_url=tier0_sim.base_url, max_retries=0, limiter=limiter) as client:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(client.chat.completions.create, model=MODEL, messages=MSGS, max_tokens=64)
                       for _ in range(3)]
            answers = [f.result(timeout=30) for f in futures]
        # A with_options() copy shares the limiter: a 4th call within the minute would wait, not 429.
        assert client.with_options(timeout=5)._limiter is limiter
    assert len(answers) == 3 and tier0_sim.stats.rate_limited == 0
    assert limiter.state.in_flight == 0


def test_sync_client_streams_are_admitted_too(tier0_sim: Simulator) -> None:
    limiter = RateLimiter(RateLimits.for_tier(0))
    with Kimi(api_key=tier0_sim.api_key, base_url=tier0_sim.base_url, max_retries=0, limiter=limiter) as client:
        for _ in range(2):
            with client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=16, stream=True) as stream:
                assert list(stream)
    assert limiter.state.admitted_count == 2 and limiter.state.in_flight == 0


def test_a_wrong_limiter_is_refused_clearly() -> None:
    with pytest.raises(InvalidArgumentError, match=r"must implement kimiflow\.limits\.Limiter"):
        AsyncKimi(api_key="sk-test", limiter=object())  # type: ignore[arg-type]


CHILD = textwrap.dedent("""
    import asyncio, sys
    from kimiflow import AsyncKimi
    from kimiflow.limits import RateLimits, RedisLimiter

    async def main(url, base, key, ns, n):
        async with RedisLimiter(url, RateLimits.for_tier(0), namespace=ns, key=key) as limiter:
            async with AsyncKimi(api_key=key, base_url=base, max_retries=0, limiter=limiter) as client:
                calls = [client.chat.completions.create(model="moonshot-v1-8k", max_tokens=32,
                         messages=[{"role": "user", "content": "hi"}]) for _ in range(n)]
                await asyncio.gather(*calls)
        print("ok", n)

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
""")


def test_two_processes_with_redis_limiter_keep_the_tier(tier0_sim: Simulator, redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ns = f"t-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), redis_url, tier0_sim.base_url, tier0_sim.api_key, ns,
                               str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for n in (2, 1)]
    outs = [p.communicate(timeout=60) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert out.startswith("ok")
    assert tier0_sim.stats.chat_completions == 3 and tier0_sim.stats.rate_limited == 0
