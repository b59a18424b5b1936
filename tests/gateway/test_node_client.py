"""The gateway used from outside Python: the official ``openai`` package for Node.js, over loopback.

The reference is the same script pointed straight at the simulator (same seed, model and messages):
content and usage through the gateway must be identical, for a plain and a streaming completion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kimiflow.sim import Simulator
from tests.gateway.conftest import RunningGateway
from tests.gateway.nodejs import run_node

MODEL = "moonshot-v1-8k"
MESSAGES = [{"role": "system", "content": "你是 Kimi"}, {"role": "user", "content": "用一句话介绍 REST 接口"}]


def _client(base_url: str, key: str, mode: str, **extra: str) -> Any:
    env = {"KIMI_BASE_URL": base_url, "KIMI_API_KEY": key, "KIMI_MODEL": MODEL,
           "KIMI_MESSAGES": json.dumps(MESSAGES, ensure_ascii=False), **extra}
    return run_node("client.mjs", mode, env=env)


def test_node_openai_sdk_through_the_gateway_matches_the_simulator(
        node_modules: Path, gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("node-service")
    direct = _client(sim.base_url, sim.api_key, "chat")
    via = _client(gateway.base_url, key, "chat")
    assert direct["plain"]["content"] and direct["plain"]["usage"]["total_tokens"] > 0
    assert via["plain"] == direct["plain"]
    # The stream: the SDK reads Kimi's usage from inside the final choice's chunk, as with Kimi itself.
    assert via["stream"] == direct["stream"]
    assert via["stream"]["content"] == direct["plain"]["content"]
    assert via["stream"]["choiceUsage"] == direct["plain"]["usage"] and via["stream"]["chunks"] > 2
    gateway.flush()
    rows = gateway.gw.store.ledger_rows()
    usage = direct["plain"]["usage"]
    assert [(r.status, r.ended, r.usage_source, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (200, "ok", "kimi", usage["prompt_tokens"], usage["completion_tokens"])] * 2


def test_node_sdk_sees_a_key_rate_limit_as_its_rate_limit_error(
        node_modules: Path, gateway: RunningGateway, sim: Simulator) -> None:
    key = gateway.create_key("node-rpm", rpm=1)
    answered, refused = _client(gateway.base_url, key, "limit", KIMI_CALLS="2")["outcomes"]
    assert answered["ok"] is True and answered["content"]
    assert refused["ok"] is False
    assert refused["isRateLimitError"] is True and refused["sdkClass"] == "RateLimitError"
    assert refused["status"] == 429 and refused["type"] == "rate_limit_reached_error"
    assert "rpm" in refused["message"].lower() and int(refused["retryAfter"]) >= 1
    assert sim.stats.requests == 1  # the gateway said no; Kimi never saw the second call
