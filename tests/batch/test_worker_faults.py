"""One bad request never stops the run, a run that must stop stops cleanly, and lines cannot set client options.

Each test goes through ``run_batch`` (or the real command) against the simulator or a small hostile
server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kimiflow import AsyncKimi
from kimiflow.batch import BatchInputError, BatchOptions, run_batch
from kimiflow.batch.progress import NullProgress
from kimiflow.batch.summary import COMPLETED, INPUT_CHANGED, STORE_FAILED
from kimiflow.core.errors import InvalidArgumentError
from kimiflow.limits import RateLimits
from kimiflow.sim import Simulator

from .conftest import completion, prompts, read_jsonl, write_jsonl

MODEL = "moonshot-v1-8k"
KEY = "sk-test-key-0000"


async def no_sleep(seconds: float) -> None:
    return None


class HostileServer:
    """A chat endpoint that answers 200 with a truncated JSON body for prompts containing ``torn``
    (``torn-once``: only the first time), and records every request body it receives."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.torn_seen: set[str] = set()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        prompt = str(body["messages"][-1]["content"])
        whole = json.dumps(completion()).encode()
        if "torn" in prompt and (prompt not in self.torn_seen or "once" not in prompt):
            self.torn_seen.add(prompt)
            return web.Response(body=whole[: len(whole) // 2], content_type="application/json")
        return web.Response(body=whole, content_type="application/json", headers={"Msh-Request-Id": "req-1"})

    async def __aenter__(self) -> HostileServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    async with HostileServer() as server:
        yield server


async def test_a_malformed_200_is_retried_like_a_5xx_then_becomes_a_failed_line(
    tmp_path: Path, hostile: HostileServer
) -> None:
    rows = [*prompts(6), {"custom_id": "once", "prompt": "torn once"}, {"custom_id": "always", "prompt": "torn"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = await asyncio.wait_for(run_batch(
        src, tmp_path / "out.jsonl", api_key=KEY, base_url=hostile.base_url, tier=5, model=MODEL,
        max_attempts=3, sleep=no_sleep), timeout=60)
    assert summary.status == COMPLETED and summary.succeeded == 7 and summary.failed == 1
    done = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert done["once"]["attempts"] == 2
    (failure,) = read_jsonl(tmp_path / "out.errors.jsonl")
    assert failure["custom_id"] == "always" and failure["attempts"] == 3
    assert failure["reason"].startswith("gave up after 3 attempt(s): MalformedResponseError")
    assert (tmp_path / "out.summary.json").exists()


async def test_a_request_larger_than_the_tpm_limit_is_a_failed_line_and_the_run_goes_on(
    tmp_path: Path, fresh_sim: Simulator
) -> None:
    rows = [*prompts(4), {"custom_id": "huge", "prompt": "x", "max_tokens": 5000}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = await asyncio.wait_for(run_batch(
        src, tmp_path / "out.jsonl", api_key=fresh_sim.api_key, base_url=fresh_sim.base_url,
        limits=RateLimits(concurrency=4, rpm=1000, tpm=2000), model=MODEL), timeout=60)
    assert summary.succeeded == 4 and summary.failed == 1 and summary.pending == 0
    (failure,) = read_jsonl(tmp_path / "out.errors.jsonl")
    assert failure["custom_id"] == "huge" and "can never fit the TPM limit of 2000" in failure["reason"]
    assert failure["error"]["code"] == "RequestTooLargeError" and failure["attempts"] == 0
    assert failure["reason"].startswith("RequestTooLargeError: ")  # an expected failure, not a surprise
    assert fresh_sim.stats.chat_completions == 4  # the huge one was never sent


class ExplodingKimi(AsyncKimi):
    """A real client whose calls raise an exception type no worker expects, for prompts containing ``boom``."""

    async def _call(self, spec: Any, options: Any) -> Any:
        if spec.body and b"boom" in spec.body:
            raise RuntimeError("kaboom from inside the client")
        return await super()._call(spec, options)


async def test_an_unexpected_exception_fails_that_request_and_the_run_still_ends_with_a_summary(
    tmp_path: Path, fresh_sim: Simulator
) -> None:
    """Every worker hits it: before, each one died and the run hung on a producer nobody drained."""
    rows = [{"custom_id": f"b{i}", "prompt": f"boom {i}"} for i in range(40)] + prompts(3)
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    async with ExplodingKimi(api_key=fresh_sim.api_key, base_url=fresh_sim.base_url) as client:
        summary = await asyncio.wait_for(run_batch(
            src, tmp_path / "out.jsonl", client=client, concurrency=4, rpm=10_000, tpm=10**8, model=MODEL),
            timeout=60)
    assert summary.status == COMPLETED and summary.failed == 40 and summary.succeeded == 3
    failures = read_jsonl(tmp_path / "out.errors.jsonl")
    assert all(r["reason"] == "unexpected error: RuntimeError: kaboom from inside the client" for r in failures)
    assert json.loads((tmp_path / "out.summary.json").read_text())["counts"]["failed"] == 40


async def test_a_full_disk_stops_the_run_cleanly_with_the_summary_and_the_rerun_finishes(
    tmp_path: Path, fresh_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(30))
    out = tmp_path / "out.jsonl"
    import kimiflow.batch.output as output_module

    real_write = os.write
    writes = [0]

    def write_until_full(fd: int, data: Any) -> int:
        writes[0] += 1
        if writes[0] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(output_module.os, "write", write_until_full)
    kw: dict[str, Any] = {"api_key": fresh_sim.api_key, "base_url": fresh_sim.base_url, "tier": 5, "model": MODEL}
    summary = await asyncio.wait_for(run_batch(src, out, **kw), timeout=60)
    assert summary.status == STORE_FAILED
    assert "No space left on device" in summary.message and "Free disk space" in summary.message
    assert summary.succeeded == 5 and summary.pending == 25 and summary.failed == 0
    assert json.loads((tmp_path / "out.summary.json").read_text())["status"] == STORE_FAILED
    monkeypatch.setattr(output_module.os, "write", real_write)
    again = await run_batch(src, out, **kw)
    assert again.status == COMPLETED and again.succeeded == 30
    ids = [r["custom_id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(30))


@pytest.mark.parametrize("edit", ["append a line", "reword lines keeping their ids and lengths"])
async def test_input_edited_in_place_during_the_run_stops_it_cleanly(
    tmp_path: Path, fresh_sim: Simulator, edit: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", prompts(600))
    edited = [False]

    class EditAfterFirst(NullProgress):
        def advance(self, *, ok: bool, tokens: int, cost_cny: float) -> None:
            if edited[0]:
                return
            edited[0] = True
            if edit == "append a line":
                with src.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"custom_id": "new", "prompt": "added later"}) + "\n")
            else:
                # Same ids, same line lengths: only the file's modification time tells.
                write_jsonl(src, [{**row, "prompt": row["prompt"].upper()} for row in prompts(600)])

    summary = await asyncio.wait_for(run_batch(
        src, tmp_path / "out.jsonl", api_key=fresh_sim.api_key, base_url=fresh_sim.base_url,
        concurrency=2, rpm=10**6, tpm=10**9, model=MODEL, progress=EditAfterFirst()), timeout=60)
    assert summary.status == INPUT_CHANGED and summary.pending > 0
    assert f"{src} changed while the batch ran" in summary.message
    assert "Restore the original file" in summary.message
    assert json.loads((tmp_path / "out.summary.json").read_text())["status"] == INPUT_CHANGED


@pytest.mark.parametrize("key", ["extra_headers", "extra_body", "extra_query", "timeout", "max_retries",
                                 "api_key", "base_url"])
async def test_client_only_keys_in_a_line_are_refused_with_the_line_number(
    tmp_path: Path, hostile: HostileServer, key: str
) -> None:
    bad = {"custom_id": "evil", "prompt": "hi", key: {"Authorization": "Bearer sk-other"} if "extra" in key else 1}
    src = write_jsonl(tmp_path / "in.jsonl", [*prompts(1), bad])
    with pytest.raises(BatchInputError, match=rf"line 2: '{key}' is an option of the Python client"):
        await run_batch(src, tmp_path / "out.jsonl", api_key=KEY, base_url=hostile.base_url, tier=5, model=MODEL)
    assert hostile.bodies == []


async def test_the_body_is_sent_as_the_request_body(tmp_path: Path, hostile: HostileServer) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,
                     "stream": False, "n": 1, "some_future_param": {"x": 1}}}
    src = write_jsonl(tmp_path / "in.jsonl", [line, {"custom_id": "s", "prompt": "x", "stream": True}])
    with pytest.raises(BatchInputError, match=r'line 2: "stream": true is not supported'):
        await run_batch(src, tmp_path / "out.jsonl", api_key=KEY, base_url=hostile.base_url, tier=5)
    src = write_jsonl(tmp_path / "in.jsonl", [line])
    summary = await run_batch(src, tmp_path / "out.jsonl", api_key=KEY, base_url=hostile.base_url, tier=5)
    assert summary.succeeded == 1
    assert hostile.bodies == [line["body"]]


async def test_options_are_given_one_way_and_messages_name_parameters(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"give the limits one way: .*got limits, tier"):
        BatchOptions(limits=RateLimits(rpm=5), tier=2)
    with pytest.raises(InvalidArgumentError, match=r"max_attempts= must be a whole number of at least 1, got 0"):
        BatchOptions(max_attempts=0)
    with pytest.raises(InvalidArgumentError, match=r"unknown option\(s\) tiers; known: .*tier,"):
        await run_batch(tmp_path / "in.jsonl", tmp_path / "out.jsonl", tiers=2)
    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    with pytest.raises(InvalidArgumentError, match=r"either options= or keyword options"):
        await run_batch(src, tmp_path / "out.jsonl", options=BatchOptions(), tier=1)
    with pytest.raises(InvalidArgumentError, match=r"are the same file; every file of a batch must be its own: choose another output=$"):
        await run_batch(src, src, tier=1, model=MODEL)
    write_jsonl(src, [{"prompt": "ok"}, "{bad"])
    with pytest.raises(BatchInputError, match=r"pass skip_invalid=True to run the valid ones only") as caught:
        await run_batch(src, tmp_path / "out.jsonl", tier=1, model=MODEL)
    assert "--" not in str(caught.value)
    options = BatchOptions(tier=1, rpm=50, model=MODEL)
    assert options.rate_limits == RateLimits.for_tier(1, rpm=50) and options.tier_defaulted is False
    assert BatchOptions(rpm=50).tier_defaulted is True
    policy = BatchOptions(max_attempts=4).retry_policy
    assert (policy.max_retries, policy.initial_delay, policy.max_delay) == (3, 0.5, 20.0)


async def test_retries_back_off_by_the_one_retry_policy_with_the_batch_knobs(tmp_path: Path) -> None:
    """0.5 s doubling, capped at 20 s (not the client's 8 s), jittered down by at most half."""
    from .conftest import Reply, ScriptedServer, error_body

    answers = [0]

    async def flaky(body: dict[str, Any]) -> Reply:
        answers[0] += 1
        return (500, error_body("server_error", "boom")) if answers[0] <= 7 else (200, completion())

    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    src = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    async with ScriptedServer(flaky) as server:
        summary = await run_batch(src, tmp_path / "out.jsonl", options=BatchOptions(
            api_key=KEY, base_url=server.base_url, tier=5, model=MODEL, max_attempts=8, sleep=record))
    assert summary.succeeded == 1 and summary.this_run.attempts == 8
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]
    assert len(slept) == len(bases)
    for delay, base in zip(slept, bases, strict=True):
        assert base * 0.5 <= delay <= base
