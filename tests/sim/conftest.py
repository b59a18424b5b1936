"""Fixtures for simulator tests: a fresh simulator per test on 127.0.0.1 and a small HTTP helper."""

from __future__ import annotations

import io
import json as jsonlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest

from kimiflow.sim import SimConfig, Simulator


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """An instant ``sleep`` that records every requested delay."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def error(self) -> dict[str, Any]:
        data: dict[str, Any] = self.json()["error"]
        return data

    def events(self) -> list[Any]:
        """The SSE ``data:`` payloads in order: dicts, or the string ``"[DONE]"``."""
        out: list[Any] = []
        for block in self.body.decode().split("\n\n"):
            for line in block.split("\n"):
                if line.startswith("data: "):
                    data = line[len("data: ") :]
                    out.append(data if data == "[DONE]" else msgspec.json.decode(data))
        return out


class Api:
    """Requests against one simulator with its key (or another key / none)."""

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    def _headers(self, key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
        out = dict(headers or {})
        if key is not None:
            out["Authorization"] = f"Bearer {key}"
        return out

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = "default",
    ) -> Reply:
        used_key = self.sim.api_key if key == "default" else key
        all_headers = self._headers(used_key, headers)
        if json is not None:
            # Encoded here and sent as a stream: aiohttp warns about large raw-bytes bodies.
            data = io.BytesIO(jsonlib.dumps(json, ensure_ascii=False).encode())
            all_headers = {"Content-Type": "application/json", **all_headers}
        async with self.session.request(method, self.sim.base_url + path, data=data, headers=all_headers) as resp:
            body = await resp.read()
            return Reply(resp.status, resp.headers, body)

    async def chat(self, body: dict[str, Any], **kwargs: Any) -> Reply:
        payload = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "你好，介绍一下 Kimi"}]}
        payload.update(body)
        return await self.request("POST", "/chat/completions", json=payload, **kwargs)


SimFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api() -> AsyncIterator[SimFactory]:
    """Start a simulator with the given ``SimConfig`` fields; returns an ``Api`` bound to it."""
    sims: list[Simulator] = []
    session = aiohttp.ClientSession()

    async def factory(**config: Any) -> Api:
        sim = Simulator(SimConfig(**config))
        await sim.start()
        sims.append(sim)
        return Api(sim, session)

    yield factory
    await session.close()
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def api(make_api: SimFactory) -> Api:
    """A default simulator (no limits, fast, seed 0)."""
    return await make_api()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
