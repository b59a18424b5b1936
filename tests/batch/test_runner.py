"""run_batch against the simulator over loopback: pacing at a tier, faults, quota, stop and resume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kimiflow.batch.journal import Journal
from kimiflow.batch.progress import NullProgress, PlainProgress
from kimiflow.batch.runner import BatchInputError, run_batch
from kimiflow.batch.summary import COMPLETED, INTERRUPTED, QUOTA_EXCEEDED
from kimiflow.core.tiers import tier_limits
from kimiflow.limits import RateLimits
from kimiflow.sim import SimConfig, Simulator

from .conftest import prompts, read_jsonl, write_jsonl

MODEL = "moonshot-v1-8k"


def ids_of(path: Path) -> list[str]:
    return [r["custom_id"] for r in read_jsonl(path)]


async def test_small_batch_writes_output_errors_summary_and_journal(tmp_path: Path, fresh_sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(25))
    out = tmp_path / "out.jsonl"
    summary = await run_batch(src, out, api_key=fresh_sim.api_key, base_url=fresh_sim.base_url, tier=3,
                              model=MODEL)
    assert summary.status == COMPLETED and summary.succeeded == 25 and summary.failed == 0
    rows = read_jsonl(out)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(25))
    row = rows[0]
    assert row["response"]["status_code"] == 200 and row["error"] is None
    assert row["response"]["request_id"] and row["response"]["body"]["choices"][0]["message"]["content"]
    assert row["attempts"] == 1 and row["latency_ms"] >= 0 and row["cost_cny"] > 0
    assert (tmp_path / "out.errors.jsonl").read_text() == ""
    saved = (tmp_path / "out.summary.json").read_text()
    assert '"succeeded": 25' in saved and fresh_sim.api_key not in saved
    sim_stats = fresh_sim.stats
    assert summary.prompt_tokens == sim_stats.prompt_tokens
    assert summary.completion_tokens == sim_stats.completion_tokens
    assert summary.cost_cny == pytest.approx(sim_stats.cost_cny)
    assert summary.latency_ms_p50 is not None and summary.latency_ms_p95 is not None
    assert fresh_sim.api_key.encode() not in (tmp_path / "out.journal.sqlite").read_bytes()


async def test_rerunning_a_finished_batch_sends_nothing(tmp_path: Path, fresh_sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    out = tmp_path / "out.jsonl"
    kw = {"api_key": fresh_sim.api_key, "base_url": fresh_sim.base_url, "tier": 3, "model": MODEL}
    await run_batch(src, out, **kw)  # type: ignore[arg-type]
    served = fresh_sim.stats.requests
    again = await run_batch(src, out, **kw)  # type: ignore[arg-type]
    assert again.status == COMPLETED and again.this_run.sent == 0
    assert fresh_sim.stats.requests == served
    assert len(ids_of(out)) == 10


async def test_invalid_lines_stop_the_run_before_any_request(tmp_path: Path, fresh_sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [*prompts(3), "{oops", {"custom_id": "r0", "prompt": "dup"}])
    with pytest.raises(BatchInputError, match=r"line 4: invalid JSON[\s\S]*line 5: duplicate custom_id 'r0'"):
        await run_batch(src, tmp_path / "out.jsonl", api_key=fresh_sim.api_key, base_url=fresh_sim.base_url,
                        tier=3, model=MODEL)
    assert fresh_sim.stats.requests == 0
    summary = await run_batch(src, tmp_path / "out.jsonl", api_key=fresh_sim.api_key,
                              base_url=fresh_sim.base_url, tier=3, model=MODEL, skip_invalid=True)
    assert summary.succeeded == 3 and fresh_sim.stats.chat_completions == 3


async def test_changed_input_or_parameters_on_resume_are_refused(tmp_path: Path, fresh_sim: Simulator) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    kw = {"api_key": fresh_sim.api_key, "base_url": fresh_sim.base_url, "tier": 3}
    await run_batch(src, out, model=MODEL, **kw)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="parameters differ"):
        await run_batch(src, out, model="kimi-latest", **kw)  # type: ignore[arg-type]
    write_jsonl(src, prompts(4))
    with pytest.raises(Exception, match="input file changed"):
        await run_batch(src, out, model=MODEL, **kw)  # type: ignore[arg-type]


async def test_faults_end_in_success_or_the_errors_file_with_a_reason(tmp_path: Path) -> None:
    config = SimConfig(seed=5, fault_rates={"500": 0.05, "reset": 0.02, "429": 0.005, "429-retry-after": 0.005,
                                            "overloaded": 0.01, "503": 0.02})
    src = write_jsonl(tmp_path / "in.jsonl", prompts(400))
    out = tmp_path / "out.jsonl"
    async with Simulator(config) as sim:
        summary = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=3, model=MODEL,
                                  max_attempts=2, timeout=10)
        assert sim.stats.faults["500"] > 5 and sim.stats.faults["reset"] > 0 and sim.stats.rate_limited > 0
    ok, failed = ids_of(out), read_jsonl(tmp_path / "out.errors.jsonl")
    assert len(ok) == len(set(ok))
    assert not set(ok) & {r["custom_id"] for r in failed}
    assert sorted(ok + [r["custom_id"] for r in failed]) == sorted(f"r{i}" for i in range(400))
    assert summary.this_run.attempts > summary.this_run.sent  # transient failures were retried
    for record in failed:
        assert record["reason"].startswith("gave up after 2 attempt(s)")
        assert record["error"]["code"] and record["attempts"] == 2
    assert all(r["response"]["status_code"] == 200 for r in read_jsonl(out))
    assert summary.this_run.rate_limited > 0 and summary.status == COMPLETED
    assert summary.succeeded == len(ok) and summary.failed == len(failed)


async def test_retry_failed_reruns_only_the_failures(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(60))
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(seed=2, fault_rates={"500": 0.3})) as sim:
        first = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=3, model=MODEL,
                                max_attempts=1)
    assert first.failed > 0
    failures = read_jsonl(tmp_path / "out.errors.jsonl")
    assert all(r["reason"].startswith("gave up after 1 attempt(s): InternalServerError") for r in failures)
    assert all(r["response"]["status_code"] == 500 and r["response"]["request_id"] for r in failures)
    failed_ids = {r["custom_id"] for r in failures}
    async with Simulator(SimConfig(seed=2)) as sim:
        second = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=3, model=MODEL,
                                 retry_failed=True)
        assert sim.stats.chat_completions == len(failed_ids)
    assert second.succeeded == 60 and second.failed == 0
    assert sorted(ids_of(out)) == sorted(f"r{i}" for i in range(60))
    assert read_jsonl(tmp_path / "out.errors.jsonl") == []


async def test_quota_error_stops_the_run_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(200, max_tokens=200))
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(seed=3, balance=0.01)) as sim:
        summary = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=1, model=MODEL)
    assert summary.status == QUOTA_EXCEEDED and "quota" in summary.message
    assert summary.pending > 0 and summary.failed == 0
    assert summary.succeeded == len(ids_of(out)) == len(set(ids_of(out)))
    # Tier 3 for the resume: at tier 1 it would rightly wait out the minute the first run used
    # (its sends are counted on resume), and this fresh simulator does not need that.
    async with Simulator(SimConfig(seed=3)) as sim:
        resumed = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=3, model=MODEL)
        assert sim.stats.chat_completions == summary.pending
    assert resumed.status == COMPLETED and sorted(ids_of(out)) == sorted(f"r{i}" for i in range(200))


async def test_stop_takes_no_new_work_records_the_rest_and_resume_finishes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(300))
    out = tmp_path / "out.jsonl"
    stop = asyncio.Event()

    class StopAfter(PlainProgress):
        def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
            super().advance(ok=ok, tokens=tokens, cost_cny=cost_cny)
            if self.counts.done >= 40:
                stop.set()

    import io

    async with Simulator(SimConfig(seed=4, latency="realistic")) as sim:
        summary = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=1, model=MODEL,
                                  stop=stop, progress=StopAfter(io.StringIO()), grace_seconds=10,
                                  resume_command="kimiflow batch in.jsonl -o out.jsonl")
        served = sim.stats.chat_completions
    assert summary.status == INTERRUPTED
    assert 40 <= summary.succeeded < 300 and summary.pending == 300 - summary.succeeded
    assert "resume with: kimiflow batch" in summary.message
    # Requests in flight at the stop were allowed to finish: everything served is in the output.
    assert served == summary.succeeded
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        assert journal.counts()["in_flight"] == 0
    async with Simulator(SimConfig(seed=4)) as sim:
        resumed = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, tier=3, model=MODEL)
        assert sim.stats.chat_completions == 300 - summary.succeeded
    assert resumed.status == COMPLETED and sorted(ids_of(out)) == sorted(f"r{i}" for i in range(300))


SPEED = 20.0
"""Simulated seconds per real second: a tier's minute window passes in three real seconds."""


