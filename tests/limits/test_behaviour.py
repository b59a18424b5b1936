"""One behavioural suite for every Limiter: the in-process RateLimiter and the RedisLimiter (real redis-server).

Both run on real time here (Redis keeps its own clock), so windows are a second or two long and the
timing bounds leave room for a loaded machine. The fake-clock tests of the books' exact arithmetic
stay in ``test_local.py`` and ``test_books.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kimiflow.limits import Charge, Lease, Limiter, RateLimits, RequestTooLargeError, request_charge
from kimiflow.types.chat import Usage

from .conftest import MakeLimiter


def short(**kw: int | float) -> RateLimits:
    """Limits with a one-second window and no margin or guard, so the numbers below are exact."""
    kw.setdefault("window_seconds", 1.0)
    return RateLimits(margin=0.0, guard_seconds=0.0, **kw)  # type: ignore[arg-type]


async def test_rpm_paces_requests_into_the_next_window(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(rpm=5))
    start = time.monotonic()
    times = []
    for _ in range(12):
        async with lim.slot():  # type: ignore[attr-defined]
            times.append(time.monotonic() - start)
    assert max(times[:5]) < 0.5
    assert all(0.95 <= t < 1.6 for t in times[5:10]), times
    assert all(1.95 <= t < 2.7 for t in times[10:]), times


async def test_tpm_waits_for_the_window_then_admits(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(tpm=1_000))
    start = time.monotonic()
    lease = await lim.acquire(Charge(800))
    await lim.release(lease)
    refused = await lim.try_acquire(Charge(500))
    assert refused.lease is None and refused.reason == "tpm" and refused.wait is not None and 0 < refused.wait <= 1.1
    lease = await lim.acquire(Charge(500))
    assert 0.95 <= time.monotonic() - start < 1.8
    await lim.release(lease)


async def test_settle_charges_real_prompt_plus_max_tokens(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(tpm=1_000, window_seconds=60.0))
    async with lim.slot(Charge(600, 100)) as slot:  # type: ignore[attr-defined]
        slot.settle(Usage(prompt_tokens=200, completion_tokens=5, total_tokens=205))
    # 200 + 100 charged, so 700 more fit in this minute but 701 do not.
    assert (await lim.try_acquire(Charge(0, 701))).lease is None
    admitted = await lim.try_acquire(Charge(0, 700))
    assert admitted.lease is not None
    refused = await lim.try_acquire(Charge(0, 1))
    assert refused.lease is None and refused.reason == "tpm"


async def test_settle_never_charges_less_than_the_whole_output_budget(make_limiter: MakeLimiter) -> None:
    """Kimi counts max_tokens (or the model's default), not the output: a short answer refunds nothing."""
    charge = request_charge({"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]})
    assert charge.max_tokens == 1024
    lim = make_limiter(short(tpm=2_000, window_seconds=60.0))
    lease = await lim.acquire(charge)
    await lim.settle(lease, Usage(prompt_tokens=50, completion_tokens=5, total_tokens=55))
    await lim.settle(lease, None)  # a second settle changes nothing
    await lim.release(lease)
    # 50 + 1024 charged: 926 more fit this minute, 927 do not.
    assert (await lim.try_acquire(Charge(0, 927))).lease is None
    assert (await lim.try_acquire(Charge(0, 926))).lease is not None
    assert (await lim.try_acquire(Charge(0, 1))).lease is None


async def test_concurrency_blocks_until_a_release_and_waiters_go_first_in_first_out(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(concurrency=2))
    order: list[int] = []
    gate = asyncio.Event()

    async def worker(i: int) -> None:
        async with lim.slot():  # type: ignore[attr-defined]
            order.append(i)
            await gate.wait()

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(worker(i)))
        await asyncio.sleep(0.01)  # queue them in a known order
    await asyncio.sleep(0.3)
    assert order == [0, 1]
    refused = await lim.try_acquire(Charge())
    assert refused.lease is None and refused.wait is None and refused.reason == "concurrency"
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert order == [0, 1, 2, 3, 4, 5]
    both = [await lim.try_acquire(Charge()) for _ in range(2)]
    assert all(a.lease is not None for a in both)  # every slot came back


async def test_slot_is_released_when_the_request_raises(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(concurrency=1))
    with pytest.raises(RuntimeError):
        async with lim.slot():  # type: ignore[attr-defined]
            raise RuntimeError("boom")
    async with lim.slot():  # type: ignore[attr-defined]
        assert (await lim.try_acquire(Charge())).reason == "concurrency"


async def test_the_limiter_interface_acquire_settle_release(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(tpm=1_000, concurrency=1, window_seconds=60.0))
    assert isinstance(lim, Limiter)
    lease = await lim.acquire(Charge(300, 200))
    assert isinstance(lease, Lease) and lease.charge.tokens == 500
    refused = await lim.try_acquire(Charge(1, 1))
    assert refused.lease is None and refused.wait is None and refused.reason == "concurrency"
    await lim.settle(lease, Usage(prompt_tokens=100, completion_tokens=150, total_tokens=250))
    await lim.release(lease)
    await lim.release(lease)  # idempotent: the slot is not freed twice
    admitted = await lim.try_acquire(Charge(0, 700))  # 100 + 200 settled, so 700 fit
    assert admitted.lease is not None
    assert (await lim.try_acquire(Charge(0, 1))).lease is None


async def test_report_rate_limited_pauses_admissions_for_retry_after(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(rpm=1000))
    start = time.monotonic()
    await lim.report_rate_limited(retry_after=0.6)
    paused = await lim.try_acquire(Charge())
    assert paused.lease is None and paused.reason == "paused after a 429"
    assert paused.wait is not None and 0.3 < paused.wait <= 0.6
    lease = await lim.acquire(Charge())
    assert 0.55 <= time.monotonic() - start < 1.5
    await lim.release(lease)


async def test_a_request_larger_than_the_limit_is_refused_with_a_clear_error(make_limiter: MakeLimiter) -> None:
    lim = make_limiter(short(tpm=1_000))
    with pytest.raises(RequestTooLargeError, match="can never fit the TPM limit of 1000; lower max_tokens"):
        await lim.acquire(Charge(900, 200))
    with pytest.raises(RequestTooLargeError):
        await lim.try_acquire(Charge(0, 1001))
