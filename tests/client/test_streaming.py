"""Streams through both clients against the simulator's real SSE, including every stream fault."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

from kimiflow import (
    AsyncKimi,
    DeadlineExceededError,
    IncompleteStreamError,
    InternalServerError,
    Kimi,
    KimiflowError,
    StreamError,
    StreamIdleTimeoutError,
    Timeouts,
)
from tests.client.twins import Twin

MESSAGES = [{"role": "user", "content": "讲个冷笑话吧"}]


def opener(fault: str | None = None, **params: Any) -> Any:
    headers = {"X-Kimiflow-Sim-Fault": fault} if fault else None
    params.setdefault("max_tokens", 50)
    return lambda c: c.chat.completions.create(model=params.pop("model", "moonshot-v1-8k"), messages=MESSAGES,
                                               stream=True, extra_headers=headers, **params)


def text_of(chunks: list[Any]) -> str:
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def test_stream_text_equals_non_stream_text(twin: Twin) -> None:
    chunks = twin.stream(opener())
    full = twin.run(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=50))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text_of(chunks) == full.choices[0].message.content
    final = chunks[-1].choices[0]
    assert final.finish_reason in ("stop", "length")
    assert final.usage is not None and final.usage.total_tokens == full.usage.total_tokens


def test_stream_helper_gives_text_and_final_completion_with_kimi_usage(sim: Any) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with client.chat.completions.stream(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=40) as s:
            pieces = list(s.text_stream)
            final = s.get_final_completion()
    assert "".join(pieces) == final.choices[0].message.content
    # Kimi sends usage only inside the final choice unless include_usage is set; kimiflow finds it.
    assert final.usage is not None and final.usage.completion_tokens > 0


def test_async_stream_helper(sim: Any) -> None:
    async def main() -> tuple[str, Any]:
        async with AsyncKimi(api_key=sim.api_key, base_url=sim.base_url) as client:
            async with client.chat.completions.stream(model="moonshot-v1-8k", messages=MESSAGES,
                                                      max_tokens=40) as s:
                pieces = [text async for text in s.text_stream]
                return "".join(pieces), await s.get_final_completion()

    text, final = asyncio.run(main())
    assert text == final.choices[0].message.content and final.usage.total_tokens > 0


def test_include_usage_is_not_counted_twice(sim: Any) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with client.chat.completions.stream(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=30,
                                            stream_options={"include_usage": True}) as s:
            final = s.get_final_completion()
        plain = client.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=30)
    assert final.usage.total_tokens == plain.usage.total_tokens


def test_reasoning_stream_for_thinking_models(sim: Any) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        with client.chat.completions.stream(model="kimi-k2-thinking", messages=MESSAGES, max_tokens=80,
                                            temperature=1.0) as s:
            reasoning = "".join(s.reasoning_stream)
            final = s.get_final_completion()
    assert reasoning and final.choices[0].message.reasoning_content == reasoning
    assert final.choices[0].message.content


def test_http_error_before_stream_is_typed_and_retried(twin: Twin) -> None:
    with pytest.raises(InternalServerError) as info:
        twin.stream(opener("500"), max_retries=1)
    assert info.value.attempts == 2 and len(twin.sleeps) == 1


def test_cut_stream_raises_incomplete_with_partial(twin: Twin) -> None:
    with pytest.raises(IncompleteStreamError) as info:
        twin.stream(opener("cut;after=5"))
    partial = info.value.partial
    assert partial is not None and partial.choices[0].message.content
    assert twin.sleeps == []  # never retried once data reached the caller


def test_error_event_raises_stream_error_with_partial_text(twin: Twin) -> None:
    with pytest.raises(StreamError) as info:
        twin.stream(opener("error-event;after=4"))
    assert not isinstance(info.value, IncompleteStreamError)
    assert info.value.type == "server_error"
    assert info.value.partial is not None and info.value.partial.choices[0].message.content


def test_malformed_chunk_names_the_offending_data(twin: Twin) -> None:
    with pytest.raises(StreamError, match="malformed stream chunk") as info:
        twin.stream(opener("malformed;after=3"))
    assert '{"id":"chatcmpl-malformed"' in info.value.message  # the offending data, quoted
    assert info.value.partial is not None and info.value.partial.choices[0].message.content


@pytest.mark.parametrize("fault", ["stall;after=2", "stall;after=2;keepalive=0.05"])
def test_stalled_stream_is_detected_within_the_idle_timeout(twin: Twin, fault: str, sim: Any) -> None:
    """A silent upstream, or one sending only keep-alive comments, trips the idle timeout."""
    started = time.monotonic()
    failed_at: list[float] = []

    def check_released() -> None:
        failed_at.append(time.monotonic())
        wait_until_idle(sim)  # the stalled server only lets go when the client closes the connection

    with pytest.raises(StreamIdleTimeoutError) as info:
        twin.stream(opener(fault), max_retries=0, timeout=Timeouts(read=5, stream_idle=0.4),
                    while_open=check_released)
    assert info.value.which == "stream_idle"
    assert 0.35 <= failed_at[0] - started < 2.5
    assert info.value.partial is not None  # the chunks before the stall stay reachable


def wait_until_idle(sim: Any) -> None:
    deadline = time.monotonic() + 3
    while sim.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.stats.in_flight == 0


def test_trickle_and_keepalive_streams_complete(twin: Twin) -> None:
    slow = twin.stream(opener("trickle;interval=0.005", max_tokens=20))
    chatty = twin.stream(opener("keepalive", max_tokens=20))
    plain = twin.stream(opener(max_tokens=20))
    assert text_of(slow) == text_of(chatty) == text_of(plain)


def test_break_releases_the_connection(twin: Twin, sim: Any) -> None:
    """After a ``break`` out of a long trickling stream the sim sees the client go: nothing stays in flight."""
    long_trickle = lambda c: c.chat.completions.create(  # noqa: E731 - 2,000 tokens at 10 ms: a 20 s stream
        model="moonshot-v1-8k", messages=MESSAGES, stream=True, max_tokens=2000,
        extra_headers={"X-Kimiflow-Sim-Fault": "trickle;interval=0.01", "X-Kimiflow-Sim-Tokens": "2000"})
    chunks = twin.stream(long_trickle, limit=3, while_open=lambda: wait_until_idle(sim))
    assert len(chunks) == 3


LONG = {"model": "kimi-k2-0905-preview", "max_tokens": 200_000}
"""A stream far larger than the socket buffers: the server can only finish it if the client keeps reading."""


def test_malformed_stream_releases_the_connection(twin: Twin, sim: Any) -> None:
    with pytest.raises(StreamError):
        twin.stream(lambda c: c.chat.completions.create(
            messages=MESSAGES, stream=True, **LONG,
            extra_headers={"X-Kimiflow-Sim-Fault": "malformed;after=2", "X-Kimiflow-Sim-Tokens": "200000"}),
            while_open=lambda: wait_until_idle(sim))


def test_abandoned_stream_is_closed_by_garbage_collection(sim: Any) -> None:
    with Kimi(api_key=sim.api_key, base_url=sim.base_url) as client:
        stream = client.chat.completions.create(messages=MESSAGES, stream=True, **LONG,
                                                extra_headers={"X-Kimiflow-Sim-Tokens": "200000"})
        next(iter(stream))
        del stream
        gc.collect()
        wait_until_idle(sim)


def test_stream_failing_before_any_chunk_is_retried(twin: Twin) -> None:
    """Headers arrived but not one chunk: nothing reached the caller, so the usual retry rules apply."""
    key = f"{twin.kind}-cut0"
    chunks = twin.stream(opener(f"cut;after=0;times=1;key={key}"), max_retries=2)
    assert text_of(chunks) and len(twin.sleeps) == 1


def test_stream_never_retried_after_a_chunk_was_yielded(twin: Twin) -> None:
    key = f"{twin.kind}-cut3"
    with pytest.raises(IncompleteStreamError):
        twin.stream(opener(f"cut;after=3;times=1;key={key}"), max_retries=2)
    assert twin.sleeps == []


def test_async_client_used_from_a_second_event_loop_says_what_to_do(sim: Any) -> None:
    """aiohttp connections belong to one loop: another loop gets a clear error, not a second, stranded pool."""
    client = AsyncKimi(api_key=sim.api_key, base_url=sim.base_url)
    first_loop = asyncio.new_event_loop()
    try:
        assert first_loop.run_until_complete(client.ask("你好", max_tokens=10))
        with pytest.raises(KimiflowError, match="one AsyncKimi per event loop"):
            asyncio.run(client.ask("你好", max_tokens=10))
        first_loop.run_until_complete(client.close())
    finally:
        first_loop.close()


def test_a_closed_client_says_so(twin: Twin) -> None:
    def body(c: Any) -> Any:
        if twin.kind == "sync":
            c.close()
            return c.ask("你好")

        async def closed_then_used() -> str:
            await c.close()
            return await c.ask("你好")

        return closed_then_used()

    with pytest.raises(KimiflowError, match="this client is closed"):
        twin.run(body)


def test_reasoning_then_answer_loses_nothing(twin: Twin) -> None:
    """``reasoning_stream`` ends where the answer begins; ``text_stream`` then starts with the first answer piece."""
    def body(c: Any) -> Any:
        manager = c.chat.completions.stream(model="kimi-k2-thinking", messages=MESSAGES, max_tokens=80,
                                            temperature=1.0)
        if twin.kind == "sync":
            with manager as s:
                return "".join(s.reasoning_stream), "".join(s.text_stream), s.get_final_completion()

        async def run() -> tuple[str, str, Any]:
            async with manager as s:
                thoughts = "".join([piece async for piece in s.reasoning_stream])
                answer = "".join([piece async for piece in s.text_stream])
                return thoughts, answer, await s.get_final_completion()

        return run()

    thoughts, answer, final = twin.run(body)
    message = final.choices[0].message
    assert thoughts and thoughts == message.reasoning_content
    assert answer and answer == message.content


def test_final_completion_keeps_request_id_and_attempts(twin: Twin) -> None:
    key = f"{twin.kind}-final-meta"

    def body(c: Any) -> Any:
        manager = c.chat.completions.stream(model="moonshot-v1-8k", messages=MESSAGES, max_tokens=20,
                                            extra_headers={"X-Kimiflow-Sim-Fault": f"503;times=1;key={key}"})
        if twin.kind == "sync":
            with manager as s:
                return s.get_final_completion(), s.request_id

        async def run() -> Any:
            async with manager as s:
                return await s.get_final_completion(), s.request_id

        return run()

    final, request_id = twin.run(body)
    assert final.request_id == request_id and request_id
    assert final.attempts == 2


def test_stream_total_deadline(twin: Twin) -> None:
    """The total deadline bounds a stream that keeps the idle timer happy (a 10 s trickle)."""
    slow = lambda c: c.chat.completions.create(  # noqa: E731
        model="moonshot-v1-8k", messages=MESSAGES, stream=True, max_tokens=200,
        extra_headers={"X-Kimiflow-Sim-Fault": "trickle;interval=0.05", "X-Kimiflow-Sim-Tokens": "200"})
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as info:
        twin.stream(slow, max_retries=0, timeout=Timeouts(stream_idle=10, total=1.0))
    assert info.value.which == "total"
    assert 0.9 <= time.monotonic() - started < 3.0


def test_events_slower_than_the_stream_lasts_but_within_the_idle_timeout_complete(twin: Twin) -> None:
    """Each dispatched event resets the idle timer: a 1.2 s stream of events 0.1 s apart passes a 0.5 s limit."""
    chunks = twin.stream(opener("trickle;interval=0.1", max_tokens=12), max_retries=0,
                         timeout=Timeouts(read=5, stream_idle=0.5))
    assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
