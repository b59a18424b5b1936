"""Cross-check with a client nobody here wrote: the official ``openai`` SDK, against the same simulator.

Same requests, same seed: the SDK and kimiflow must see the same content and the same usage. For
streams the SDK does not read Kimi's usage from inside the final choice (it only knows top-level
``chunk.usage``) — that gap is one of kimiflow's reasons to exist, and the test pins it down.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from kimiflow import AsyncKimi, Kimi

MESSAGES = [{"role": "system", "content": "你是 Kimi"}, {"role": "user", "content": "用一句话介绍上海"}]


def test_non_streaming_matches_the_openai_sdk(sim: Any) -> None:
    sdk = openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
    theirs = sdk.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=60)  # type: ignore[arg-type]
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        ours = client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=60)
    assert ours.id and theirs.id
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason
    assert theirs.usage is not None and ours.usage is not None
    assert (ours.usage.prompt_tokens, ours.usage.completion_tokens, ours.usage.total_tokens) == (
        theirs.usage.prompt_tokens, theirs.usage.completion_tokens, theirs.usage.total_tokens)


def test_async_matches_the_openai_sdk(sim: Any) -> None:
    async def main() -> tuple[Any, Any]:
        sdk = openai.AsyncOpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
        theirs = await sdk.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=60)  # type: ignore[arg-type]
        await sdk.close()
        async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url) as client:
            ours = await client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=60)
        return ours, theirs

    ours, theirs = asyncio.run(main())
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.usage.total_tokens == theirs.usage.total_tokens


@pytest.mark.parametrize("include_usage", [False, True])
def test_streams_add_up_to_the_same_text_and_usage(sim: Any, include_usage: bool) -> None:
    params: dict[str, Any] = {"model": "moonshot-v1-8k", "messages": MESSAGES, "max_tokens": 60}
    if include_usage:
        params["stream_options"] = {"include_usage": True}
    sdk = openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)
    sdk_text, sdk_top_level_usage, sdk_choice_usage = [], [], []
    for chunk in sdk.chat.completions.create(stream=True, **params):
        if chunk.usage is not None:
            sdk_top_level_usage.append(chunk.usage.total_tokens)
        for choice in chunk.choices:
            sdk_text.append(choice.delta.content or "")
            extra = choice.model_extra or {}
            if extra.get("usage"):
                sdk_choice_usage.append(extra["usage"]["total_tokens"])
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with client.chat.completions.stream(**params) as s:
            text = "".join(s.text_stream)
            final = s.get_final_completion()
    assert text == "".join(sdk_text)
    # Kimi always puts usage inside the final choice; the SDK leaves it in model_extra, unread.
    assert sdk_choice_usage == [final.usage.total_tokens]
    if include_usage:
        assert sdk_top_level_usage == [final.usage.total_tokens]
    else:
        assert sdk_top_level_usage == []  # without include_usage the SDK reports no usage at all
