"""``transport.sync`` on its own, with ``httpx.MockTransport``: what goes on the wire, and how every
httpx failure becomes exactly one kimiflow error."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from kimiflow.core.config import ClientConfig
from kimiflow.core.errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    DeadlineExceededError,
    StreamIdleTimeoutError,
)
from kimiflow.core.requests import UploadFile
from kimiflow.transport.base import Outgoing
from kimiflow.transport.sync import SyncTransport

CONFIG = ClientConfig(api_key="sk-test-0000000000", base_url="http://127.0.0.1:1/v1")
SECRET_HEADERS = {"Authorization": "Bearer sk-secret-abcdef123456", "Content-Type": "application/json"}
URL = "http://127.0.0.1:1/v1/chat/completions"


def transport(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[SyncTransport, httpx.Client]:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return SyncTransport(CONFIG, client), client


def outgoing(**changes: object) -> Outgoing:
    fields: dict[str, object] = {"method": "POST", "url": URL, "headers": SECRET_HEADERS, "body": b'{"a":1}',
                                 "connect_timeout": 3.0, "read_timeout": 30.0}
    fields.update(changes)
    return Outgoing(**fields)  # type: ignore[arg-type]


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def test_send_puts_method_url_headers_body_and_timeouts_on_the_wire() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, headers={"Msh-Request-Id": "rid-1"}, content=b'{"ok":true}')

    sync, client = transport(handler)
    with client:
        response = sync.send(outgoing())
    assert (response.status, response.headers["msh-request-id"], response.body) == (201, "rid-1", b'{"ok":true}')
    request = seen[0]
    assert (request.method, str(request.url), request.content) == ("POST", URL, b'{"a":1}')
    assert request.headers["authorization"] == SECRET_HEADERS["Authorization"]
    assert request.extensions["timeout"] == {"connect": 3.0, "read": 30.0, "write": 30.0, "pool": 3.0}


def test_a_total_deadline_bounds_connect_and_read() -> None:
    seen: list[httpx.Request] = []
    sync, client = transport(lambda r: seen.append(r) or httpx.Response(200, content=b"{}"))  # type: ignore[func-returns-value]
    with client:
        assert sync.send(outgoing(total_timeout=0.5)).body == b"{}"
    assert seen[0].extensions["timeout"] == {"connect": 0.5, "read": 0.5, "write": 0.5, "pool": 0.5}


def test_uploads_go_as_multipart_with_the_filename() -> None:
    seen: list[httpx.Request] = []
    sync, client = transport(lambda r: seen.append(r) or httpx.Response(200, content=b"{}"))  # type: ignore[func-returns-value]
    upload = UploadFile("file", "report.txt", b"hello file", "text/plain")
    with client:
        sync.send(outgoing(body=None, form={"purpose": "file-extract"}, files=(upload,),
                           headers={"Authorization": "Bearer x"}))
    request = seen[0]
    request.read()
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'filename="report.txt"' in request.content and b"hello file" in request.content
    assert b'name="purpose"' in request.content and b"file-extract" in request.content


@pytest.mark.parametrize(("exc", "error", "which"), [
    (httpx.ConnectError("[Errno 111] Connection refused"), APIConnectionError, None),
    (httpx.RemoteProtocolError("peer closed connection"), APIConnectionError, None),
    (httpx.ReadTimeout("timed out"), APITimeoutError, "read"),
    (httpx.ConnectTimeout("timed out"), APITimeoutError, "connect"),
    (httpx.PoolTimeout("timed out"), APITimeoutError, "pool"),
])
def test_httpx_failures_map_to_one_kimiflow_error(exc: Exception, error: type[APIConnectionError],
                                                  which: str | None) -> None:
    sync, client = transport(raising(exc))
    with client, pytest.raises(APIConnectionError) as info:
        sync.send(outgoing())
    assert type(info.value) is error
    assert getattr(info.value, "which", None) == which
    assert "127.0.0.1:1" in info.value.message or which in ("read", "pool")
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no httpx traceback attached


def test_a_read_timeout_within_the_total_deadline_is_the_deadline() -> None:
    sync, client = transport(raising(httpx.ReadTimeout("timed out")))
    with client, pytest.raises(DeadlineExceededError) as info:
        sync.send(outgoing(total_timeout=0.25))
    assert info.value.which == "total" and "0.25" in info.value.message


def test_the_key_never_shows_in_an_error_or_a_repr() -> None:
    sync, client = transport(raising(httpx.ConnectError("refused")))
    with client, pytest.raises(APIConnectionError) as info:
        sync.send(outgoing())
    assert "sk-secret" not in str(info.value)
    shown = repr(outgoing())
    assert "sk-secret" not in shown and "headers" not in shown and URL in shown


class _Body(httpx.SyncByteStream):
    def __init__(self, pieces: list[bytes], then: Exception | None) -> None:
        self.pieces, self.then, self.closed = pieces, then, False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


def test_open_stream_returns_at_the_headers_and_yields_the_body_in_pieces() -> None:
    body = _Body([b"data: 1\n\n", b"data: 2\n\n"], None)
    sync, client = transport(lambda r: httpx.Response(200, headers={"Msh-Request-Id": "rid-s"}, stream=body))
    with client:
        stream = sync.open_stream(outgoing(), idle_timeout=5.0)
        assert (stream.status, stream.headers["msh-request-id"]) == (200, "rid-s")
        assert b"".join(stream.iter_raw()) == b"data: 1\n\ndata: 2\n\n"
        stream.close()
    assert body.closed


@pytest.mark.parametrize(("exc", "error"), [(httpx.ReadTimeout("idle"), StreamIdleTimeoutError),
                                            (httpx.RemoteProtocolError("cut"), APIConnectionError)])
def test_a_stream_failing_midway_raises_a_kimiflow_error(exc: Exception, error: type[Exception]) -> None:
    sync, client = transport(lambda r: httpx.Response(200, stream=_Body([b"data: 1\n\n"], exc)))
    with client:
        stream = sync.open_stream(outgoing(), idle_timeout=0.5)
        pieces: list[bytes] = []
        with pytest.raises(APIConnectionError) as info:
            for piece in stream.iter_raw():
                pieces.append(piece)
        stream.close()
    assert pieces == [b"data: 1\n\n"] and type(info.value) is error
    if error is StreamIdleTimeoutError:
        assert info.value.which == "stream_idle" and "0.5 s" in info.value.message  # type: ignore[attr-defined]


def test_an_error_status_stream_body_can_be_read() -> None:
    sync, client = transport(lambda r: httpx.Response(429, content=b'{"error":{"message":"slow down"}}'))
    with client:
        stream = sync.open_stream(outgoing(), idle_timeout=5.0)
        assert stream.status == 429 and b"slow down" in stream.read()
        stream.close()


def test_a_callers_client_is_left_open_and_its_own_is_closed() -> None:
    sync, client = transport(lambda r: httpx.Response(200, content=b"{}"))
    sync.close()
    assert not client.is_closed
    client.close()
    with pytest.raises(ClientClosedError, match="closed"):
        sync.send(outgoing())
    own = SyncTransport(CONFIG)
    own.close()
    assert own._client.is_closed


@pytest.mark.parametrize("total", [None, 5.0])
def test_a_compressed_body_is_decoded_with_or_without_a_deadline(total: float | None) -> None:
    """The deadline path reads in pieces; it must hand back the same decoded bytes as the plain path."""
    import gzip

    packed = gzip.compress(b'{"id":"x"}')
    sync, client = transport(lambda r: httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=packed))
    with client:
        assert sync.send(outgoing(total_timeout=total)).body == b'{"id":"x"}'


def test_a_callers_client_closed_under_it_says_so() -> None:
    sync, client = transport(lambda r: httpx.Response(200, content=b"{}"))
    client.close()
    with pytest.raises(ClientClosedError, match=r"httpx\.Client passed to Kimi as http_client is closed"):
        sync.send(outgoing())
