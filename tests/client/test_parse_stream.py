"""``chat.completions.parse_stream()`` on both clients, over loopback HTTP against the simulator.

Each attempt is a real streamed request; the simulator's answer faults (``X-Kimiflow-Sim-Fault``)
spoil the first answers, so the re-ask and truncation paths run as they do for ``parse()``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from kimiflow import (
    AnswerBudgetExceededError,
    AnswerValidationError,
    AsyncKimi,
    InvalidArgumentError,
    Kimi,
    StructuredAnswerError,
    TruncatedAnswerError,
)
from kimiflow.types.parsed import ParseStreamEvent
from tests.client.test_parse import MESSAGES, TICKET_SCHEMA, TicketStruct
from tests.client.twins import Twin


def _fault(name: str, times: int) -> dict[str, str]:
    return {"X-Kimiflow-Sim-Fault": f"{name};times={times};key={uuid.uuid4().hex}"}


def _collect(twin: Twin, **kwargs: Any) -> tuple[list[tuple[ParseStreamEvent[Any], Any]], BaseException | None]:
    """Every event with a snapshot of its partial object taken when it arrived, and the error raised (if any)."""
    seen: list[tuple[ParseStreamEvent[Any], Any]] = []
    if twin.kind == "sync":
        with Kimi(**twin.client_kwargs()) as client:
            try:
                with client.chat.completions.parse_stream(**kwargs) as stream:
                    for event in stream:
                        seen.append((event, event.snapshot()))
            except Exception as exc:
                return seen, exc
        return seen, None

    async def main() -> BaseException | None:
        async with AsyncKimi(**twin.client_kwargs()) as client:
            try:
                async with client.chat.completions.parse_stream(**kwargs) as stream:
                    async for event in stream:
                        seen.append((event, event.snapshot()))
            except Exception as exc:
                return exc
        return None

    return seen, asyncio.run(main())


def _is_prefix(partial: Any, final: Any) -> bool:
    """``partial`` could be what ``final`` looked like part way through: complete members, a string's prefix."""
    if partial is None:
        return True
    if isinstance(partial, dict):
        keys = list(partial)
        return (isinstance(final, dict) and keys == list(final)[: len(keys)]
                and all(_is_prefix(partial[k], final[k]) if k == keys[-1] else partial[k] == final[k] for k in keys))
    if isinstance(partial, list):
        return (isinstance(final, list) and len(partial) <= len(final)
                and all(p == f for p, f in zip(partial[:-1], final, strict=False))
                and (not partial or _is_prefix(partial[-1], final[len(partial) - 1])))
    if isinstance(partial, str):
        return isinstance(final, str) and final.startswith(partial)
    return bool(partial == final)


def _attempt_contents(seen: list[tuple[ParseStreamEvent[Any], Any]]) -> list[str]:
    texts: list[str] = []
    for event, _ in seen:
        if event.kind == "attempt":
            texts.append("")
        elif event.kind == "content":
            texts[-1] += event.delta
    return texts


@pytest.mark.parametrize("target", [TicketStruct, TICKET_SCHEMA], ids=["struct", "schema-dict"])
def test_partial_objects_grow_towards_the_validated_answer(twin: Twin, sim: Any, target: Any) -> None:
    before = int(sim.state.stats.chat_completions)
    seen, error = _collect(twin, model="kimi-k2.6", messages=MESSAGES, response_format=target)
    assert error is None
    assert int(sim.state.stats.chat_completions) - before == 1
    kinds = [event.kind for event, _ in seen]
    assert kinds[0] == "attempt" and kinds[-1] == "done" and kinds.count("attempt") == 1
    assert seen[0][0].attempt == 1 and seen[0][0].error is None
    done = seen[-1][0]
    assert done.completion is not None and done.parsed is done.completion.choices[0].message.parsed
    content = done.completion.choices[0].message.content or ""
    assert _attempt_contents(seen) == [content]
    final = json.loads(content)
    snapshots = [snap for event, snap in seen if event.kind == "content"]
    assert len(snapshots) >= 3 and snapshots[-1] == final
    assert all(_is_prefix(snap, final) for snap in snapshots)
    # The object really is built up piece by piece, not only at the end.
    assert len({json.dumps(s) for s in snapshots}) >= 3
    if target is TicketStruct:
        assert isinstance(done.parsed, TicketStruct)
    else:
        assert done.parsed == final
    # kimi-k2.6 thinks first: its reasoning streams before the answer.
    first_content = kinds.index("content")
    assert "reasoning" in kinds[:first_content]
    assert done.completion.usage is not None and done.completion.usage.total_tokens > 0


