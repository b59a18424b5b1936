"""The asynchronous transport, on aiohttp (the fastest asyncio HTTP stack for high concurrency).

Imported lazily by ``AsyncKimi`` so that ``import kimiflow`` does not pay for aiohttp.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import aiohttp

from kimiflow.core.errors import (
    APIConnectionError,
    APITimeoutError,
    ClientClosedError,
    StreamIdleTimeoutError,
    client_closed_error,
)
from kimiflow.transport.base import Outgoing, RawResponse

if TYPE_CHECKING:
    from kimiflow.core.config import ClientConfig

_LARGE_BODY = 1024 * 1024


def _timeout_error(exc: BaseException, outgoing: Outgoing, read: float, streaming: bool) -> APITimeoutError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"connecting to {outgoing.url} timed out after {outgoing.connect_timeout:g} s",
                               which="connect")
    if isinstance(exc, aiohttp.SocketTimeoutError):
        if streaming:
            return StreamIdleTimeoutError(f"no stream data for {read:g} s (stream idle timeout)", which="stream_idle")
        return APITimeoutError(f"no response within the read timeout of {read:g} s", which="read")
    # A bare asyncio.TimeoutError from aiohttp is its ``total`` timeout: our deadline.
    return outgoing.deadline_error()


def _connection_error(exc: BaseException, outgoing: Outgoing) -> APIConnectionError:
    return APIConnectionError(f"connection to {outgoing.url} failed: {type(exc).__name__}: {exc}")


class AiohttpStreamResponse:
    def __init__(self, response: aiohttp.ClientResponse, outgoing: Outgoing, read: float) -> None:
        self._response = response
        self._outgoing = outgoing
        self._read = read
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def iter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout_error(exc, self._outgoing, self._read, streaming=True) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, self._outgoing) from None

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout_error(exc, self._outgoing, self._read, streaming=False) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, self._outgoing) from None

    def close(self) -> None:
        self._response.close()


class AsyncTransport:
    """Sends requests with one ``aiohttp.ClientSession``, created lazily inside the running loop."""

    def __init__(self, config: ClientConfig, session: aiohttp.ClientSession | None = None) -> None:
        self._owns_session = session is None
        self._session = session
        self._max_connections = config.max_connections
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise client_closed_error("AsyncKimi")
        session = self._session
        if session is not None and not session.closed and session._loop is not asyncio.get_running_loop():
            # aiohttp connections belong to one event loop; silently opening a second pool would strand
            # the first one's sockets (the old loop cannot close them any more).
            raise ClientClosedError(
                "this AsyncKimi was first used in another event loop: use one AsyncKimi per event loop, "
                "created inside the loop that uses it (e.g. in your asyncio.run() main)")
        if session is not None and session.closed and not self._owns_session:
            # Opening a replacement would leave a pool nobody closes: the caller owns this one.
            raise ClientClosedError("the aiohttp.ClientSession passed to AsyncKimi as http_client is closed: "
                                    "keep it open while the AsyncKimi uses it, or pass a new one")
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
            session = self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True, skip_auto_headers=("Accept-Encoding",)
            )
        return session

    def _request_kwargs(self, outgoing: Outgoing, read: float) -> dict[str, object]:
        timeout = aiohttp.ClientTimeout(total=outgoing.total_timeout, sock_connect=outgoing.connect_timeout,
                                        sock_read=read)
        if outgoing.files or outgoing.form:
            form = aiohttp.FormData()
            for name, value in (outgoing.form or {}).items():
                form.add_field(name, value)
            for upload in outgoing.files:
                form.add_field(upload.field, upload.content, filename=upload.filename,
                               content_type=upload.content_type)
            return {"headers": outgoing.headers, "data": form, "timeout": timeout, "allow_redirects": False}
        raw = outgoing.body
        # aiohttp warns (ResourceWarning) about large raw-bytes bodies; a stream it is happy with.
        body = io.BytesIO(raw) if raw is not None and len(raw) > _LARGE_BODY else raw
        return {"headers": outgoing.headers, "data": body, "timeout": timeout, "allow_redirects": False}

    async def send(self, outgoing: Outgoing) -> RawResponse:
        read = outgoing.read_timeout
        try:
            async with self._get_session().request(
                outgoing.method, outgoing.url, **self._request_kwargs(outgoing, read)
            ) as response:
                body = await response.read()
                return RawResponse(response.status, response.headers, body)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout_error(exc, outgoing, read, streaming=False) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, outgoing) from None

    async def open_stream(self, outgoing: Outgoing, idle_timeout: float) -> AiohttpStreamResponse:
        try:
            response = await self._get_session().request(
                outgoing.method, outgoing.url, **self._request_kwargs(outgoing, idle_timeout)
            )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout_error(exc, outgoing, idle_timeout, streaming=False) from None
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, outgoing) from None
        return AiohttpStreamResponse(response, outgoing, idle_timeout)

    async def close(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
