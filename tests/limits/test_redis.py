"""What only a shared store has to get right: dead holders, racing processes, outages, priorities, key hygiene."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from kimiflow.core.errors import InvalidArgumentError, KimiflowError
from kimiflow.limits import Charge, LimiterUnavailableError, RateLimits, RedisLimiter, Ticket

from .conftest import RedisServer, free_port

LIMITS = RateLimits(concurrency=1, margin=0.0, guard_seconds=0.0)



CHILD_PREAMBLE = """
import asyncio, os, sys, time
from kimiflow.limits import Charge, RateLimits, RedisLimiter
url, ns = sys.argv[1], sys.argv[2]
"""


async def run_children(code: str, *args: str, count: int = 1, timeout: float = 60) -> list[str]:
    """Run ``count`` Python processes of ``code`` at once; their stdout lines, in order of start."""
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD_PREAMBLE + textwrap.dedent(code), *args,
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(count)]
    outs = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
        assert proc.returncode == 0, err.decode()
        outs.append(out.decode().strip())
    return outs


async def test_a_dead_holders_lease_comes_back_after_the_lease_time(redis_url: str, namespace: str) -> None:
    # The child takes the only slot and dies without releasing it, as kill -9 would leave it.
    [out] = await run_children("""
        async def main():
            lim = RedisLimiter(url, RateLimits(concurrency=1), namespace=ns, lease_seconds=1.0)
            await lim.acquire(Charge())
            print("held", flush=True)
            os._exit(0)
        asyncio.run(main())
    """, redis_url, namespace)
    assert out == "held"
    died = time.monotonic()
    async with RedisLimiter(redis_url, LIMITS, namespace=namespace) as lim:
        refused = await lim.try_acquire(Charge())
        assert refused.lease is None and refused.reason == "concurrency"
        lease = await asyncio.wait_for(lim.acquire(Charge()), timeout=10)
        assert time.monotonic() - died < 1.6
        await lim.release(lease)


async def test_a_held_lease_is_renewed_until_its_holder_stops_renewing(redis_url: str, namespace: str) -> None:
    async with RedisLimiter(redis_url, LIMITS, namespace=namespace, lease_seconds=0.6) as holder, \
            RedisLimiter(redis_url, LIMITS, namespace=namespace) as other:
        await holder.acquire(Charge())
        for _ in range(8):  # 2.4 s: four lease times, kept alive by the renew task
            await asyncio.sleep(0.3)
            assert (await other.try_acquire(Charge())).reason == "concurrency"
        assert holder._renewer is not None
        holder._renewer.cancel()  # the holder hangs (or its loop stalls): nobody renews
        stopped = time.monotonic()
        lease = await asyncio.wait_for(other.acquire(Charge()), timeout=10)
        assert time.monotonic() - stopped < 1.2
        await other.release(lease)


async def test_processes_racing_for_the_last_slot_exactly_one_wins(redis_url: str, namespace: str,
                                                                   tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = CHILD_PREAMBLE + textwrap.dedent("""
        async def main():
            lim = RedisLimiter(url, RateLimits(concurrency=1), namespace=ns)
            await lim._redis.ping()  # connected before the race, so the race is only the admission
            print("ready", flush=True)
            deadline = time.monotonic() + 60
            while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:
                time.sleep(0.001)  # spin so that every child asks within a millisecond of the others
            got = await lim.try_acquire(Charge())
            print("won" if got.lease else "lost:" + got.reason, flush=True)
            os._exit(0)
        asyncio.run(main())
    """)
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, redis_url, namespace, str(go),
                                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(6)]
    for proc in procs:  # all started and connected-to-be before anyone may ask
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).strip() == b"ready"
    go.touch()
    outs = []
    for proc in procs:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        outs.append(out.decode().strip())
    assert sorted(outs) == ["lost:concurrency"] * 5 + ["won"]


async def test_two_limiters_share_one_accounts_windows_and_pause(redis_url: str, namespace: str) -> None:
    limits = RateLimits(rpm=3, margin=0.0, guard_seconds=0.0)
    async with RedisLimiter(redis_url, limits, namespace=namespace) as a, \
            RedisLimiter(redis_url, limits, namespace=namespace) as b, \
            RedisLimiter(redis_url, limits, namespace=namespace, key="another-account") as elsewhere:
        assert (await a.try_acquire(Charge())).lease and (await b.try_acquire(Charge())).lease
        assert (await a.try_acquire(Charge())).lease
        refused = await b.try_acquire(Charge())
        assert refused.lease is None and refused.reason == "rpm" and refused.wait is not None and refused.wait > 50
        assert (await elsewhere.try_acquire(Charge())).lease is not None  # another key has its own books
        await elsewhere.report_rate_limited(retry_after=30)
        assert (await a.try_acquire(Charge())).reason == "rpm"  # the pause stays with its account
        await a.report_rate_limited(retry_after=30)
        paused = await b.try_acquire(Charge())
        assert paused.reason == "paused after a 429" and paused.wait is not None and 29 < paused.wait <= 30


async def test_near_the_limit_batch_callers_are_refused_first(redis_url: str, namespace: str) -> None:
    limits = RateLimits(rpm=20, concurrency=100, margin=0.0, guard_seconds=0.0)
    async with RedisLimiter(redis_url, limits, namespace=namespace, priority="batch") as batch, \
            RedisLimiter(redis_url, limits, namespace=namespace, priority="default") as default, \
            RedisLimiter(redis_url, limits, namespace=namespace, priority="interactive") as online:
        admitted = 0
        while (await batch.try_acquire(Charge())).lease is not None and admitted < 100:
            admitted += 1
        assert admitted == 18  # 90 %
        assert (await default.try_acquire(Charge())).lease is not None  # up to 95 %: one more
        assert (await default.try_acquire(Charge())).reason == "rpm"
        assert (await online.try_acquire(Charge())).lease is not None  # the last 5 % is the online traffic's
        assert (await online.try_acquire(Charge())).lease is None
        assert (await batch.try_acquire(Charge())).reason == "rpm"


async def test_keys_hold_no_secret_and_all_expire(redis_url: str, namespace: str) -> None:
    import redis.asyncio

    secret = "sk-" + uuid.uuid4().hex
    limits = RateLimits(concurrency=5, rpm=100, tpm=10_000, tpd=100_000)
    async with RedisLimiter(redis_url, limits, namespace=namespace, key=secret) as lim:
        lease = await lim.acquire(Charge(10, 20))
        await lim.report_rate_limited(retry_after=0.05)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            keys = [k.decode() async for k in client.scan_iter(match=f"{namespace}:*")]
            assert {k.rsplit(":", 1)[1] for k in keys} >= {"leases", "rpm", "tpm", "tpd"}
            for name in keys:
                assert secret not in name and secret[3:15] not in name
                assert 0 < await client.pttl(name) <= 86_400_000 + 200_000  # nothing stays forever
                dumped = await client.dump(name)
                assert dumped is not None and secret.encode() not in dumped
        finally:
            await client.aclose()
        await lim.release(lease)
        assert secret not in repr(lim)


async def test_redis_restarted_mid_run_fail_closed_then_recovers(tmp_path: Path, namespace: str) -> None:
    server = RedisServer(tmp_path, port=free_port()).start()
    try:
        async with RedisLimiter(server.url, RateLimits(concurrency=10), namespace=namespace) as lim:
            held = await lim.acquire(Charge())
            server.stop()
            with pytest.raises(LimiterUnavailableError, match=r"unreachable .*nothing was admitted") as caught:
                await lim.try_acquire(Charge())
            assert isinstance(caught.value, KimiflowError) and caught.value.retry_after > 0
            with pytest.raises(LimiterUnavailableError):
                await lim.acquire(Charge())
            await lim.release(held)  # the request is over either way: logged, not raised
            server.start()
            lease = await lim.acquire(Charge())  # the same limiter, its pool reconnected
            await lim.release(lease)
    finally:
        server.stop()


async def test_local_share_admits_a_share_of_the_limits_during_an_outage(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kimiflow.limits.redis as module

    monkeypatch.setattr(module, "PROBE_SECONDS", 0.2)
    server = RedisServer(tmp_path, port=free_port()).start()
    caplog.set_level(logging.WARNING, logger="kimiflow.limits.redis")
    try:
        async with RedisLimiter(server.url, RateLimits(concurrency=6, rpm=600), namespace=namespace,
                                on_unavailable="local-share", replicas=3) as lim:
            assert (await lim.try_acquire(Charge())).lease is not None
            server.stop()
            local = [await lim.try_acquire(Charge()) for _ in range(3)]
            assert [a.lease is not None for a in local] == [True, True, False]  # 6 / 3 replicas = 2 in flight
            assert local[2].reason == "concurrency"
            outage = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(outage) == 1 and outage[0].levelno == logging.WARNING  # once per outage, not per call
            assert "2 in flight, 200 RPM" in outage[0].getMessage()
            for admission in local[:2]:
                assert admission.lease is not None
                await lim.release(admission.lease)
            assert (await lim.try_acquire(Charge())).lease is not None  # the local share frees its slots
            server.start()
            await asyncio.sleep(0.25)
            back = await lim.try_acquire(Charge())
            assert back.lease is not None and not isinstance(back.lease.handle, module.Ticket)
            assert any("answers again" in r.getMessage() for r in caplog.records)
            await lim.release(back.lease)
    finally:
        server.stop()


def test_bad_settings_are_one_clear_line() -> None:
    with pytest.raises(InvalidArgumentError, match=r"redis://, rediss:// or unix:// URL, got 'http://h:1/0'"):
        RedisLimiter("http://user:hunter2@h:1/0", LIMITS)
    with pytest.raises(InvalidArgumentError) as caught:
        RedisLimiter("http://user:hunter2@h:1/0", LIMITS)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(InvalidArgumentError, match="priority= must be one of interactive, default, batch"):
        RedisLimiter("redis://127.0.0.1:1/0", LIMITS, priority="urgent")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="on_unavailable="):
        RedisLimiter("redis://127.0.0.1:1/0", LIMITS, on_unavailable="fail-open")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="replicas="):
        RedisLimiter("redis://127.0.0.1:1/0", LIMITS, replicas=0)


def test_import_kimiflow_limits_does_not_import_redis() -> None:
    code = "import sys, kimiflow.limits; assert 'redis' not in sys.modules, 'redis imported'; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "ok\n"


async def test_closing_a_limiter_frees_the_leases_it_still_holds(redis_url: str, namespace: str) -> None:
    other = RedisLimiter(redis_url, LIMITS, namespace=namespace)
    try:
        holder = RedisLimiter(redis_url, LIMITS, namespace=namespace, lease_seconds=60)
        await holder.acquire(Charge())
        assert (await other.try_acquire(Charge())).reason == "concurrency"
        await holder.aclose()  # a clean shutdown does not make the others wait out the lease
        assert (await other.try_acquire(Charge())).lease is not None
    finally:
        await other.aclose()


async def test_acquire_sits_out_a_redis_restart_for_outage_wait_then_fails_closed(tmp_path: Path,
                                                                                  namespace: str) -> None:
    server = RedisServer(tmp_path, port=free_port()).start()
    try:
        async with RedisLimiter(server.url, RateLimits(concurrency=10), namespace=namespace,
                                outage_wait=20) as patient, \
                RedisLimiter(server.url, RateLimits(concurrency=10), namespace=namespace, outage_wait=0.5) as brief:
            assert (await patient.try_acquire(Charge())).lease is not None
            server.stop()
            started = time.monotonic()
            with pytest.raises(LimiterUnavailableError):
                await brief.acquire(Charge())
            assert 0.4 <= time.monotonic() - started < 3
            waiting = asyncio.create_task(patient.acquire(Charge()))
            await asyncio.sleep(1.2)
            assert not waiting.done()  # nothing admitted while Redis is away
            server.start()
            lease = await asyncio.wait_for(waiting, timeout=10)
            assert not isinstance(lease.handle, Ticket)  # admitted by Redis, not locally
            await patient.release(lease)
    finally:
        server.stop()


async def test_a_burst_larger_than_the_pool_waits_for_a_connection_instead_of_failing(redis_url: str,
                                                                                        namespace: str) -> None:
    """300 requests at once on one limiter: each waits for one of its pooled connections; none is taken
    for an outage (a plain pool would raise "Too many connections", and fail-closed would refuse)."""
    async with RedisLimiter(redis_url, RateLimits(concurrency=1000), namespace=namespace) as lim:
        assert lim._redis.connection_pool.max_connections == 32

        async def one() -> None:
            async with lim.slot(Charge(5, 5)) as slot:
                await asyncio.sleep(0.01)
                slot.settle(None)

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(300))), timeout=30)
    sep = "&" if "?" in redis_url else "?"
    async with RedisLimiter(f"{redis_url}{sep}max_connections=4", RateLimits(), namespace=namespace) as small:
        assert small._redis.connection_pool.max_connections == 4

        async def take_and_free() -> None:
            await small.release(await small.acquire(Charge()))

        await asyncio.wait_for(asyncio.gather(*(take_and_free() for _ in range(50))), timeout=30)


async def test_finishes_that_pile_up_go_out_together_and_survive_a_flushed_script_cache(redis_url: str,
                                                                                      namespace: str) -> None:
    """``finish_later`` (the gateway's path) queues settles and releases; those that pile up go in one
    pipeline. A Redis that forgot the script (restarted: SCRIPT FLUSH here) gets it again."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with RedisLimiter(redis_url, RateLimits(concurrency=100, tpm=100_000, margin=0.0),
                                namespace=namespace) as lim:
            for round_ in range(2):
                leases = [await lim.acquire(Charge(10, 90)) for _ in range(40)]
                assert await client.zcard(lim._leases) == 40
                if round_ == 1:
                    await client.script_flush()
                for lease in leases:
                    lim.finish_later(lease, tokens=30)  # settled below the charge: 70 tokens back each
                await asyncio.wait_for(lim.drain(), timeout=10)
                assert await client.zcard(lim._leases) == 0
                assert sum(int(v) for v in (await client.hgetall(lim._tokens)).values()) == 30 * 40 * (round_ + 1)
    finally:
        await client.aclose()
