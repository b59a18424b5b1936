"""The synchronous transport, on httpx. One request in, one ``RawResponse`` (or open stream) out."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import httpx

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


def _timeout_error(exc: httpx.TimeoutException, outgoing: Outgoing, streaming: bool) -> APITimeoutError:
    if isinstance(exc, httpx.ConnectTimeout):
        return APITimeoutError(f"connecting to {outgoing.url} timed out after {outgoing.connect_timeout:g} s",
                               which="connect")
    if isinstance(exc, httpx.PoolTimeout):
        return APITimeoutError("no free connection in the pool in time", which="pool")
    if outgoing.total_timeout is not None and outgoing.total_timeout <= outgoing.read_timeout:
        return outgoing.deadline_error()
    if streaming:
        return StreamIdleTimeoutError(
            f"no stream data for {outgoing.read_timeout:g} s (stream idle timeout)", which="stream_idle")
    return APITimeoutError(f"no response within the read timeout of {outgoing.read_timeout:g} s", which="read")


def _connection_error(exc: httpx.HTTPError, outgoing: Outgoing) -> APIConnectionError:
    return APIConnectionError(f"connection to {outgoing.url} failed: {type(exc).__name__}: {exc}")


class HttpxStreamResponse:
    """An open streaming response; ``iter_raw`` maps httpx errors to kimiflow's."""

    def __init__(self, response: httpx.Response, outgoing: Outgoing) -> None:
        self._response = response
        self._outgoing = outgoing
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def iter_raw(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw()
        except httpx.TimeoutException as exc:
            raise _timeout_error(exc, self._outgoing, streaming=True) from None
        except httpx.HTTPError as exc:
            raise _connection_error(exc, self._outgoing) from None

    def read(self) -> bytes:
        try:
            return self._response.read()
        except httpx.TimeoutException as exc:
            raise _timeout_error(exc, self._outgoing, streaming=False) from None
        except httpx.HTTPError as exc:
            raise _connection_error(exc, self._outgoing) from None

    def close(self) -> None:
        self._response.close()


class SyncTransport:
    """Sends requests with one pooled ``httpx.Client``. Pass ``http_client`` to bring your own
    (e.g. one with an ``httpx.MockTransport`` in unit tests)."""

    def __init__(self, config: ClientConfig, http_client: httpx.Client | None = None) -> None:
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(
            limits=httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,
        )

    @staticmethod
    def _timeout(outgoing: Outgoing, read: float) -> httpx.Timeout:
        connect = outgoing.connect_timeout
        if outgoing.total_timeout is not None:
            connect = min(connect, outgoing.total_timeout)  # the deadline bounds connecting too
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _check_open(self) -> None:
        if self._client.is_closed:
            if not self._owns_client:
                raise ClientClosedError("the httpx.Client passed to Kimi as http_client is closed: keep it open "
                                        "while the Kimi uses it, or pass a new one")
            raise client_closed_error("Kimi")

    def _build(self, outgoing: Outgoing, read: float) -> httpx.Request:
        files = [(f.field, (f.filename, f.content, f.content_type)) for f in outgoing.files] or None
        return self._client.build_request(
            outgoing.method,
            outgoing.url,
            headers=outgoing.headers,
            content=outgoing.body,
            data=dict(outgoing.form) if outgoing.form else None,
            files=files,
            timeout=self._timeout(outgoing, read),
        )

    def send(self, outgoing: Outgoing) -> RawResponse:
        self._check_open()
        total = outgoing.total_timeout
        read = outgoing.read_timeout if total is None else min(outgoing.read_timeout, total)
        try:
            request = self._build(outgoing, read)
            if total is None:
                response = self._client.send(request)
                return RawResponse(response.status_code, response.headers, response.content)
            # httpx has no total timeout: read in pieces and watch the deadline ourselves.
            deadline = time.monotonic() + total
            response = self._client.send(request, stream=True)
            try:
                pieces = []
                # iter_bytes, not iter_raw: decoded like .content (gzip), and a body already read (a
                # MockTransport's) is handed over instead of raising StreamConsumed.
                for piece in response.iter_bytes():
                    pieces.append(piece)
                    if time.monotonic() > deadline:
                        raise outgoing.deadline_error()
                return RawResponse(response.status_code, response.headers, b"".join(pieces))
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise _timeout_error(exc, outgoing, streaming=False) from None
        except httpx.HTTPError as exc:
            raise _connection_error(exc, outgoing) from None

    def open_stream(self, outgoing: Outgoing, idle_timeout: float) -> HttpxStreamResponse:
        """Send and return once the response headers are in; the body is read by iterating."""
        self._check_open()
        total = outgoing.total_timeout
        read = idle_timeout if total is None else min(idle_timeout, total)
        try:
            request = self._build(outgoing, read)
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise _timeout_error(exc, outgoing, streaming=False) from None
        except httpx.HTTPError as exc:
            raise _connection_error(exc, outgoing) from None
        return HttpxStreamResponse(response, Outgoing(**{**outgoing.__dict__, "read_timeout": read}))

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
