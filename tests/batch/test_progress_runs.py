"""What the runner tells the progress display: ticks while waiting, earlier runs' figures on resume."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from kimiflow.batch.progress import PlainProgress
from kimiflow.batch.runner import run_batch

from .conftest import Reply, ScriptedServer, completion, error_body, prompts, write_jsonl

MODEL = "moonshot-v1-8k"


async def test_plain_progress_prints_while_the_run_waits(tmp_path: Path) -> None:
    now = [0.0]

    async def slow(body: dict[str, Any]) -> Reply:
        now[0] += 25.0  # the display's clock: two intervals pass while this request is out
        await asyncio.sleep(0.3)
        return 200, completion()

    out = io.StringIO()
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    async with ScriptedServer(slow) as server:
        await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000", base_url=server.base_url,
                        tier=5, model=MODEL, progress=PlainProgress(out, interval=10.0, clock=lambda: now[0]),
                        heartbeat_seconds=0.02)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("batch:")]
    assert lines[0].startswith("batch: 0/1 done")
    assert lines[1].startswith("batch: 0/1 done")  # printed while waiting, before anything finished
    assert lines[-1].startswith("batch: 1/1 done")


async def test_resume_progress_starts_from_the_journal_tokens_and_cost(tmp_path: Path) -> None:
    async def half_fail(body: dict[str, Any]) -> Reply:
        n = int(body["messages"][-1]["content"].split()[-1])
        return (200, completion(prompt_tokens=10, completion_tokens=4)) if n < 2 else (500, error_body("x", "y"))

    src = write_jsonl(tmp_path / "in.jsonl", prompts(4))
    kw: dict[str, Any] = {"api_key": "sk-test-key-0000", "tier": 5, "model": MODEL, "max_attempts": 1}
    async with ScriptedServer(half_fail) as server:
        first = await run_batch(src, tmp_path / "out.jsonl", base_url=server.base_url, **kw)
    assert first.succeeded == 2 and first.total_tokens == 28 and first.cost_cny > 0
    out = io.StringIO()
    async with ScriptedServer() as server:
        await run_batch(src, tmp_path / "out.jsonl", base_url=server.base_url, retry_failed=True,
                        progress=PlainProgress(out, interval=1000.0), **kw)
    start = out.getvalue().splitlines()[0]
    assert start.startswith("batch: 2/4 done, 0 failed") and "28 tokens" in start
    assert f"¥{first.cost_cny:.4f}" in start


async def test_defaulted_tier_0_notes_how_long_the_batch_will_take(tmp_path: Path) -> None:
    stop = asyncio.Event()

    class Notes(PlainProgress):
        def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
            super().advance(ok=ok, tokens=tokens, cost_cny=cost_cny)
            stop.set()  # the projection is a note, the run goes on: one request finished

    out = io.StringIO()
    src = write_jsonl(tmp_path / "in.jsonl", prompts(3000))
    async with ScriptedServer() as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", api_key="sk-test-key-0000", base_url=server.base_url,
                                  model=MODEL, tier_defaulted=True, stop=stop, progress=Notes(out))
    # Tier 0 is 3 RPM, used in full (the margin takes whole units only): 3000 / 3 min = about 17 hours.
    assert ("no tier= given, so tier 0 limits apply (1 in flight, 3 requests/min): 3,000 request(s) will take "
            "about 17 hours; pass tier=N for your account's tier") in out.getvalue()
    assert summary.succeeded == 1
