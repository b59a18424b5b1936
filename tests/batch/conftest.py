"""Helpers for the batch tests: JSONL files and an in-process simulator."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kimiflow.sim import SimConfig, Simulator


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """Write rows (dicts are JSON-encoded, strings written verbatim) one per line."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompts(n: int, max_tokens: int = 20) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "prompt": f"question {i}", "max_tokens": max_tokens} for i in range(n)]


@pytest.fixture
async def fresh_sim() -> AsyncIterator[Simulator]:
    """A simulator of its own (fresh counters), no tier limits, fast."""
    async with Simulator(SimConfig(seed=1)) as simulator:
        yield simulator


Reply = tuple[int, dict[str, Any]] | None
"""A scripted answer: ``(status, JSON body)``, or ``None`` to reset the connection."""


def completion(content: str = "ok", prompt_tokens: int = 5, completion_tokens: int = 2) -> dict[str, Any]:
    """A minimal valid chat.completion body."""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": "moonshot-v1-8k",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


class ScriptedServer:
    """A loopback HTTP server whose chat endpoint answers what ``script(body)`` returns.

    ``script`` gets the request's JSON body; the default answers every request with a completion.
    ``received`` lists the prompts (last user message) in arrival order.
    """

    def __init__(self, script: Callable[[dict[str, Any]], Awaitable[Reply]] | None = None) -> None:
        self.script = script
        self.received: list[str] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(str(body["messages"][-1]["content"]))
        reply: Reply = (200, completion()) if self.script is None else await self.script(body)
        if reply is None:
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            return web.Response(status=499)
        status, payload = reply
        return web.json_response(payload, status=status, headers={"Msh-Request-Id": "req-test"})

    async def __aenter__(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
