"""A caller's own ``http_client`` carries the traffic (JSON calls, retries, streams) and stays theirs:
``client.close()`` leaves it open. Counted by the HTTP library's own hooks, against the simulator."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import pytest

from kimiflow import AsyncKimi, ConfigError, Kimi

MESSAGES = [{"role": "user", "content": "hello"}]


def test_a_callers_httpx_client_carries_every_request_and_is_left_open(sim: Any) -> None:
    sent: list[str] = []
    own = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
    try:
        client = Kimi(api_key=sim.api_key, base_url=sim.base_url, http_client=own, sleep=lambda s: None)
        with client:
            resp = client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES,  # type: ignore[arg-type]
                                                  extra_headers={"X-Kimiflow-Sim-Fault": "500;times=1;key=own-sync"})
            assert resp.attempts == 2 and resp.choices[0].message.content
            with client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES,  # type: ignore[arg-type]
                                                stream=True) as stream:
                assert [c for c in stream]
            client.with_options(max_retries=0).models.list()
        assert sent == ["/v1/chat/completions"] * 3 + ["/v1/models"]
        assert not own.is_closed  # the caller made it, the caller closes it
        own.get(sim.base_url + "/models", headers={"Authorization": f"Bearer {sim.api_key}"}).raise_for_status()
    finally:
        own.close()


def test_kimis_own_pool_is_closed_by_close(sim: Any) -> None:
    client = Kimi(api_key=sim.api_key, base_url=sim.base_url)
    client.models.list()
    pool = client._transport._client  # type: ignore[union-attr]
    client.close()
    assert pool.is_closed


def test_a_callers_aiohttp_session_carries_every_request_and_is_left_open(sim: Any) -> None:
    sent: list[str] = []

    async def on_request_start(session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        sent.append(params.url.path)

    async def main() -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_request_start)
        async with aiohttp.ClientSession(trace_configs=[trace]) as own:
            async def no_sleep(seconds: float) -> None:
                return None

            async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url, http_client=own,
                                 sleep=no_sleep) as client:
                resp = await client.chat.completions.create(
                    model="moonshot-v1-8k", messages=MESSAGES,  # type: ignore[arg-type]
                    extra_headers={"X-Kimiflow-Sim-Fault": "500;times=1;key=own-async"})
                assert resp.attempts == 2 and resp.choices[0].message.content
                async with await client.chat.completions.create(
                        model="moonshot-v1-8k", messages=MESSAGES, stream=True) as stream:  # type: ignore[arg-type]
                    assert [c async for c in stream]
                await client.with_options(max_retries=0).models.list()
            assert sent == ["/v1/chat/completions"] * 3 + ["/v1/models"]
            assert not own.closed
            async with own.get(sim.base_url + "/models", headers={"Authorization": f"Bearer {sim.api_key}"}) as r:
                assert r.status == 200

    asyncio.run(main())


def test_asynckimis_own_session_is_closed_by_close(sim: Any) -> None:
    async def main() -> None:
        client = AsyncKimi(api_key=sim.api_key, base_url=sim.base_url)
        await client.models.list()
        session = client._transport._session  # type: ignore[union-attr]
        await client.close()
        assert session is not None and session.closed

    asyncio.run(main())


def test_an_http_client_of_the_wrong_library_is_a_config_error() -> None:
    wrong = httpx.Client()
    try:
        with pytest.raises(ConfigError, match=r"http_client must be an aiohttp.ClientSession, got Client"):
            AsyncKimi(api_key="sk-test-0000000000", http_client=wrong)  # type: ignore[arg-type]
    finally:
        wrong.close()
    with pytest.raises(ConfigError, match=r"http_client must be an httpx.Client, got object"):
        Kimi(api_key="sk-test-0000000000", http_client=object())  # type: ignore[arg-type]
