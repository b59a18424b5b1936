"""``transport.aio`` on its own, against a small hostile aiohttp server on 127.0.0.1: what goes on the
wire, and how every aiohttp failure becomes exactly one kimiflow error."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kimiflow.core.config import ClientConfig
from kimiflow.core.errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    DeadlineExceededError,
    StreamIdleTimeoutError,
)
from kimiflow.core.requests import UploadFile
from kimiflow.transport.aio import AsyncTransport
from kimiflow.transport.base import Outgoing

CONFIG = ClientConfig(api_key="sk-test-0000000000", base_url="http://127.0.0.1:1/v1")
HEADERS = {"Authorization": "Bearer sk-secret-abcdef123456", "Content-Type": "application/json"}


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"method": request.method, "length": len(body), "auth": request.headers["Authorization"],
                              "head": body[:20].decode("latin-1")}, headers={"Msh-Request-Id": "rid-1"})


async def upload(request: web.Request) -> web.Response:
    form = await request.post()
    file = form["file"]
    assert isinstance(file, web.FileField)
    return web.json_response({"purpose": form["purpose"], "filename": file.filename, "content": file.file.read().decode()})


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({})


async def stream(request: web.Request) -> web.StreamResponse:
    """Two events, then silence (``/stall``) or a connection dropped mid-body (``/cut``)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Msh-Request-Id": "rid-s"})
    if request.path == "/cut":
        response.content_length = 1000  # promise more than is sent, then close: a broken body
    await response.prepare(request)
    await response.write(b"data: 1\n\ndata: 2\n\n")
    if request.path == "/cut":
        assert request.transport is not None
        request.transport.close()
        return response
    if request.path == "/stall":
        await asyncio.sleep(5)
    await response.write_eof()
    return response


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/slow", slow)
    for path in ("/stream", "/stall", "/cut"):
        app.router.add_get(path, stream)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def out(url: str, method: str = "POST", **changes: Any) -> Outgoing:
    fields: dict[str, Any] = {"method": method, "url": url, "headers": HEADERS, "body": b'{"a":1}',
                              "connect_timeout": 2.0, "read_timeout": 5.0}
    fields.update(changes)
    return Outgoing(**fields)


@pytest.fixture
async def transport() -> AsyncIterator[AsyncTransport]:
    aio = AsyncTransport(CONFIG)
    try:
        yield aio
    finally:
        await aio.close()


async def test_send_puts_method_headers_and_body_on_the_wire(server: str, transport: AsyncTransport) -> None:
    response = await transport.send(out(server + "/echo"))
    assert response.status == 200 and response.headers["msh-request-id"] == "rid-1"
    assert json.loads(response.body) == {"method": "POST", "length": 7, "auth": HEADERS["Authorization"],
                                         "head": '{"a":1}'}


async def test_a_large_body_arrives_whole(server: str, transport: AsyncTransport) -> None:
    big = b"x" * (3 * 1024 * 1024)
    response = await transport.send(out(server + "/echo", body=big))
    assert json.loads(response.body)["length"] == len(big)


async def test_uploads_go_as_multipart_with_the_filename(server: str, transport: AsyncTransport) -> None:
    upload_file = UploadFile("file", "report.txt", b"hello file", "text/plain")
    response = await transport.send(out(server + "/upload", body=None, form={"purpose": "file-extract"},
                                        files=(upload_file,), headers={"Authorization": "Bearer x"}))
    assert response.status == 200
    assert json.loads(response.body) == {"purpose": "file-extract", "filename": "report.txt", "content": "hello file"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens here now: connecting is refused


async def test_a_refused_connection_is_api_connection_error(transport: AsyncTransport) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/echo"
    with pytest.raises(APIConnectionError) as info:
        await transport.send(out(url))
    assert type(info.value) is APIConnectionError and url in info.value.message
    assert "sk-secret" not in str(info.value) and info.value.__suppress_context__


async def test_a_slow_answer_is_a_read_timeout(server: str, transport: AsyncTransport) -> None:
    with pytest.raises(APITimeoutError) as info:
        await transport.send(out(server + "/slow", method="GET", body=None, read_timeout=0.2))
    assert type(info.value) is APITimeoutError and info.value.which == "read"
    assert "read timeout of 0.2 s" in info.value.message


async def test_a_slow_answer_past_the_total_deadline_is_the_deadline(server: str, transport: AsyncTransport) -> None:
    with pytest.raises(DeadlineExceededError) as info:
        await transport.send(out(server + "/slow", method="GET", body=None, total_timeout=0.3))
    assert info.value.which == "total"


async def test_open_stream_returns_at_the_headers_then_yields_the_body(server: str, transport: AsyncTransport) -> None:
    response = await transport.open_stream(out(server + "/stream", method="GET", body=None), idle_timeout=2.0)
    try:
        assert response.status == 200 and response.headers["msh-request-id"] == "rid-s"
        assert b"".join([piece async for piece in response.iter_raw()]) == b"data: 1\n\ndata: 2\n\n"
    finally:
        response.close()


async def test_a_stalled_stream_is_a_stream_idle_timeout(server: str, transport: AsyncTransport) -> None:
    response = await transport.open_stream(out(server + "/stall", method="GET", body=None), idle_timeout=0.3)
    pieces: list[bytes] = []
    try:
        with pytest.raises(StreamIdleTimeoutError) as info:
            async for piece in response.iter_raw():
                pieces.append(piece)
    finally:
        response.close()
    assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\n"
    assert info.value.which == "stream_idle" and "0.3 s" in info.value.message


async def test_a_body_cut_midway_is_api_connection_error(server: str, transport: AsyncTransport) -> None:
    response = await transport.open_stream(out(server + "/cut", method="GET", body=None), idle_timeout=2.0)
    try:
        with pytest.raises(APIConnectionError) as info:
            async for _ in response.iter_raw():
                pass
    finally:
        response.close()
    assert not isinstance(info.value, APITimeoutError)


async def test_a_callers_session_is_used_and_left_open(server: str) -> None:
    async with aiohttp.ClientSession() as own:
        aio = AsyncTransport(CONFIG, own)
        assert (await aio.send(out(server + "/echo"))).status == 200
        await aio.close()
        assert not own.closed
        with pytest.raises(ClientClosedError):
            await aio.send(out(server + "/echo"))


async def test_its_own_session_is_closed_by_close(server: str) -> None:
    aio = AsyncTransport(CONFIG)
    await aio.send(out(server + "/echo"))
    session = aio._session
    await aio.close()
    assert session is not None and session.closed


async def test_a_callers_session_closed_under_it_is_not_silently_replaced(server: str) -> None:
    """A replacement session would be one nobody closes (the caller owns the original)."""
    own = aiohttp.ClientSession()
    await own.close()
    aio = AsyncTransport(CONFIG, own)
    with pytest.raises(ClientClosedError, match="ClientSession passed to AsyncKimi as http_client is closed"):
        await aio.send(out(server + "/echo"))
    assert aio._session is own
    await aio.close()
