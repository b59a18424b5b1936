"""Ctrl-C twice: requests on the wire are dropped, counted in the final message, and re-sent on resume."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path
from typing import Any

from kimiflow.batch.journal import Journal
from kimiflow.batch.progress import PlainProgress
from kimiflow.batch.runner import run_batch
from kimiflow.batch.summary import COMPLETED, INTERRUPTED

from .conftest import Reply, ScriptedServer, completion, prompts, write_jsonl

MODEL = "moonshot-v1-8k"


async def test_second_ctrl_c_says_how_many_in_flight_requests_were_dropped(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def hang_after_first(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["content"] != "question 0":
            await release.wait()
        return 200, completion()

    src = write_jsonl(tmp_path / "in.jsonl", prompts(10))
    out = tmp_path / "out.jsonl"
    shown = io.StringIO()
    async with ScriptedServer(hang_after_first) as server:

        async def press_ctrl_c_twice() -> None:
            for _ in range(500):  # 5 s at most
                if len(server.received) >= 5:  # the first request, then four in flight (concurrency 4)
                    break
                await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)

        presser = asyncio.create_task(press_ctrl_c_twice())
        summary = await asyncio.wait_for(
            run_batch(src, out, api_key="sk-test-key-0000", base_url=server.base_url, tier=5, concurrency=4,
                      model=MODEL, handle_signals=True, grace_seconds=30, progress=PlainProgress(shown)),
            timeout=10,
        )
        await presser
        release.set()
    assert summary.status == INTERRUPTED and summary.succeeded == 1 and summary.pending == 9
    expected = "aborted: 4 request(s) in flight were dropped (recorded as not done); they will be sent again"
    assert expected in summary.message and expected in shown.getvalue()
    with Journal.open(tmp_path / "out.journal.sqlite") as journal:
        assert journal.counts()["in_flight"] == 0
    async with ScriptedServer() as server:
        resumed = await run_batch(src, out, api_key="sk-test-key-0000", base_url=server.base_url, tier=5,
                                  model=MODEL)
        assert len(server.received) == 9
    assert resumed.status == COMPLETED and resumed.succeeded == 10
