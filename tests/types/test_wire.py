"""The wire types decode leniently and never lose what the server sent (docs/kimi-api.md §3–4, §7)."""

from __future__ import annotations

import msgspec
import pytest

from kimiflow.types import (
    Balance,
    ChatCompletion,
    ChatCompletionChunk,
    ErrorBody,
    FileList,
    ModelList,
    TokenCount,
    Usage,
    decode,
)
from kimiflow.types._base import ResponseMeta, response_meta, set_response_meta

COMPLETION = (b'{"id":"cmpl-1","object":"chat.completion","created":1700000000,"model":"moonshot-v1-8k",'
              b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi","future_field":[1,2]},'
              b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4},'
              b'"brand_new":{"nested":true}}')


def test_unknown_fields_do_not_break_decoding_and_stay_in_to_dict() -> None:
    resp = decode(COMPLETION, ChatCompletion)
    assert resp.choices[0].message.content == "hi" and resp.usage is not None and resp.usage.total_tokens == 4
    raw = resp.to_dict()
    assert raw["brand_new"] == {"nested": True}
    assert raw["choices"][0]["message"]["future_field"] == [1, 2]
    assert resp.to_json() == COMPLETION  # the server's own bytes


def test_an_object_built_by_hand_serialises_its_fields() -> None:
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert usage.to_dict() == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert msgspec.json.decode(usage.to_json()) == usage.to_dict()


def test_a_chunk_decoded_without_raw_falls_back_to_its_fields() -> None:
    chunk = decode(b'{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"extra":1}', ChatCompletionChunk,
                   keep_raw=False)
    assert "extra" not in chunk.to_dict() and chunk.to_dict()["choices"][0]["delta"] == {"content": "x"}


@pytest.mark.parametrize("spelling", [b"3", b"3.0", b'"3"'])
def test_numbers_sent_as_floats_or_strings_still_decode(spelling: bytes) -> None:
    usage = decode(b'{"prompt_tokens":' + spelling + b',"completion_tokens":1,"total_tokens":' + spelling + b"}",
                   Usage)
    assert (usage.prompt_tokens, usage.total_tokens) == (3, 3)
    assert type(usage.prompt_tokens) is int


def test_a_wrong_type_is_a_validation_error_naming_the_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"choices"):
        decode(b'{"choices":"not a list"}', ChatCompletion)


def test_usage_inside_the_final_choice_of_a_stream_is_read() -> None:
    """Kimi puts the stream's usage in the final choice, not at the top level (docs/kimi-api.md §4)."""
    chunk = decode(b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
                   b'"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":5,"completion_tokens":7,'
                   b'"total_tokens":12,"cached_tokens":2}}]}', ChatCompletionChunk)
    assert chunk.usage is None
    usage = chunk.choices[0].usage
    assert usage is not None and (usage.total_tokens, usage.cached) == (12, 2)
    assert chunk.choices[0].finish_reason == "stop" and chunk.choices[0].delta.content is None


@pytest.mark.parametrize(("body", "cached"), [
    (b'{"cached_tokens":4}', 4),
    (b'{"prompt_tokens_details":{"cached_tokens":6}}', 6),
    (b'{"cached_tokens":4,"prompt_tokens_details":{"cached_tokens":6}}', 4),
    (b"{}", 0),
])
def test_cached_tokens_in_either_spelling(body: bytes, cached: int) -> None:
    assert decode(body, Usage).cached == cached


def test_tool_calls_and_reasoning_decode() -> None:
    resp = decode(b'{"choices":[{"message":{"role":"assistant","content":"","reasoning_content":"think",'
                  b'"tool_calls":[{"index":0,"id":"search:0","type":"function","function":{"name":"$web_search",'
                  b'"arguments":"{\\"q\\":1}"}}]},"finish_reason":"tool_calls"}]}', ChatCompletion)
    message = resp.choices[0].message
    assert message.reasoning_content == "think" and message.tool_calls is not None
    call = message.tool_calls[0]
    assert (call.id, call.index, call.function.name, call.function.arguments) == ("search:0", 0, "$web_search",
                                                                                   '{"q":1}')


def test_request_id_and_attempts_come_from_the_one_meta_holder() -> None:
    resp = decode(COMPLETION, ChatCompletion)
    assert (resp.request_id, resp.attempts) == (None, 1)  # not received through a client
    set_response_meta(resp, "rid-9", 3)
    assert (resp.request_id, resp.attempts) == ("rid-9", 3)
    meta = response_meta(resp)
    assert isinstance(meta, ResponseMeta) and repr(meta) == "ResponseMeta(request_id='rid-9', attempts=3)"
    assert "rid-9" not in resp.to_dict().values()  # meta is not part of the wire object
    assert response_meta(object()).attempts == 1


def test_account_files_models_and_error_bodies_decode() -> None:
    balance = decode(b'{"code":0,"data":{"available_balance":"49.5","voucher_balance":0,"cash_balance":49.5},'
                     b'"scode":"0x0","status":true}', Balance)
    assert balance.data.available_balance == 49.5
    assert decode(b'{"data":{"total_tokens":"12"}}', TokenCount).total_tokens == 12
    models = decode(b'{"object":"list","data":[{"id":"kimi-k2","context_length":262144,"new":1}]}', ModelList)
    assert models.data[0].id == "kimi-k2" and models.data[0].context_length == 262144
    files = decode(b'{"data":[{"id":"f1","bytes":10,"filename":"a.pdf","purpose":"file-extract"}]}', FileList)
    assert (files.data[0].id, files.data[0].bytes) == ("f1", 10)
    error = decode(b'{"error":{"message":"no","type":"invalid_request_error","code":400}}', ErrorBody)
    assert (error.error.message, error.error.type, error.error.code) == ("no", "invalid_request_error", 400)
