"""Fixtures of the limits tests: a fresh namespace per test and the implementation under test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from kimiflow.limits import Limiter, RateLimiter, RateLimits

from ..redis_server import RedisServer, free_port

__all__ = ["MakeLimiter", "RedisServer", "free_port"]


@pytest.fixture
def namespace() -> str:
    """Keys of this test only."""
    return f"test-{uuid.uuid4().hex[:12]}"


MakeLimiter = Callable[[RateLimits], Limiter]


@pytest.fixture(params=["local", "redis"])
async def make_limiter(request: pytest.FixtureRequest, redis_url: str, namespace: str) -> AsyncIterator[MakeLimiter]:
    """Builds the implementation under test: the in-process RateLimiter or a RedisLimiter."""
    made: list[object] = []

    def make(limits: RateLimits) -> Limiter:
        if request.param == "local":
            return RateLimiter(limits)
        from kimiflow.limits import RedisLimiter

        limiter = RedisLimiter(redis_url, limits, namespace=namespace, priority="interactive")
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()  # type: ignore[attr-defined]
