"""The client's TPM charge equals the simulator's (which charges as Kimi does), and run_batch uses any Limiter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kimiflow import AsyncKimi
from kimiflow.batch import run_batch
from kimiflow.limits import Charge, Lease, LeaseAdmission, Limiter, RateLimits, request_charge
from kimiflow.sim import SimConfig, Simulator
from kimiflow.types.chat import Usage

from ..batch.conftest import read_jsonl, write_jsonl


@pytest.mark.parametrize(("model", "budget"), [("kimi-k3", 131_072), ("kimi-k2.6", 32_768),
                                                ("moonshot-v1-8k", 1024)])
async def test_a_request_without_max_tokens_is_charged_what_the_simulator_charges(model: str, budget: int) -> None:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "总结这张工单：打印机卡纸"}]}
    charge = request_charge(body)
    assert charge.max_tokens == budget
    async with Simulator(SimConfig(tier=5, seed=4)) as sim, AsyncKimi(api_key=sim.api_key,
                                                                      base_url=sim.base_url) as client:
        resp = await client.chat.completions.create(**body)
        assert sim.limiter.tokens_this_minute(sim.api_key) == charge.tokens
    assert resp.usage is not None and resp.usage.completion_tokens < budget
    # Settled, the charge keeps the whole budget: Kimi does not refund the unused output.
    assert charge.settled(resp.usage) == resp.usage.prompt_tokens + budget == charge.tokens


class RecordingLimiter:
    """A Limiter of the test's own (as a Redis one would be): unlimited, records every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.settled: list[int] = []
        self.open = 0

    @property
    def limits(self) -> RateLimits:
        return RateLimits(concurrency=3, rpm=10_000, tpm=10**9)

    async def acquire(self, charge: Charge) -> Lease:
        self.calls.append("acquire")
        self.open += 1
        return Lease(charge, handle=len(self.calls))

    async def try_acquire(self, charge: Charge) -> LeaseAdmission:
        return LeaseAdmission(await self.acquire(charge))

    async def settle(self, lease: Lease, usage: Usage | None) -> None:
        self.calls.append("settle")
        self.settled.append(lease.charge.settled(usage))

    async def release(self, lease: Lease) -> None:
        self.calls.append("release")
        self.open -= 1

    async def report_rate_limited(self, retry_after: float | None = None) -> None:
        self.calls.append("rate_limited")


async def test_run_batch_paces_through_any_limiter_and_charges_like_the_simulator(tmp_path: Path) -> None:
    limiter = RecordingLimiter()
    assert isinstance(limiter, Limiter)
    rows = [{"custom_id": f"k{i}", "prompt": f"问题 {i}"} for i in range(5)]  # no max_tokens: kimi-k3's default
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    async with Simulator(SimConfig(tier=5, seed=6)) as sim:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key=sim.api_key, base_url=sim.base_url,
                                  limiter=limiter, model="kimi-k3")
        sim_charged = sim.limiter.tokens_this_minute(sim.api_key)
    assert summary.succeeded == 5 and len(read_jsonl(tmp_path / "out.jsonl")) == 5
    assert limiter.calls.count("acquire") == limiter.calls.count("settle") == limiter.calls.count("release") == 5
    assert limiter.open == 0
    assert sum(limiter.settled) == sim_charged and min(limiter.settled) > 131_072
    assert summary.limits["concurrency"] == 3
