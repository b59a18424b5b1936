"""Pacing a client's calls through any ``Limiter``: what ``Kimi(limiter=...)`` / ``AsyncKimi(limiter=...)`` use.

>>> limiter = RedisLimiter("redis://127.0.0.1:6379/0", RateLimits.for_tier(1))   # or RateLimiter(...)
>>> async with AsyncKimi(limiter=limiter) as client:
...     await client.chat.completions.create(model="kimi-k3", messages=msgs)   # waits for room first

Each chat completion is charged like the batch charges it (``request_charge``: estimated prompt + its
``max_tokens`` or the model's catalog default), acquired before the first attempt, settled with the
answer's real usage and released when the call ends, whatever the outcome. A 429 that gets through is
reported to the limiter (``report_rate_limited``) before the retry loop pauses. A stream holds its
slot until its headers arrive: the RPM/TPM charge stays, the concurrency slot is freed then.

``SyncBridge`` runs a limiter's coroutines for the synchronous ``Kimi`` on one private event loop in a
daemon thread, so the same limiter object (and a Redis connection pool bound to that loop) serves
every call of that client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec

from kimiflow.core.errors import InvalidArgumentError
from kimiflow.limits.charge import Charge, request_charge
from kimiflow.limits.interface import Limiter

T = TypeVar("T")

PACED_PATHS = frozenset({"/chat/completions"})
"""The calls Kimi counts against a tier's RPM/TPM (files, models and balance are not paced)."""


def check_limiter(limiter: object) -> Limiter | None:
    """``limiter`` itself when it implements ``Limiter`` (or is None), else a clear error."""
    if limiter is None or isinstance(limiter, Limiter):
        return limiter
    raise InvalidArgumentError(
        f"limiter must implement kimiflow.limits.Limiter (acquire, try_acquire, settle, release, "
        f"report_rate_limited, limits), got {type(limiter).__name__}; use RateLimiter(...) or RedisLimiter(...)")


def charge_of(path: str, body: bytes | None) -> Charge | None:
    """The charge of a request to ``path`` with JSON ``body``, or None when Kimi does not count it."""
    if path not in PACED_PATHS or body is None:
        return None
    decoded = msgspec.json.decode(body)
    return request_charge(decoded if isinstance(decoded, dict) else {})


class SyncBridge:
    """Runs coroutines on one event loop in a daemon thread and waits for each result."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="kimiflow-limiter", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._get_loop()).result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
