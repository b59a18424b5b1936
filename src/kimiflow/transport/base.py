"""What a transport returns. Transports are the only code that touches the network; they raise
kimiflow errors only (``APIConnectionError`` and its timeouts), never httpx/aiohttp exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from kimiflow.core.errors import DeadlineExceededError
from kimiflow.core.requests import UploadFile


@dataclass  # not frozen: a frozen dataclass's __init__ costs several µs, and one is built per attempt
class Outgoing:
    """A request on the wire: everything a transport needs, nothing it must interpret."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)  # carries the key: never in a repr or a traceback's locals
    body: bytes | None = None
    form: Mapping[str, str] | None = None
    files: tuple[UploadFile, ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    total_timeout: float | None = None
    """Seconds left of the call's total deadline for this attempt (what the transport enforces)."""
    deadline: float | None = None
    """The call's whole total deadline in seconds, as configured (what an error message quotes)."""

    def deadline_error(self) -> DeadlineExceededError:
        """The error for a passed total deadline, quoting the deadline the caller set, not this attempt's rest."""
        seconds = self.deadline if self.deadline is not None else self.total_timeout or 0.0
        return DeadlineExceededError(f"the total deadline of {seconds:.3g} s passed", which="total")


@dataclass
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class SyncStreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def iter_raw(self) -> Iterator[bytes]: ...
    def read(self) -> bytes: ...
    def close(self) -> None: ...


class AsyncStreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    def iter_raw(self) -> AsyncIterator[bytes]: ...
    async def read(self) -> bytes: ...
    def close(self) -> None: ...


class SyncTransportProtocol(Protocol):
    """What ``Kimi`` needs from a transport (``transport.sync.SyncTransport`` is the one kimiflow ships).

    ``send`` returns a whole response; ``open_stream`` returns once the headers are in, with the body
    left to ``iter_raw``. Both raise kimiflow errors only. ``close`` releases what the transport owns.
    """

    def send(self, outgoing: Outgoing) -> RawResponse: ...
    def open_stream(self, outgoing: Outgoing, idle_timeout: float) -> SyncStreamResponse: ...
    def close(self) -> None: ...


class AsyncTransportProtocol(Protocol):
    """What ``AsyncKimi`` needs from a transport (``transport.aio.AsyncTransport`` ships with kimiflow)."""

    async def send(self, outgoing: Outgoing) -> RawResponse: ...
    async def open_stream(self, outgoing: Outgoing, idle_timeout: float) -> AsyncStreamResponse: ...
    async def close(self) -> None: ...
