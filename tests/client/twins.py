"""Run one behaviour test against both clients: ``Kimi`` directly, ``AsyncKimi`` inside an event loop.

A test body is written once as ``twin.run(lambda c: c.chat.completions.create(...))``; for the
async client the returned coroutine is awaited. Streams are collected with ``twin.stream(...)``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from kimiflow import AsyncKimi, Kimi


class Twin:
    def __init__(self, kind: str, **client_kwargs: Any) -> None:
        self.kind = kind
        self.kwargs = client_kwargs
        self.sleeps: list[float] = []

    def _sync_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def _async_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client_kwargs(self, **extra: Any) -> dict[str, Any]:
        kwargs = {**self.kwargs, **extra}
        kwargs.setdefault("sleep", self._sync_sleep if self.kind == "sync" else self._async_sleep)
        return kwargs

    def run(self, body: Callable[[Any], Any], **extra: Any) -> Any:
        """Call ``body(client)`` with a fresh client; await it for the async twin."""
        if self.kind == "sync":
            with Kimi(**self.client_kwargs(**extra)) as client:
                return body(client)

        async def main() -> Any:
            async with AsyncKimi(**self.client_kwargs(**extra)) as client:
                result = body(client)
                if inspect.isawaitable(result):
                    result = await result
                return result

        return asyncio.run(main())

    def stream(self, open_stream: Callable[[Any], Any], *, limit: int | None = None,
               while_open: Callable[[], None] | None = None, **extra: Any) -> list[Any]:
        """Open a stream with ``open_stream(client)`` and collect its chunks (at most ``limit``).

        ``while_open`` runs after the stream is done with (ended, broken off or failed) but while the
        client and its connection pool are still open, so it can check what the stream itself released.
        """
        if self.kind == "sync":
            with Kimi(**self.client_kwargs(**extra)) as client:
                chunks = []
                try:
                    with open_stream(client) as stream:
                        for chunk in stream:
                            chunks.append(chunk)
                            if limit is not None and len(chunks) >= limit:
                                break
                finally:
                    if while_open is not None:
                        while_open()
                return chunks

        async def main() -> list[Any]:
            async with AsyncKimi(**self.client_kwargs(**extra)) as client:
                chunks = []
                try:
                    stream = open_stream(client)
                    if inspect.isawaitable(stream):
                        stream = await stream
                    async with stream:
                        async for chunk in stream:
                            chunks.append(chunk)
                            if limit is not None and len(chunks) >= limit:
                                break
                finally:
                    if while_open is not None:
                        await asyncio.to_thread(while_open)
                return chunks

        return asyncio.run(main())
