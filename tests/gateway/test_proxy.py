"""The caller's API through the gateway, against the simulator directly: same content, same usage."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from kimiflow import AsyncKimi, Kimi
from kimiflow.core.errors import AuthenticationError, PermissionDeniedError, QuotaExceededError
from kimiflow.gateway import REQUEST_ID_HEADER
from kimiflow.sim import FAULT_HEADER, Simulator
from tests.gateway.conftest import RunningGateway

MODEL = "moonshot-v1-8k"
MESSAGES = [{"role": "system", "content": "你是一位語言藝術大師"}, {"role": "user", "content": "用一句话介绍 REST"}]


def _direct(sim: Simulator) -> Any:
    """The same request straight to the simulator (the reference answer)."""
    with Kimi(api_key=sim.api_key, base_url=sim.base_url, max_retries=0) as client:
        return client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_kimi_sync_json_and_stream_match_the_simulator(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("crm")
    direct = _direct(sim)
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0) as client:
        via = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        with client.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_completion()
    assert via.choices[0].message.content == direct.choices[0].message.content == text
    assert via.usage == direct.usage
    assert final.usage is not None and final.usage.total_tokens == direct.usage.total_tokens
    gateway.flush()
    rows = gateway.gw.store.ledger_rows()
    assert [(r.status, r.ended, r.usage_source) for r in rows] == [(200, "ok", "kimi")] * 2
    assert all(r.prompt_tokens == direct.usage.prompt_tokens and r.completion_tokens == direct.usage.completion_tokens
               for r in rows)
    assert all(r.upstream_request_id for r in rows) and all(r.ttft_ms is not None for r in rows)


async def test_async_kimi_and_openai_async_stream(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("tickets")
    direct = _direct(sim)
    async with AsyncKimi(api_key=key, base_url=gateway.base_url, max_retries=0) as client:
        via = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert via.choices[0].message.content == direct.choices[0].message.content
    oa = openai.AsyncOpenAI(api_key=key, base_url=gateway.base_url, max_retries=0)
    try:
        stream = await oa.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                extra = getattr(chunk.choices[0], "usage", None)
                usage = extra or usage
        reply = await oa.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        await oa.close()
    assert "".join(pieces) == direct.choices[0].message.content == reply.choices[0].message.content
    assert usage is not None and usage["total_tokens"] == direct.usage.total_tokens
    assert reply.usage is not None and reply.usage.total_tokens == direct.usage.total_tokens


def test_openai_sync_sdk_and_headers(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("java", rpm=100, tpm=100_000)
    direct = _direct(sim)
    client = openai.OpenAI(api_key=key, base_url=gateway.base_url, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    reply = raw.parse()
    client.close()
    assert reply.choices[0].message.content == direct.choices[0].message.content
    headers = raw.headers
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert int(headers["x-ratelimit-remaining-requests"]) == 99
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert headers["Msh-Request-Id"] and headers[REQUEST_ID_HEADER].startswith("gw-")


async def test_plain_http_stream_bytes_are_the_upstreams(gateway: RunningGateway, sim: Simulator) -> None:
    """The SSE body is forwarded byte for byte (only ids and timestamps differ between two calls)."""
    key = gateway.create_key("lowcode")
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.base_url + "/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {sim.api_key}"}) as r:
            direct = await r.read()
        async with http.post(gateway.base_url + "/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            via = await r.read()
    import re

    def normalise(data: bytes) -> bytes:
        return re.sub(rb'"(id|created)":("[^"]*"|\d+)', b"", data)

    assert normalise(via) == normalise(direct)
    assert via.endswith(b"data: [DONE]\n\n")


def test_wrong_missing_and_revoked_keys_are_401(gateway: RunningGateway) -> None:
    key = gateway.create_key("crm")
    for bad in ("kfg-not-a-key", "", sim_key := "sk-UPSTREAM-SECRET-do-not-leak-7f3a9c"):
        with Kimi(api_key=bad or "x", base_url=gateway.base_url, max_retries=0) as client:
            with pytest.raises(AuthenticationError) as info:
                client.ask("hi")
        assert info.value.status_code == 401 and info.value.type == "invalid_authentication_error"
    assert sim_key  # the upstream key is not a virtual key
    gateway.gw.store.revoke_key("crm", actor="test")
    gateway.run(gateway.gw.reload_keys())
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0) as client, pytest.raises(AuthenticationError):
        client.ask("hi")


def test_model_not_allowed_is_403_listing_allowed(gateway: RunningGateway) -> None:
    key = gateway.create_key("crm", models="moonshot-v1-8k,kimi-k2.5")
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0) as client:
        with pytest.raises(PermissionDeniedError, match=r"allowed: moonshot-v1-8k, kimi-k2\.5"):
            client.ask("hi", model="moonshot-v1-128k")
        assert sorted(m.id for m in client.models.list().data) == ["kimi-k2.5", "moonshot-v1-8k"]


def test_balance_is_the_keys_remaining_budget(gateway: RunningGateway) -> None:
    key = gateway.create_key("crm", budget_cny=2.0)
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0) as client:
        assert client.balance().data.available_balance == 2.0
        client.ask("hi", model=MODEL)
        gateway.flush()
        left = client.balance().data.available_balance
        spent = sum(r.cost_cny for r in gateway.gw.store.ledger_rows())
        assert spent > 0 and left == pytest.approx(2.0 - spent, abs=1e-6)
        assert client.tokens.count(model=MODEL, messages=MESSAGES).data.total_tokens > 0


def test_upstream_quota_error_passes_through_unretried(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("crm")
    before = sim.stats.chat_completions
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0,
              default_headers={FAULT_HEADER: "quota"}) as client:
        with pytest.raises(QuotaExceededError) as info:
            client.ask("hi")
    assert info.value.status_code == 429 and info.value.type == "exceeded_current_quota_error"
    assert info.value.request_id
    assert sim.stats.requests - before <= 1 + (sim.stats.requests - sim.stats.chat_completions)
    assert sim.stats.faults["quota"] == 1  # one attempt, never retried


@pytest.mark.parametrize("fault", ["500", "503", "429", "overloaded", "reset"])
def test_retryable_upstream_errors_are_retried_before_the_first_byte(
    gateway: RunningGateway, sim: Simulator, fault: str
) -> None:
    key = gateway.create_key("crm")
    direct = _direct(sim)
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0,
              default_headers={FAULT_HEADER: f"{fault};times=2;key={fault}"}) as client:
        via = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert sim.stats.faults[fault] == 2


def test_upstream_errors_exhausting_attempts_pass_status_type_and_id(gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("crm")
    with Kimi(api_key=key, base_url=gateway.base_url, max_retries=0,
              default_headers={FAULT_HEADER: "500"}) as client:
        with pytest.raises(Exception) as info:
            client.ask("hi")
    err: Any = info.value
    assert err.status_code == 500 and err.request_id
    assert sim.stats.faults["500"] == 3  # the gateway's bounded attempts
    gateway.flush()
    (row,) = gateway.gw.store.ledger_rows()
    assert (row.status, row.ended, row.cost_cny) == (500, "upstream_error", 0.0)