@pytest.mark.parametrize("fault", ["schema-violation", "invalid-json"])
def test_an_invalid_answer_is_re_asked_in_a_new_attempt(twin: Twin, sim: Any, fault: str) -> None:
    before = int(sim.state.stats.chat_completions)
    seen, error = _collect(twin, model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct,
                           extra_headers=_fault(fault, 2))
    assert error is None
    assert int(sim.state.stats.chat_completions) - before == 3
    attempts = [event for event, _ in seen if event.kind == "attempt"]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert attempts[0].error is None
    assert all(isinstance(a.error, AnswerValidationError) for a in attempts[1:])
    done = seen[-1][0]
    assert done.kind == "done" and done.attempt == 3 and isinstance(done.parsed, TicketStruct)
    completion = done.completion
    assert completion is not None and len(completion.attempt_completions) == 3
    texts = _attempt_contents(seen)
    assert texts == [c.choices[0].message.content for c in completion.attempt_completions]
    assert completion.usage is not None
    assert completion.usage.total_tokens == sum(c.usage.total_tokens for c in completion.attempt_completions)
    # Each attempt's partial object starts again from nothing.
    index = [i for i, (event, _) in enumerate(seen) if event.kind == "attempt"]
    for start in index[1:]:
        assert seen[start][0].partial is None
    if fault == "invalid-json":
        # A fenced answer is not JSON: the partial object of those attempts never appears.
        assert all(snap is None for event, snap in seen if event.kind == "content" and event.attempt < 3)
    else:
        first = [snap for event, snap in seen if event.kind == "content" and event.attempt == 1][-1]
        assert first == json.loads(texts[0]) and isinstance(first["title"], int)


def test_retries_exhausted_raise_the_validation_error_with_the_total_cost(twin: Twin, sim: Any) -> None:
    seen, error = _collect(twin, model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct,
                           max_validation_retries=1, extra_headers=_fault("schema-violation", 5))
    assert isinstance(error, AnswerValidationError) and "after 2 attempts" in str(error)
    assert len(error.completions) == 2 and error.usage is not None
    assert error.usage.total_tokens == sum(c.usage.total_tokens for c in error.completions)
    assert [event.kind for event, _ in seen].count("attempt") == 2
    assert all(event.kind != "done" for event, _ in seen)


def test_a_token_budget_stops_the_re_asks(twin: Twin, sim: Any) -> None:
    before = int(sim.state.stats.chat_completions)
    seen, error = _collect(twin, model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct,
                           token_budget=1, extra_headers=_fault("schema-violation", 5))
    assert isinstance(error, AnswerBudgetExceededError) and "token_budget=1" in str(error)
    assert int(sim.state.stats.chat_completions) - before == 1
    assert [event.kind for event, _ in seen].count("attempt") == 1


def test_truncation_raises_the_typed_error_after_the_partial_object(twin: Twin, sim: Any) -> None:
    before = int(sim.state.stats.chat_completions)
    seen, error = _collect(twin, model="moonshot-v1-8k", messages=MESSAGES, response_format=TicketStruct,
                           extra_headers=_fault("truncated-json", 1))
    assert isinstance(error, TruncatedAnswerError) and "raise max_tokens" in str(error)
    assert int(sim.state.stats.chat_completions) - before == 1
    assert error.completion is not None and error.completion.choices[0].finish_reason == "length"
    assert _attempt_contents(seen) == [error.content]
    last = [snap for event, snap in seen if event.kind == "content"][-1]
    assert isinstance(last, dict) and last  # the half that arrived is there, as far as it goes
    assert error.content is not None and error.content not in str(error)


def test_closing_early_stops_the_stream_and_get_final_completion_says_so(sim: Any) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        stream = client.chat.completions.parse_stream(model="moonshot-v1-8k", messages=MESSAGES,
                                                      response_format=TicketStruct)
        with stream:
            for event in stream:
                if event.kind == "content":
                    break
        with pytest.raises(StructuredAnswerError, match="closed before its answer was complete"):
            stream.get_final_completion()
        resp = client.chat.completions.parse_stream(model="moonshot-v1-8k", messages=MESSAGES,
                                                    response_format=TicketStruct).get_final_completion()
        assert isinstance(resp.choices[0].message.parsed, TicketStruct)


def test_stream_among_the_extra_parameters_is_refused(sim: Any) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client, \
            pytest.raises(InvalidArgumentError, match="parse_stream"):
        client.chat.completions.parse_stream(model="moonshot-v1-8k", messages=MESSAGES,
                                             response_format=TicketStruct, stream=True)


def test_async_stream_closed_early_leaves_the_client_usable(sim: Any) -> None:
    async def main() -> Any:
        async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url) as client:
            stream = client.chat.completions.parse_stream(model="moonshot-v1-8k", messages=MESSAGES,
                                                          response_format=TicketStruct)
            async with stream:
                async for event in stream:
                    if event.kind == "content":
                        break
            with pytest.raises(StructuredAnswerError, match="closed before its answer was complete"):
                await stream.get_final_completion()
            again = client.chat.completions.parse_stream(model="moonshot-v1-8k", messages=MESSAGES,
                                                         response_format=TicketStruct)
            return await again.get_final_completion()

    resp = asyncio.run(main())
    assert isinstance(resp.choices[0].message.parsed, TicketStruct) and len(resp.attempt_completions) == 1
