"""Automatic prefix caching (``cached_tokens`` at the hit price) and ``$web_search`` accounting."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from kimiflow.core.pricing import cost_cny
from kimiflow.core.tokens import estimate_message_tokens
from kimiflow.sim import SimConfig, run_in_thread
from kimiflow.sim.cache import BLOCK_TOKENS, PrefixCache
from kimiflow.sim.web_search import WEB_SEARCH_FEE_CNY
from tests.sim.conftest import Api, SimFactory, user

CACHING_MODEL = "kimi-k2-0905-preview"
SYSTEM = {"role": "system", "content": "你是一个严谨的客服助手，回答要简短。" * 60}
WEB_SEARCH = {"type": "builtin_function", "function": {"name": "$web_search"}}


def _usage(reply: Any) -> dict[str, Any]:
    usage: dict[str, Any] = reply.json()["usage"]
    return usage


async def test_repeated_prefix_reports_cached_tokens_in_both_spellings(api: Api) -> None:
    first = _usage(await api.chat({"model": CACHING_MODEL, "messages": [SYSTEM, *user("第一个问题")]}))
    assert first["cached_tokens"] == 0 and first["prompt_tokens_details"] == {"cached_tokens": 0}
    second = _usage(await api.chat({"model": CACHING_MODEL, "messages": [SYSTEM, *user("另一个问题")]}))
    cached = second["cached_tokens"]
    assert cached == second["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and cached % BLOCK_TOKENS == 0
    assert cached <= estimate_message_tokens([SYSTEM]) < second["prompt_tokens"]


async def test_cache_is_per_api_key_and_per_model(make_api: SimFactory) -> None:
    api = await make_api(keys=("sk-sim-aaaaaaaa", "sk-sim-bbbbbbbb"))
    body = {"model": CACHING_MODEL, "messages": [SYSTEM, *user("问题")]}
    assert _usage(await api.chat(body, key="sk-sim-aaaaaaaa"))["cached_tokens"] == 0
    assert _usage(await api.chat(body, key="sk-sim-bbbbbbbb"))["cached_tokens"] == 0
    assert _usage(await api.chat({**body, "model": "kimi-k2-turbo-preview"}, key="sk-sim-aaaaaaaa"))["cached_tokens"] == 0
    assert _usage(await api.chat(body, key="sk-sim-aaaaaaaa"))["cached_tokens"] > 0


async def test_model_without_automatic_caching_sends_no_cached_tokens(api: Api) -> None:
    body = {"model": "moonshot-v1-32k", "messages": [SYSTEM, *user("问题")]}
    await api.chat(body)
    usage = _usage(await api.chat(body))
    assert "cached_tokens" not in usage and "prompt_tokens_details" not in usage


async def test_streamed_usage_carries_cached_tokens(api: Api) -> None:
    body = {"model": CACHING_MODEL, "messages": [SYSTEM, *user("问题")]}
    await api.chat(body)
    events = (await api.chat({**body, "stream": True, "stream_options": {"include_usage": True}})).events()
    usage = events[-2]["usage"]
    assert usage["cached_tokens"] == usage["prompt_tokens_details"]["cached_tokens"] > 0


def test_cached_tokens_are_charged_at_the_hit_price_through_the_openai_sdk() -> None:
    with run_in_thread(SimConfig(seed=2)) as sim, openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url,
                                                                max_retries=0) as client:
        messages: Any = [SYSTEM, {"role": "user", "content": "问题"}]
        client.chat.completions.create(model=CACHING_MODEL, messages=messages)
        before = sim.balance
        again = client.chat.completions.create(model=CACHING_MODEL, messages=messages)
        usage = again.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens
        assert cached and cached == (usage.model_extra or {})["cached_tokens"]
        charged = before - sim.balance
        expected = cost_cny(CACHING_MODEL, usage.prompt_tokens, usage.completion_tokens, cached)
        assert charged == pytest.approx(expected)
        assert charged < cost_cny(CACHING_MODEL, usage.prompt_tokens, usage.completion_tokens)


async def test_web_search_results_are_prompt_tokens_and_each_call_costs_the_fee(make_api: SimFactory) -> None:
    api = await make_api()
    question = user("搜索一下今天上海的天气")
    start = api.sim.balance
    first = (await api.chat({"model": "moonshot-v1-8k", "tools": [WEB_SEARCH], "messages": question})).json()
    [call] = first["choices"][0]["message"]["tool_calls"]
    usage = first["usage"]
    search_cost = start - api.sim.balance
    assert search_cost == pytest.approx(
        cost_cny("moonshot-v1-8k", usage["prompt_tokens"], usage["completion_tokens"]) + WEB_SEARCH_FEE_CNY)
    result_tokens = json.loads(call["function"]["arguments"])["usage"]["total_tokens"]
    follow_up = [*question, {"role": "assistant", "content": "", "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": call["id"], "name": "$web_search",
                  "content": call["function"]["arguments"]}]
    answer = (await api.chat({"model": "moonshot-v1-8k", "tools": [WEB_SEARCH], "messages": follow_up})).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["prompt_tokens"] == estimate_message_tokens(follow_up) + result_tokens


def test_prefix_cache_memory_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = PrefixCache(max_entries=4)
    long_chat = [SYSTEM, {"role": "user", "content": "a"}]
    cache.lookup_and_store("k", "m", long_chat)
    for i in range(50):
        cache.lookup_and_store("k", "m", [{"role": "user", "content": f"filler {i}"}])
        assert len(cache) <= 4
    assert cache.lookup_and_store("k", "m", long_chat) == 0
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        PrefixCache(max_entries=0)
