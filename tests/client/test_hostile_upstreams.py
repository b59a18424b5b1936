"""Both clients against hostile upstreams (tests/client/hostile.py): tricklers, floods, key-echoers, truncators."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from kimiflow import APIError, StreamError, StreamIdleTimeoutError, Timeouts
from tests.client.hostile import HostileServer, run_hostile
from tests.client.twins import Twin

# Not shaped like a Moonshot key: redaction must not rely on the ``sk-`` prefix.
KEY = "kf-test-SECRET-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with run_hostile(HostileServer(interval=0.2, max_seconds=20.0)) as server:
        yield server


def twin_at(kind: str, url: str, **kwargs: Any) -> Twin:
    return Twin(kind, api_key=KEY, base_url=url, **kwargs)


def create(stream: bool = False, **params: Any) -> Any:
    return lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=MESSAGES, stream=stream, **params)


# -- item 7: only a dispatched event is progress; lines and events are capped ----------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_trickled_line_that_never_ends_hits_the_idle_timeout(hostile: HostileServer, kind: str) -> None:
    """One byte of an unterminated ``data:`` line every 0.2 s does not reset a 1.0 s idle timeout."""
    twin = twin_at(kind, hostile.url("trickle"), max_retries=0, timeout=Timeouts(stream_idle=1.0))
    started = time.monotonic()
    with pytest.raises(StreamIdleTimeoutError):
        twin.stream(create(stream=True))
    assert time.monotonic() - started < 2.5  # ~1.2 s; generous for a loaded 2-core machine


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_line_above_the_cap_is_a_stream_error_naming_the_cap(kind: str) -> None:
    """A 20 MiB line without an end is refused at the 16 MiB cap instead of being buffered whole."""
    with run_hostile(HostileServer(flood_bytes=20 * 2**20)) as server:
        twin = twin_at(kind, server.url("flood"), max_retries=0)
        with pytest.raises(StreamError, match="16 MiB") as info:
            twin.stream(create(stream=True))
    assert "max_event_size" in str(info.value)


# -- item 8: a key echoed by the server is redacted everywhere --------------------------------------


def texts_of(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, APIError):
        texts += [repr(exc.body), repr(exc.request_id), repr(exc.type), repr(exc.message), repr(exc.partial)]
    return texts


ECHOES = [
    ("echo-status", False), ("echo-status", True),
    ("echo-bad-json", False), ("echo-bad-json", True),
    ("echo-malformed", False), ("echo-malformed", True),
    ("echo-error-event", True),
]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("behaviour", "stream"), ECHOES)
def test_a_key_echoed_by_the_server_reaches_no_error_and_no_log(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture, kind: str, behaviour: str, stream: bool,
) -> None:
    """The key of any shape, echoed in Msh-Request-Id, error bodies, malformed bodies and error events."""
    caplog.set_level(logging.DEBUG, logger="kimiflow")
    twin = twin_at(kind, hostile.url(behaviour), max_retries=1)
    with pytest.raises(APIError) as info:
        if stream:
            twin.stream(create(stream=True))
        else:
            twin.run(create())
    texts = texts_of(info.value) + [record.getMessage() for record in caplog.records]
    assert caplog.records, "debug logging produced nothing to check"
    assert [text for text in texts if KEY in text or KEY[6:] in text] == []
    if info.value.request_id is not None:
        assert "***" in info.value.request_id  # the id is kept, with the key cut out of it


# -- a 200 body cut short ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_truncated_200_body_is_a_malformed_response_error(hostile: HostileServer, kind: str) -> None:
    from kimiflow.core.errors import MalformedResponseError

    twin = twin_at(kind, hostile.url("truncate"), max_retries=0)
    with pytest.raises(MalformedResponseError, match="body starts"):
        twin.run(create())


# -- item 10: values JSON cannot carry are refused before anything is sent --------------------------

BAD_VALUES = [
    ({"temperature": float("nan")}, "temperature=nan is not a number JSON can carry"),
    ({"top_p": float("inf")}, "top_p=inf is not a number JSON can carry"),
    ({"messages": [{"role": "user", "content": b"hi"}]}, r"messages\[0\]\.content is bytes: decode it to str first"),
    ({"stop": {"END"}}, "stop is a set: pass a list"),
    ({"extra_body": {"tools": [{"type": "function", "function": {"parameters": {"x": float("-inf")}}}]}},
     r"tools\[0\]\.function\.parameters\.x=-inf"),
    ({"user": object()}, "user is a object, which JSON cannot carry"),
]


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("params", "message"), BAD_VALUES)
def test_values_json_cannot_carry_are_refused_before_sending(
    hostile: HostileServer, kind: str, params: dict[str, Any], message: str,
) -> None:
    """NaN/inf would go out as null, bytes as base64, sets as lists: each is an InvalidArgumentError instead."""
    from kimiflow import InvalidArgumentError

    before = hostile.received
    params = dict(params)
    messages = params.pop("messages", MESSAGES)
    twin = twin_at(kind, hostile.url("truncate"), max_retries=0)
    with pytest.raises(InvalidArgumentError, match=message):
        twin.run(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=messages, **params))
    with pytest.raises(InvalidArgumentError, match=message):
        twin.stream(lambda c: c.chat.completions.create(model="moonshot-v1-8k", messages=messages, stream=True,
                                                        **params))
    assert hostile.received == before, "a request with an unsendable value reached the upstream"
