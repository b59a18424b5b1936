"""The accumulator turns Kimi stream chunks into the completion a non-streaming call would return."""

from __future__ import annotations

import json
from typing import Any

from kimiflow.core.accumulate import ChatCompletionAccumulator, combine_choice_usage
from kimiflow.core.sse import SSEDecoder
from kimiflow.types import ChatCompletionChunk, Usage, decode

# docs/kimi-api.md §10 R1, the official streaming example, with Moonshot's "..." elision removed.
R1 = (
    b'data: {"id":"cmpl-1305b94c570f447fbde3180560736287","object":"chat.completion.chunk","created":1698999575,'
    b'"model":"moonshot-v1-8k","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    b'data: {"id":"cmpl-1305b94c570f447fbde3180560736287","object":"chat.completion.chunk","created":1698999575,'
    b'"model":"moonshot-v1-8k","choices":[{"index":0,"delta":{"content":"\xe4\xbd\xa0\xe5\xa5\xbd"},"finish_reason":null}]}\n\n'
    b'data: {"id":"cmpl-1305b94c570f447fbde3180560736287","object":"chat.completion.chunk","created":1698999575,'
    b'"model":"moonshot-v1-8k","choices":[{"index":0,"delta":{"content":"\xe3\x80\x82"},"finish_reason":null}]}\n\n'
    b'data: {"id":"cmpl-1305b94c570f447fbde3180560736287","object":"chat.completion.chunk","created":1698999575,'
    b'"model":"moonshot-v1-8k","choices":[{"index":0,"delta":{},"finish_reason":"stop",'
    b'"usage":{"prompt_tokens":19,"completion_tokens":13,"total_tokens":32}}]}\n\n'
    b"data: [DONE]\n\n"
)

USAGE_32 = {"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32}


def chunk(choices: list[dict[str, Any]], **extra: Any) -> ChatCompletionChunk:
    body = {
        "id": "chatcmpl-67500eb0c51af667d5968f74",
        "object": "chat.completion.chunk",
        "created": 1733300000,
        "model": "kimi-k2-turbo-preview",
        "choices": choices,
        **extra,
    }
    return decode(json.dumps(body, ensure_ascii=False).encode(), ChatCompletionChunk)


def delta(index: int = 0, finish_reason: str | None = None, usage: dict[str, int] | None = None, **d: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": d, "finish_reason": finish_reason}
    if usage is not None:
        choice["usage"] = usage
    return choice


def accumulate(*chunks: ChatCompletionChunk) -> ChatCompletionAccumulator:
    acc = ChatCompletionAccumulator()
    for c in chunks:
        acc.add(c)
    return acc


def accumulate_stream(body: bytes) -> ChatCompletionAccumulator:
    acc = ChatCompletionAccumulator()
    decoder = SSEDecoder()
    for event in decoder.feed(body):
        if event.data == "[DONE]":
            break
        acc.add(decode(event.data, ChatCompletionChunk))
    return acc


def test_r1_official_example_gives_content_usage_and_metadata() -> None:
    acc = accumulate_stream(R1)
    final = acc.completion()
    assert final.id == "cmpl-1305b94c570f447fbde3180560736287"
    assert (final.object, final.model, final.created) == ("chat.completion", "moonshot-v1-8k", 1698999575)
    assert final.choices[0].message.content == "你好。"
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].message.reasoning_content is None
    assert final.choices[0].message.tool_calls is None
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (19, 13, 32)
    assert acc.usage == final.usage
    assert acc.finished


def test_result_has_the_non_streaming_wire_shape() -> None:
    """to_dict() carries object, role and index 0 like a non-streaming response does."""
    body = accumulate_stream(R1).completion().to_dict()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": "你好。"}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == USAGE_32


def test_include_usage_trailer_is_not_counted_twice() -> None:
    acc = accumulate(
        chunk([delta(role="assistant", content="")]),
        chunk([delta(content="hi")]),
        chunk([delta(finish_reason="stop", usage=USAGE_32)]),
        chunk([], usage=USAGE_32),
    )
    final = acc.completion()
    assert final.usage is not None and final.usage.total_tokens == 32
    assert final.usage.completion_tokens == 13


def test_top_level_usage_is_preferred_over_choice_usage() -> None:
    acc = accumulate(
        chunk([delta(content="hi", finish_reason="stop", usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})]),
        chunk([], usage={"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32, "cached_tokens": 8}),
    )
    assert acc.usage is not None
    assert (acc.usage.total_tokens, acc.usage.cached) == (32, 8)


def test_cached_tokens_and_details_survive() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "total_tokens": 110,
        "cached_tokens": 64,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    final = accumulate(chunk([delta(content="x", finish_reason="stop", usage=usage)])).completion()
    assert final.to_dict()["usage"] == usage


def test_tool_calls_merge_by_index_with_two_calls_interleaved() -> None:
    acc = accumulate(
        chunk([delta(role="assistant", content="")]),
        chunk([delta(tool_calls=[{"index": 0, "id": "search:0", "type": "function",
                                   "function": {"name": "search", "arguments": ""}}])]),
        chunk([delta(tool_calls=[{"index": 1, "id": "get_weather:1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": '{"ci'}}])]),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": '{"q": "'}}])]),
        chunk([delta(tool_calls=[{"index": 1, "function": {"arguments": 'ty": "北京"}'}}])]),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": 'kimi"}'}}])]),
        chunk([delta(finish_reason="tool_calls", usage=USAGE_32)]),
    )
    message = acc.completion().choices[0].message
    assert message.content == ""  # tool-call-only turn: "" like the non-streaming API, not None
    assert message.tool_calls is not None
    calls = [(c.index, c.id, c.type, c.function.name, c.function.arguments) for c in message.tool_calls]
    assert calls == [
        (0, "search:0", "function", "search", '{"q": "kimi"}'),
        (1, "get_weather:1", "function", "get_weather", '{"city": "北京"}'),
    ]
    assert json.loads(message.tool_calls[1].function.arguments) == {"city": "北京"}
    assert acc.completion().choices[0].finish_reason == "tool_calls"


def test_tool_call_id_and_name_come_from_the_first_fragment_that_has_them() -> None:
    acc = accumulate(
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": "{"}}])]),
        chunk([delta(tool_calls=[{"index": 0, "id": "f:0", "type": "builtin_function",
                                   "function": {"name": "$web_search", "arguments": "}"}}])]),
        chunk([delta(tool_calls=[{"index": 0, "id": "other", "function": {"name": "other"}}])]),
    )
    calls = acc.completion().choices[0].message.tool_calls
    assert calls is not None
    assert (calls[0].id, calls[0].type, calls[0].function.name, calls[0].function.arguments) == (
        "f:0", "builtin_function", "$web_search", "{}")


def test_reasoning_then_content() -> None:
    acc = accumulate(
        chunk([delta(role="assistant", reasoning_content="")]),
        chunk([delta(reasoning_content="先想")]),
        chunk([delta(reasoning_content="一想。")]),
        chunk([delta(reasoning_content="")]),  # k2.5's empty end-of-reasoning marker
        chunk([delta(content="答案")]),
        chunk([delta(content="是 2。", finish_reason="stop", usage=USAGE_32)]),
    )
    message = acc.completion().choices[0].message
    assert message.reasoning_content == "先想一想。"
    assert message.content == "答案是 2。"
    assert acc.text == "答案是 2。"


def test_reasoning_sent_empty_is_empty_string_not_none() -> None:
    acc = accumulate(chunk([delta(reasoning_content="", content="x", finish_reason="stop")]))
    assert acc.completion().choices[0].message.reasoning_content == ""


def test_n2_interleaved_choices_route_by_index_and_usage_combines() -> None:
    acc = accumulate(
        chunk([delta(0, role="assistant", content=""), delta(1, role="assistant", content="")]),
        chunk([delta(1, content="B1")]),
        chunk([delta(0, content="A1")]),
        chunk([delta(0, content="A2")]),
        chunk([delta(1, content="B2")]),
        chunk([delta(1, finish_reason="length",
                     usage={"prompt_tokens": 19, "completion_tokens": 7, "total_tokens": 26, "cached_tokens": 5})]),
    )
    assert not acc.finished  # choice 0 has no finish_reason yet
    acc.add(chunk([delta(0, finish_reason="stop",
                         usage={"prompt_tokens": 19, "completion_tokens": 13, "total_tokens": 32, "cached_tokens": 5})]))
    assert acc.finished
    final = acc.completion()
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == [
        (0, "A1A2", "stop"),
        (1, "B1B2", "length"),
    ]
    # The prompt is shared (counted once); completions are summed.
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (19, 20, 39)
    assert final.usage.cached_tokens == 5
    # Each choice keeps its own usage.
    assert [c.usage.completion_tokens for c in final.choices if c.usage] == [13, 7]


def test_n2_with_include_usage_trailer_uses_the_trailer_only() -> None:
    acc = accumulate(
        chunk([delta(0, content="A", finish_reason="stop", usage={"prompt_tokens": 19, "completion_tokens": 1, "total_tokens": 20})]),
        chunk([delta(1, content="B", finish_reason="stop", usage={"prompt_tokens": 19, "completion_tokens": 1, "total_tokens": 20})]),
        chunk([], usage={"prompt_tokens": 19, "completion_tokens": 2, "total_tokens": 21}),
    )
    assert acc.usage is not None and acc.usage.total_tokens == 21


def test_partial_completion_mid_stream() -> None:
    acc = accumulate(
        chunk([delta(role="assistant", content="")]),
        chunk([delta(content="你好")]),
        chunk([delta(content="，世")]),
    )
    partial = acc.completion()
    assert partial.choices[0].message.content == "你好，世"
    assert partial.choices[0].finish_reason is None
    assert partial.usage is None and acc.usage is None
    assert not acc.finished
    acc.add(chunk([delta(content="界", finish_reason="stop", usage=USAGE_32)]))
    assert acc.completion().choices[0].message.content == "你好，世界"
    assert partial.choices[0].message.content == "你好，世"  # earlier snapshot is unaffected


def test_empty_accumulator() -> None:
    acc = ChatCompletionAccumulator()
    final = acc.completion()
    assert final.choices == [] and final.usage is None
    assert not acc.finished
    assert acc.text == ""


def test_role_defaults_to_assistant_and_first_role_wins() -> None:
    assert accumulate(chunk([delta(content="x")])).completion().choices[0].message.role == "assistant"
    acc = accumulate(chunk([delta(role="assistant")]), chunk([delta(role="tool", content="x")]))
    assert acc.completion().choices[0].message.role == "assistant"


def test_choice_usage_repeated_is_not_summed() -> None:
    acc = accumulate(
        chunk([delta(finish_reason="stop", usage=USAGE_32)]),
        chunk([delta(usage=USAGE_32)]),
    )
    assert acc.usage is not None and acc.usage.total_tokens == 32


def test_metadata_and_system_fingerprint_come_from_the_chunks() -> None:
    acc = accumulate(
        chunk([delta(role="assistant", content="")]),
        chunk([delta(content="x", finish_reason="stop")], system_fingerprint="fpv0_c26222aa"),
    )
    final = acc.completion()
    assert (final.id, final.model, final.created) == ("chatcmpl-67500eb0c51af667d5968f74", "kimi-k2-turbo-preview", 1733300000)
    assert final.system_fingerprint == "fpv0_c26222aa"


def test_combine_choice_usage_rules() -> None:
    assert combine_choice_usage([]) is None
    one = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert combine_choice_usage([one]) is one
    combined = combine_choice_usage([
        usage_of(10, 3, reasoning=2),
        usage_of(10, 5, reasoning=1),
        usage_of(10, 4),
    ])
    assert combined is not None
    assert (combined.prompt_tokens, combined.completion_tokens, combined.total_tokens) == (10, 12, 22)
    assert combined.completion_tokens_details is not None
    assert combined.completion_tokens_details.reasoning_tokens == 3


def usage_of(prompt: int, completion: int, reasoning: int | None = None) -> Usage:
    body: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if reasoning is not None:
        body["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return decode(json.dumps(body).encode(), Usage)