async def test_runs_at_the_tier_rpm_without_a_single_429(tmp_path: Path) -> None:
    """Tier 1 (200 RPM) on a shared clock running 20x: ≥ 90 % of the RPM, and no 429 from the server."""
    start = time.monotonic()

    def clock() -> float:
        return (time.monotonic() - start) * SPEED

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / SPEED)

    tier = tier_limits(1)
    # A scaled clock magnifies send jitter 20x (a busy 2-core machine delays a burst of sends by
    # 100 ms), so the guard is 3 tier-seconds (150 ms real) instead of the default 0.5 s.
    limits = RateLimits.for_tier(1, guard_seconds=3.0)
    per_window = 196  # 200 RPM less the 2 % margin
    n = 4 * per_window
    finished_at: list[float] = []

    class Recorder(NullProgress):
        def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
            finished_at.append(clock())

    src = write_jsonl(tmp_path / "in.jsonl", prompts(n))
    out = tmp_path / "out.jsonl"
    async with Simulator(SimConfig(tier=1, seed=9, clock=clock, sleep=sleep)) as sim:
        summary = await run_batch(src, out, api_key=sim.api_key, base_url=sim.base_url, limits=limits,
                                  model=MODEL, clock=clock, sleep=sleep, progress=Recorder())
        assert sim.stats.rate_limited == 0 and sim.stats.by_status.get(429, 0) == 0, sim.stats
    assert summary.status == COMPLETED and summary.succeeded == n and summary.this_run.rate_limited == 0
    # Sustained rate over two full windows after the first (whose burst any client gets for free):
    # from the first completion of window 2 to the first completion of window 4.
    first, last = finished_at[per_window], finished_at[3 * per_window]
    sustained_per_minute = 2 * per_window / (last - first) * 60.0
    assert sustained_per_minute >= 0.90 * tier.rpm, sustained_per_minute
    assert sustained_per_minute <= tier.rpm, sustained_per_minute
