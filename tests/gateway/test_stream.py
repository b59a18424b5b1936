"""Streams through the gateway: a caller that leaves cancels the upstream; every fault ends in one billed row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from kimiflow.sim import FAULT_HEADER, FAULT_NAMES, Simulator
from tests.gateway.conftest import RunningGateway

MODEL = "moonshot-v1-8k"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "讲一个关于流程集成的故事"}], "stream": True}


async def _wait_for(predicate: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.mark.parametrize("fault", ["trickle;interval=0.2", "stall;after=4"])
def test_caller_disconnect_cancels_upstream_within_1s(gateway: RunningGateway, sim: Simulator, fault: str) -> None:
    """Also while the upstream is silent (stall): nothing is written, yet the upstream is closed."""
    key = gateway.create_key("crm")

    async def run() -> float:
        async with aiohttp.ClientSession() as http:
            response = await http.post(gateway.base_url + "/chat/completions", json=BODY,
                                       headers={"Authorization": f"Bearer {key}", FAULT_HEADER: fault})
            got = b""
            while got.count(b"\n\n") < 4:
                got += await response.content.readany()
            assert sim.stats.in_flight == 1
            response.close()  # the caller goes away mid-stream
        return await _wait_for(lambda: sim.stats.in_flight == 0, 1.0)

    took = asyncio.run(run())
    assert took < 1.0
    gateway.flush()
    (row,) = gateway.gw.store.ledger_rows()
    assert row.ended == "client_gone" and row.usage_source == "estimated"
    assert row.completion_tokens >= 3 and row.cost_cny > 0  # what was delivered is billed, labelled an estimate


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_every_fault_ends_in_one_row_that_follows_the_billing_rules(
    gateway_factory: Callable[..., RunningGateway], sim: Simulator, fault: str
) -> None:
    gateway = gateway_factory(sim, upstream={"idle_timeout": 0.5})
    key = gateway.create_key("crm")
    header = f"{fault};after=4;interval=0.01" if fault != "stall" else "stall;after=4"

    async def run() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.post(gateway.base_url + "/chat/completions", json=BODY,
                                     headers={"Authorization": f"Bearer {key}", FAULT_HEADER: header}) as r:
                    return r.status, await r.read()
            except aiohttp.ClientPayloadError:
                return -1, b""

    status, body = asyncio.run(run())
    gateway.flush()
    rows = gateway.gw.store.ledger_rows()
    assert len(rows) == 1, rows
    row = rows[0]
    if row.status == 200 and row.ended == "ok":
        assert row.usage_source == "kimi" and body.endswith(b"data: [DONE]\n\n")
    elif row.status == 200:
        # Broken off after chunks went out: billed from what was delivered, never as zero.
        assert row.ended in ("upstream_cut", "upstream_error", "idle_timeout"), row
        assert row.usage_source == "estimated" and row.cost_cny > 0
        assert b"data: [DONE]" not in body
    else:
        # Refused before generation: the upstream's status passes through, nothing billed.
        assert row.status == status and row.ended == "upstream_error" and row.cost_cny == 0
    expected = {"cut": "upstream_cut", "error-event": "upstream_error", "stall": "idle_timeout",
                "trickle": "ok", "keepalive": "ok", "malformed": "ok"}
    if fault in expected:
        assert row.ended == expected[fault]
    assert sim.stats.in_flight == 0


def test_keepalive_comments_while_waiting_and_idle_timeout_ignores_them(
    gateway_factory: Callable[..., RunningGateway], sim: Simulator
) -> None:
    """Before the first event the caller hears comments; an upstream sending only comments still times out."""
    gateway = gateway_factory(sim, keepalive_interval=0.1, upstream={"idle_timeout": 0.6})
    key = gateway.create_key("crm")

    async def run(fault: str) -> tuple[bytes, float]:
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            async with http.post(gateway.base_url + "/chat/completions", json=BODY,
                                 headers={"Authorization": f"Bearer {key}", FAULT_HEADER: fault}) as r:
                return await r.read(), time.monotonic() - started

    body, took = asyncio.run(run("stall;after=0"))
    assert body.startswith(b": keep-alive\n\n") and body.count(b": keep-alive") >= 3 and b"data:" not in body
    assert took < 2.0
    body, took = asyncio.run(run("stall;after=3;keepalive=0.05"))
    assert body.count(b"data: ") == 3 and b"[DONE]" not in body
    assert took < 2.0  # the upstream's own keep-alives do not keep the request alive
    gateway.flush()
    assert [r.ended for r in gateway.gw.store.ledger_rows()] == ["idle_timeout", "idle_timeout"]
    assert sim.stats.in_flight == 0
