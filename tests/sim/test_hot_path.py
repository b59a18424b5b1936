"""The simulator's cheap paths (issue 14) answer exactly like the full checks they stand in for."""

from __future__ import annotations

from typing import Any

import pytest

from kimiflow.core import tokens
from kimiflow.core.catalog import MODELS
from kimiflow.sim.cache import PrefixCache
from kimiflow.sim.config import SimConfig
from kimiflow.sim.errors import SimError
from kimiflow.sim.validation import validate_chat_request

TOOL_CHAT: list[dict[str, Any]] = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": "", "reasoning_content": "look it up",
     "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_plain_body_validates_like_the_full_path(model: str) -> None:
    # "stream": False is the default, but its key sends the body through every parameter check.
    messages = [{"role": "system", "content": "Be brief. " * 50}, {"role": "user", "content": "你好, Kimi"}]
    plain = validate_chat_request({"model": model, "messages": messages}, SimConfig())
    full = validate_chat_request({"model": model, "messages": messages, "stream": False}, SimConfig())
    assert plain == full
    assert plain.model.reasoning == MODELS[model].thinks(None)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (TOOL_CHAT[:2], "The following tool_call_ids did not have response messages: c1"),
        ([TOOL_CHAT[0], {"role": "tool", "content": "x"}], "must have a tool_call_id"),
        ([*TOOL_CHAT, TOOL_CHAT[1], TOOL_CHAT[2]], "tool call id c1 is duplicated"),
    ],
)
def test_plain_body_still_gets_the_conversation_rules(messages: list[dict[str, Any]], message: str) -> None:
    for body in ({"model": "kimi-k2.6", "messages": messages}, {"model": "kimi-k2.6", "messages": messages,
                                                               "stream": False}):
        with pytest.raises(SimError, match=message):
            validate_chat_request(body, SimConfig())
    # With the rules switched off both paths accept it.
    off = SimConfig(strict_conversations=False)
    assert validate_chat_request({"model": "kimi-k2.6", "messages": messages}, off) == validate_chat_request(
        {"model": "kimi-k2.6", "messages": messages, "stream": False}, off)


def test_plain_body_thinking_model_needs_reasoning_content_on_tool_calls() -> None:
    bare = [TOOL_CHAT[0], {k: v for k, v in TOOL_CHAT[1].items() if k != "reasoning_content"}, TOOL_CHAT[2]]
    with pytest.raises(SimError, match="reasoning_content is missing in assistant tool call message at index 1"):
        validate_chat_request({"model": "kimi-k2.6", "messages": bare}, SimConfig())
    assert validate_chat_request({"model": "moonshot-v1-8k", "messages": bare}, SimConfig()).prompt_tokens > 0


def test_memoized_counts_equal_fresh_counts_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_memo", {})
    monkeypatch.setattr(tokens, "_memo_chars", 0)
    monkeypatch.setattr(tokens, "_MEMO_MAX_CHARS", 1000)
    texts = [f"word{i} 字{i}, more words here!" * (i % 7 + 1) for i in range(200)]
    first = [tokens.estimate_text_tokens(t) for t in texts]
    assert first == [tokens._count_text_tokens(t) for t in texts]
    assert [tokens.estimate_text_tokens(t) for t in texts] == first
    assert 0 < tokens._memo_chars <= 1000
    assert sum(map(len, tokens._memo)) == tokens._memo_chars
    long_text = "x " * 2000  # longer than the whole memo: counted, not kept
    assert tokens.estimate_text_tokens(long_text) == tokens._count_text_tokens(long_text)
    assert long_text not in tokens._memo


def test_one_message_counts_add_up_to_the_request_count() -> None:
    messages = [*TOOL_CHAT, {"role": "user", "name": "bob", "content": [{"type": "text", "text": "再见"}]}]
    assert tokens.estimate_message_tokens(messages) == tokens.REQUEST_OVERHEAD + sum(
        tokens.estimate_one_message_tokens(m) for m in messages)


def test_prefix_cache_counts_the_hit_prefix() -> None:
    cache = PrefixCache()
    system = {"role": "system", "content": "rule " * 700}
    first = [system, {"role": "user", "content": "one"}]
    assert cache.lookup_and_store("sk", "kimi-k2.6", first) == 0
    hit = cache.lookup_and_store("sk", "kimi-k2.6", [*first, {"role": "user", "content": "two"}])
    expected = tokens.estimate_message_tokens(first)
    assert hit == expected // 256 * 256 and hit > 0
