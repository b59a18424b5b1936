"""Small hostile upstreams on 127.0.0.1 for tests: what a broken proxy or a malicious server sends.

One aiohttp server, many behaviours: the first path segment of the base URL picks one, so a test
points a client at ``server.url("trickle")`` and gets an upstream that sends one byte of an
unterminated ``data:`` line every ``interval`` seconds. Every behaviour is bounded in bytes and
time, so a client that fails to give up cannot hang the test run.

- ``trickle``           200 event stream: ``data: `` and then one byte every ``interval`` s, never a line end
- ``flood``             200 event stream: one unterminated ``data:`` line of ``flood_bytes`` bytes, sent fast
- ``echo-status``       500 whose ``Msh-Request-Id``, error message, error type and extra fields echo the key
- ``echo-bad-json``     500 whose body is not JSON and holds the key (after 190 bytes, so a cut excerpt would
                        show its start)
- ``echo-malformed``    200 (JSON or stream) with the key in ``Msh-Request-Id`` and in a body that is not valid
- ``echo-error-event``  200 stream: one good chunk, then an ``error`` event that echoes the key
- ``truncate``          200 JSON completion cut off in the middle (no key)
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

_GOOD_CHUNK = {
    "id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 1, "model": "moonshot-v1-8k",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial answer"}, "finish_reason": None}],
}
_COMPLETION = {
    "id": "chatcmpl-hostile", "object": "chat.completion", "created": 1, "model": "moonshot-v1-8k",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 300}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _key_of(request: web.Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


async def _wants_stream(request: web.Request) -> bool:
    try:
        return bool((await request.json()).get("stream"))
    except (ValueError, AttributeError):
        return False


class HostileServer:
    """The upstreams above; ``url(behaviour)`` is a base URL for a client."""

    def __init__(self, *, interval: float = 0.2, max_seconds: float = 20.0, flood_bytes: int = 20 * 2**20) -> None:
        self.interval = interval
        self.max_seconds = max_seconds
        self.flood_bytes = flood_bytes
        self.port = 0
        self.received = 0  # requests that reached this upstream, whatever the behaviour

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.port}/{behaviour}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{behaviour}/v1/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        behaviour = request.match_info["behaviour"]
        self.received += 1
        key = _key_of(request)
        if behaviour == "trickle":
            return await self._trickle(request)
        if behaviour == "flood":
            return await self._flood(request)
        if behaviour == "echo-status":
            body = {"error": {"message": f"the key {key} is not allowed", "type": f"server_error {key}"},
                    "detail": [f"Bearer {key}"]}
            return web.json_response(body, status=500, headers={"Msh-Request-Id": f"req-{key}"})
        if behaviour == "echo-bad-json":
            return web.Response(status=500, text="<html>" + "p" * 184 + f"proxy saw {key}</html>",
                                headers={"Msh-Request-Id": key})
        if behaviour == "echo-malformed":
            if await _wants_stream(request):
                frames = (f"data: {json.dumps(_GOOD_CHUNK)}\n\n" + "data: " + "{" * 190 + f"{key}\n\n").encode()
                return await self._events(request, frames, {"Msh-Request-Id": key})
            return web.Response(status=200, text='{"id": ' + " " * 190 + f'"{key}', content_type="application/json",
                                headers={"Msh-Request-Id": key})
        if behaviour == "echo-error-event":
            error = {"error": {"message": f"upstream rejected {key}", "type": key}}
            frames = (f"data: {json.dumps(_GOOD_CHUNK)}\n\nevent: error\ndata: {json.dumps(error)}\n\n").encode()
            return await self._events(request, frames, {"Msh-Request-Id": f"req-{key}"})
        if behaviour == "truncate":
            text = json.dumps(_COMPLETION)
            return web.Response(status=200, text=text[: len(text) // 2], content_type="application/json")
        return web.json_response({"error": {"message": f"no behaviour {behaviour!r}"}}, status=404)

    async def _start_events(self, request: web.Request, headers: dict[str, str] | None = None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await response.prepare(request)
        return response

    async def _events(self, request: web.Request, frames: bytes, headers: dict[str, str]) -> web.StreamResponse:
        response = await self._start_events(request, headers)
        await response.write(frames)
        await response.write_eof()
        return response

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        response = await self._start_events(request)
        await response.write(b"data: ")
        loop = asyncio.get_running_loop()
        end = loop.time() + self.max_seconds
        try:
            while loop.time() < end:
                await asyncio.sleep(self.interval)
                await response.write(b"x")
        except (ConnectionError, RuntimeError):
            pass  # the client gave up: exactly what a test wants
        return response

    async def _flood(self, request: web.Request) -> web.StreamResponse:
        response = await self._start_events(request)
        piece = b"data: " + b"y" * (64 * 1024 - 6)
        sent = 0
        try:
            while sent < self.flood_bytes:
                await response.write(piece)
                sent += len(piece)
                piece = b"y" * len(piece)
        except (ConnectionError, RuntimeError):
            pass
        return response


@contextmanager
def run_hostile(server: HostileServer | None = None, start_timeout: float = 10.0) -> Iterator[HostileServer]:
    """Serve ``server`` on 127.0.0.1 from a background thread for the ``with`` block."""
    server = server or HostileServer()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(server.app(), handle_signals=False)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="hostile-upstream", daemon=True)
    thread.start()
    if not ready.wait(start_timeout):
        raise RuntimeError("the hostile upstream did not start")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(start_timeout)
