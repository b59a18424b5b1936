"""Issue 14 gaps that had proof through one client only, now through the official openai SDK and kimiflow:
the 2026 models answer chat, cached_tokens of a repeated prefix, a forced tool call that really calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from kimiflow import Kimi
from kimiflow.sim import SimConfig, Simulator, run_in_thread
from kimiflow.sim.cache import BLOCK_TOKENS

SYSTEM = {"role": "system", "content": "你是一个严谨的客服助手，回答要简短。" * 60}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather of a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with run_in_thread(SimConfig(seed=14)) as running:
        yield running


def _openai(sim: Simulator) -> Any:
    return openai.OpenAI(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)


def _kimi(sim: Simulator) -> Any:
    return Kimi(api_key=sim.api_key, base_url=sim.base_url, max_retries=0)


CLIENTS = pytest.mark.parametrize("make_client", [_openai, _kimi], ids=["openai-sdk", "kimiflow"])


@CLIENTS
@pytest.mark.parametrize("model", ["kimi-k3", "kimi-k2.7-code-highspeed"])
def test_the_2026_models_answer_chat(sim: Simulator, make_client: Callable[[Simulator], Any], model: str) -> None:
    with make_client(sim) as client:
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "你好"}])
        assert answer.model == model and answer.choices[0].message.content
        assert model in {m.id for m in client.models.list().data}


@CLIENTS
def test_a_repeated_prefix_reports_cached_tokens(sim: Simulator, make_client: Callable[[Simulator], Any]) -> None:
    with make_client(sim) as client:
        def ask(question: str) -> Any:
            return client.chat.completions.create(
                model="kimi-k2-0905-preview", messages=[SYSTEM, {"role": "user", "content": question}]).usage

        ask(f"第一个问题 {make_client.__name__}")
        usage = ask(f"另一个问题 {make_client.__name__}")
        cached = usage.prompt_tokens_details.cached_tokens
        assert cached > 0 and cached % BLOCK_TOKENS == 0 and cached < usage.prompt_tokens


@CLIENTS
def test_required_tool_choice_on_k3_gets_a_tool_call(sim: Simulator, make_client: Callable[[Simulator], Any]) -> None:
    with make_client(sim) as client:
        answer = client.chat.completions.create(
            model="kimi-k3", messages=[{"role": "user", "content": "讲个笑话"}], tools=[WEATHER], tool_choice="required")
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]
