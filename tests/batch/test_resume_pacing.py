"""A resume right after a stop counts the last minute's sends, so it does not burst into 429s."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kimiflow.batch.journal import Journal
from kimiflow.batch.progress import NullProgress
from kimiflow.batch.runner import run_batch
from kimiflow.limits import RateLimits

from .conftest import ScriptedServer, prompts, write_jsonl

MODEL = "moonshot-v1-8k"


async def test_resume_within_the_minute_sends_only_what_the_window_has_left(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(12))
    out = tmp_path / "out.jsonl"
    limits = RateLimits(concurrency=2, rpm=11, tpm=10**7, margin=0.0)
    stop = asyncio.Event()

    class StopAfterSix(NullProgress):
        done = 0

        def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
            self.done += 1
            if self.done >= 6:
                stop.set()

    async with ScriptedServer() as server:
        first = await run_batch(src, out, api_key="sk-test-key-0000", base_url=server.base_url, limits=limits,
                                model=MODEL, stop=stop, progress=StopAfterSix())
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        sent_before = len(journal.sent_since(0.0))
    assert first.succeeded >= 6 and sent_before == first.succeeded  # nothing left in flight

    now = [0.0]
    waits: list[tuple[float, int]] = []

    async with ScriptedServer() as server:

        async def sleep(seconds: float) -> None:
            waits.append((seconds, len(server.received)))
            now[0] += seconds
            await asyncio.sleep(0)

        resumed = await run_batch(src, out, api_key="sk-test-key-0000", base_url=server.base_url, limits=limits,
                                  model=MODEL, clock=lambda: now[0], sleep=sleep)
    assert resumed.succeeded == 12
    # 11 a minute, `sent_before` of them already used by the stopped run a moment ago: only the rest
    # go before the limiter waits for the old sends to leave the window.
    long_waits = [(seconds, sent) for seconds, sent in waits if seconds > 30]
    assert long_waits, f"the resume never waited for the window: {waits}"
    assert long_waits[0][1] == 11 - sent_before


async def test_a_request_waiting_in_the_limiter_is_not_recorded_as_sent(tmp_path: Path) -> None:
    """The journal's send times are the real sends: a resume seeds its window from them."""
    src = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    limits = RateLimits(concurrency=3, rpm=2, tpm=10**7, margin=0.0)
    stop = asyncio.Event()
    seen: dict[str, object] = {}

    async def sleep(seconds: float) -> None:
        # The third request is waiting for the RPM window: look at the journal now, then stop the run.
        if "statuses" not in seen:
            with Journal.open(tmp_path / "out.journal.sqlite") as journal:
                seen["statuses"] = journal.counts()
                seen["sent"] = len(journal.sent_since(0.0))
            stop.set()
        await asyncio.sleep(0)

    async with ScriptedServer() as server:
        summary = await run_batch(src, out, api_key="sk-test-key-0000", base_url=server.base_url, limits=limits,
                                  model=MODEL, stop=stop, sleep=sleep, progress=NullProgress())
    assert seen["sent"] == 2  # two sent (the second may still be on the wire), the third only waited
    statuses = seen["statuses"]
    assert isinstance(statuses, dict) and statuses["pending"] == 1 and statuses["in_flight"] <= 1
    assert summary.succeeded == 2 and summary.pending == 1
