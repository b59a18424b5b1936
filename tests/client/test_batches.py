"""``client.batches`` on Kimi and AsyncKimi against the simulator: typed results, errors and retries."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kimiflow import AsyncKimi, Kimi
from kimiflow.core.errors import BadRequestError, InvalidArgumentError, NotFoundError
from kimiflow.sim import FAULT_HEADER, SimConfig, Simulator, run_in_thread
from kimiflow.types.batches import Batch


def requests_file(n: int) -> bytes:
    return "".join(json.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "kimi-k2.5", "max_tokens": 30,
                                        "messages": [{"role": "user", "content": f"第{i}个问题"}]}}) + "\n"
                   for i in range(n)).encode()


def test_sync_lifecycle_typed_and_content_downloads() -> None:
    with run_in_thread(SimConfig(seed=4, batch_hour_s=0.01)) as sim, \
            Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        upload = client.files.upload(requests_file(3), purpose="batch", filename="qs.jsonl")
        batch = client.batches.create(input_file_id=upload.id, completion_window="1d", metadata={"k": "v"})
        assert isinstance(batch, Batch) and batch.status == "validating" and not batch.is_terminal
        deadline = time.monotonic() + 10
        while not batch.is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.01)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.completion_window == "1d"
        assert batch.request_counts is not None and batch.request_counts.completed == 3
        assert batch.output_file_id and batch.error_file_id is None
        assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
        lines = [json.loads(x) for x in client.files.content(batch.output_file_id).splitlines()]
        assert [x["custom_id"] for x in lines] == ["q0", "q1", "q2"]
        assert client.files.content(upload.id) == requests_file(3).decode()
        listed = client.batches.list(limit=5)
        assert [b.id for b in listed.data] == [batch.id] and not listed.has_more


def test_sync_errors_go_through_the_error_tree() -> None:
    with run_in_thread(SimConfig(seed=4)) as sim, Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with pytest.raises(NotFoundError):
            client.batches.retrieve("batch_missing")
        upload = client.files.upload(requests_file(1), purpose="batch", filename="a.jsonl")
        with pytest.raises(BadRequestError, match="completion_window"):
            client.batches.create(input_file_id=upload.id, completion_window="90d")
        with pytest.raises(InvalidArgumentError, match="input_file_id"):
            client.batches.create(input_file_id="")
        with pytest.raises(InvalidArgumentError, match="limit="):
            client.batches.list(limit=0)


async def test_async_lifecycle_with_retries_and_cancel() -> None:
    async with Simulator(SimConfig(seed=5, batch_hour_s=30.0)) as sim:
        headers = {FAULT_HEADER: "500;times=2;key=batches"}
        sleeps: list[float] = []

        async def no_wait(seconds: float) -> None:
            sleeps.append(seconds)

        async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url, default_headers=headers,
                             sleep=no_wait, max_retries=3) as client:
            upload = await client.files.upload(requests_file(2), purpose="batch", filename="b.jsonl")
            batch = await client.batches.create(input_file_id=upload.id)
            # The first two requests carrying the key got a 500: the one retry loop sent them again.
            assert sim.stats.faults["500"] == 2 and len(sleeps) == 2
            assert sim.stats.batches_created == 1
            cancelled = await client.batches.cancel(batch.id)
            assert cancelled.status == "cancelling"
            await asyncio.sleep(0.8)  # cancelling lasts 60 simulated seconds: 0.5 s at 30 s an hour
            again = await client.batches.retrieve(batch.id)
            assert again.status == "cancelled" and again.cancelled_at is not None
            with pytest.raises(BadRequestError, match="is cancelled"):
                await client.batches.cancel(batch.id)
            page: Any = await client.batches.list()
            assert [b.status for b in page.data] == ["cancelled"]
