"""The simulator's HTTP plumbing: request ids, Kimi's headers, JSON and SSE responses, broken answers.

Endpoints build every answer through these helpers, so Kimi's headers (``Msh-Request-Id``,
``Msh-Gid``) and the connection-level faults (cut, stall, reset, truncated body) behave the same on
every route. The request id and the group id travel on the request itself (``REQUEST_ID``,
``GROUP_ID``), which keeps these helpers free of any reference to the server object.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from aiohttp import web

from kimiflow.sim import errors
from kimiflow.sim.faults import Fault
from kimiflow.sim.sse import KEEPALIVE

JSON_TYPE = "application/json; charset=utf-8"
REQUEST_ID = web.RequestKey("request_id", str)
GROUP_ID = web.RequestKey("group_id", str)
MAX_BODY_BYTES = 64 * 1024 * 1024
STALL_LIMIT_S = 300.0
"""The longest any stall or trickle fault holds a connection, so a forgotten client never pins one."""


class RequestIds:
    """``Msh-Request-Id`` values shaped like Kimi's (a UUID-looking string), unique per server.

    >>> ids = RequestIds()
    >>> ids.next()
    '3f2a9c1e-7b4d-11ef-9a0c-000000000001'
    """

    def __init__(self) -> None:
        self._prefix = "{:08x}-{:04x}-11ef-{:04x}-".format(*struct.unpack(">IHH", os.urandom(8)))
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:012x}"


def kimi_headers(request: web.BaseRequest, content_type: str) -> dict[str, str]:
    """Content-Type plus the ``Msh-*`` headers every Kimi answer carries."""
    return {"Content-Type": content_type, "Msh-Request-Id": request[REQUEST_ID], "Msh-Gid": request[GROUP_ID]}


def json_response(status: int, body: bytes, request: web.BaseRequest) -> web.Response:
    """A JSON answer with Kimi's headers."""
    return web.Response(status=status, body=body, headers=kimi_headers(request, JSON_TYPE))


def text_response(body: bytes, request: web.BaseRequest) -> web.Response:
    """A 200 plain-text answer with Kimi's headers (file content)."""
    return web.Response(status=200, body=body, headers=kimi_headers(request, "text/plain; charset=utf-8"))


def stream_response(request: web.BaseRequest) -> web.StreamResponse:
    """The SSE response object (not yet prepared)."""
    headers = kimi_headers(request, "text/event-stream")
    headers["Cache-Control"] = "no-cache"
    return web.StreamResponse(status=200, headers=headers)


def close_transport(request: web.BaseRequest) -> None:
    """Close the connection after what was written (an orderly FIN, no chunked terminator)."""
    transport = request.transport
    if transport is not None:
        transport.close()


def client_gone(request: web.BaseRequest) -> bool:
    """True once the client has closed its side (or the server dropped it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def read_body(request: web.BaseRequest) -> bytes:
    """The request body, up to 64 MB (aiohttp's own 1 MB cap is too small for 256k-token prompts)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise errors.SimError(413, "invalid_request_error", "Invalid request: the request body exceeds 64 MB")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise errors.SimError(413, "invalid_request_error", "Invalid request: the request body exceeds 64 MB")
        chunks.append(chunk)


async def stall_until_disconnect(request: web.BaseRequest, resp: web.StreamResponse, keepalive: float | None) -> None:
    """Send nothing (or only keep-alive comments) until the client leaves or 300 s pass.

    Real time on purpose: a stall exists to exercise the client's idle timeout, which is real time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STALL_LIMIT_S
    next_ping = loop.time() + keepalive if keepalive else None
    while loop.time() < deadline:
        if client_gone(request):
            return
        step = 0.05
        if next_ping is not None:
            now = loop.time()
            if now >= next_ping:
                await resp.write(KEEPALIVE)
                next_ping = now + keepalive  # type: ignore[operator]
            step = min(step, max(0.0, next_ping - now))
        await asyncio.sleep(step)
    close_transport(request)


async def broken_json_response(request: web.BaseRequest, body: bytes, fault: Fault) -> web.StreamResponse:
    """200 headers announcing ``body``, then half of it and a close (``cut``) or silence (``stall``)."""
    resp = web.StreamResponse(status=200, headers=kimi_headers(request, JSON_TYPE))
    resp.content_length = len(body)
    await resp.prepare(request)
    if fault.name == "stall":
        await stall_until_disconnect(request, resp, None)
    else:
        await resp.write(body[: len(body) // 2])
    close_transport(request)
    return resp


def truncated_json_response(request: web.BaseRequest, body: bytes) -> web.Response:
    """A complete, well-framed 200 whose JSON is cut mid-way: Content-Length matches the cut body.

    Unlike ``cut`` the HTTP layer sees nothing wrong, so only a client that parses the body notices.
    """
    cut = body[: max(1, len(body) // 2)]
    return web.Response(status=200, body=cut, headers=kimi_headers(request, JSON_TYPE))


def reset_connection(request: web.BaseRequest) -> web.StreamResponse:
    """Abort the TCP connection before any response byte: the client sees a reset."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close into a TCP RST instead of an orderly FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.StreamResponse(status=499)


async def json_or_fault(request: web.BaseRequest, body: bytes, fault: Fault | None) -> web.StreamResponse:
    """The 200 JSON answer, or its broken form when a body-level fault applies."""
    if fault is not None:
        if fault.name in ("cut", "stall"):
            return await broken_json_response(request, body, fault)
        if fault.name == "truncated-200":
            return truncated_json_response(request, body)
    return json_response(200, body, request)
