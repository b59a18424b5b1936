"""Throughput and memory of the Kimi API simulator in ``fast`` mode with faults off.

The simulator runs as ``kimiflow sim`` in its own process, pinned to one core; this process is
the load generator, pinned to the other. Reported per phase: requests or chunks per second as
measured, the simulator's CPU time per request / per chunk (so "on one core" capacity does not
depend on how fast this client is), and the simulator's RSS before and after.

    .venv/bin/python bench/bench_sim.py                 # defaults: < 2 minutes on 2 cores
    .venv/bin/python bench/bench_sim.py --requests 20000 --streams 10
    .venv/bin/python bench/bench_sim.py --against 956b6fb   # today's tree vs that revision, one run

``--against REV`` extracts REV's ``src/`` into a temporary directory (``git archive``), starts its
simulator beside today's (both on the same core, same Python and dependencies, ``PYTHONPATH``
pointing at the old tree, checked before measuring), and runs the phases interleaved in rounds
(ABBA order, so drift on a shared machine hits both alike). It prints each round and the median
ratio today / REV of the simulator's CPU time per request and per chunk (above 1: today is slower)
and of the measured rates.

Targets (issue #2): >= 2,000 non-streaming req/s and >= 100,000 stream chunks/s on one core;
RSS flat over 100,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

BODY = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "用一句话介绍 Kimi API。"}]}
TIME_LIMIT_S = 100.0  # the whole run stays under two minutes whatever the counts
AGAINST_TIME_LIMIT_S = 300.0  # --against: both trees, every round, under five minutes
REPO = Path(__file__).resolve().parent.parent


@dataclass
class SimProcess:
    proc: subprocess.Popen[str]
    base_url: str
    key: str

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def start_sim(src: Path | None = None) -> SimProcess:
    """``kimiflow sim`` in its own process: today's tree, or the one extracted under ``src``."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
        check = subprocess.run([sys.executable, "-c", "import kimiflow; print(kimiflow.__file__)"],
                               env=env, capture_output=True, text=True, timeout=60)
        loaded = check.stdout.strip()
        if check.returncode != 0 or not loaded.startswith(str(src)):
            raise SystemExit(f"the old tree under {src} does not import as kimiflow (got {loaded!r}): "
                             f"{check.stderr.strip()[-300:]}")
    cmd = [sys.executable, "-c", "from kimiflow.cli.main import main; main()", "sim", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    base_url = key = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (base_url and key):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"listening on (http://\S+/v1)", line):
            base_url = m.group(1)
        if m := re.match(r"API key: (\S+)", line):
            key = m.group(1)
    if not (base_url and key):
        proc.kill()
        raise SystemExit("the simulator did not start")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(proc.pid, {0})
        os.sched_setaffinity(0, {1})
    return SimProcess(proc, base_url, key)


async def non_streaming(sim: SimProcess, total: int, concurrency: int, deadline: float) -> tuple[int, float]:
    """Send ``total`` requests over ``concurrency`` keep-alive connections; (done, seconds).

    A minimal HTTP/1.1 client on asyncio streams, so the load generator costs far less CPU per
    request than the server and the measured rate is the simulator's, not the client's.
    """
    host, port = sim.base_url.split("//", 1)[1].split("/", 1)[0].split(":")
    payload = json.dumps(BODY, ensure_ascii=False).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {sim.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    claimed = 0
    done = 0

    async def worker() -> None:
        nonlocal claimed, done
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while claimed < total and time.monotonic() < deadline:
                claimed += 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"unexpected answer: {head[:80]!r}")
                length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
                if not body.startswith(b'{"id":"chatcmpl-'):
                    raise SystemExit(f"unexpected body: {body[:80]!r}")
                done += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


async def streaming(sim: SimProcess, streams: int, tokens: int, concurrency: int, deadline: float) -> tuple[int, float]:
    """Run ``streams`` streams of ``tokens`` chunks; (data events received, seconds)."""
    headers = {"Authorization": f"Bearer {sim.key}", "X-Kimiflow-Sim-Tokens": str(tokens)}
    url = sim.base_url + "/chat/completions"
    body = {**BODY, "stream": True}
    events = 0
    started_streams = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal events, started_streams
        while started_streams < streams and time.monotonic() < deadline:
            started_streams += 1
            tail = b""
            async with session.post(url, json=body, headers=headers) as resp:
                async for data in resp.content.iter_chunked(1 << 16):
                    events += data.count(b"\n\n")
                    tail = (tail + data)[-16:]
            if not tail.endswith(b"data: [DONE]\n\n"):
                raise SystemExit("a stream ended without [DONE]")

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return events, elapsed


def stop_sim(sim: SimProcess) -> None:
    sim.proc.send_signal(signal.SIGINT)
    try:
        sim.proc.wait(10)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait(10)
    if sim.proc.stdout is not None:
        sim.proc.stdout.close()


def extract_tree(rev: str, into: Path) -> str:
    """REV's ``src/`` under ``into`` (``git archive``, no checkout, no worktree left behind); REV's short hash."""
    resolved = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--short", f"{rev}^{{commit}}"],
                              capture_output=True, text=True)
    if resolved.returncode != 0:
        raise SystemExit(f"--against {rev!r} is not a commit of {REPO}; give a hash or ref from `git log -- src/kimiflow/sim`")
    short = resolved.stdout.strip()
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", short, "src"], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, capture_output=True)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0:
        raise SystemExit(f"could not extract src/ of {short}: {untar.stderr.decode(errors='replace')[-300:]}")
    return short


@dataclass
class Round:
    cpu_per_request: float
    requests_per_s: float
    cpu_per_chunk: float
    chunks_per_s: float


async def one_round(sim: SimProcess, args: argparse.Namespace, deadline: float) -> Round:
    cpu0 = sim.cpu_seconds()
    done, elapsed = await non_streaming(sim, args.requests, args.concurrency, deadline)
    cpu_request = (sim.cpu_seconds() - cpu0) / max(done, 1)
    cpu0 = sim.cpu_seconds()
    events, stream_elapsed = await streaming(sim, args.streams, args.stream_tokens, args.stream_concurrency, deadline)
    cpu_chunk = (sim.cpu_seconds() - cpu0) / max(events, 1)
    return Round(cpu_request, done / elapsed, cpu_chunk, events / stream_elapsed)


async def run_against(args: argparse.Namespace) -> None:
    """Today's simulator and REV's, interleaved round by round; the median ratios today / REV."""
    deadline = time.monotonic() + AGAINST_TIME_LIMIT_S
    tmp = Path(tempfile.mkdtemp(prefix="bench-sim-against-"))
    sims: dict[str, SimProcess] = {}
    try:
        short = extract_tree(args.against, tmp)
        sims["today"] = start_sim()
        sims[short] = start_sim(tmp / "src")
        for label, sim in sims.items():
            await non_streaming(sim, min(3000, args.requests), args.concurrency, deadline)  # warm-up
            print(f"{label:>8}: simulator pid {sim.proc.pid} at {sim.base_url}, RSS {sim.rss_mb():.1f} MB after warm-up")
        results: dict[str, list[Round]] = {label: [] for label in sims}
        order = list(sims)
        for number in range(args.rounds):
            for label in order if number % 2 == 0 else reversed(order):
                if time.monotonic() > deadline:
                    break
                r = await one_round(sims[label], args, deadline)
                results[label].append(r)
                print(f"round {number + 1} {label:>8}: {r.cpu_per_request * 1e6:6.0f} µs CPU/request "
                      f"({r.requests_per_s:,.0f} req/s), {r.cpu_per_chunk * 1e6:5.2f} µs CPU/chunk "
                      f"({r.chunks_per_s:,.0f} chunks/s)")
        pairs = list(zip(results["today"], results[short], strict=False))
        if not pairs:
            raise SystemExit("the time limit ended the run before one full round")

        def ratio(field: str) -> float:
            return statistics.median(getattr(a, field) / getattr(b, field) for a, b in pairs)

        print(f"\nmedian of {len(pairs)} rounds, today / {short} (model {BODY['model']}, "
              f"{args.requests} requests and {args.streams}x{args.stream_tokens} chunks per round):")
        print(f"  sim CPU per request  {ratio('cpu_per_request'):.3f}   (above 1: today costs more)")
        print(f"  sim CPU per chunk    {ratio('cpu_per_chunk'):.3f}")
        print(f"  requests/s measured  {ratio('requests_per_s'):.3f}   (below 1: today is slower)")
        print(f"  chunks/s measured    {ratio('chunks_per_s'):.3f}")
        if time.monotonic() > deadline:
            print("note: the time limit cut the rounds short; the figures cover what ran")
    finally:
        for sim in sims.values():
            stop_sim(sim)
        shutil.rmtree(tmp, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    sim = start_sim()
    deadline = time.monotonic() + TIME_LIMIT_S
    try:
        print(f"simulator pid {sim.proc.pid} at {sim.base_url}; RSS at start {sim.rss_mb():.1f} MB")
        warm, _ = await non_streaming(sim, min(5000, args.requests), args.concurrency, deadline)
        rss_warm = sim.rss_mb()
        cpu0 = sim.cpu_seconds()
        done, elapsed = await non_streaming(sim, args.requests, args.concurrency, deadline)
        cpu = sim.cpu_seconds() - cpu0
        rss_after = sim.rss_mb()
        print(
            f"non-streaming: {done} requests in {elapsed:.1f} s = {done / elapsed:,.0f} req/s measured; "
            f"sim CPU {cpu / done * 1e6:.0f} µs/request = {done / cpu:,.0f} req/s per core"
        )
        print(f"memory: RSS {rss_warm:.1f} MB after {warm} warm-up requests, {rss_after:.1f} MB after {done} more "
              f"({rss_after - rss_warm:+.1f} MB)")
        cpu0 = sim.cpu_seconds()
        events, elapsed = await streaming(sim, args.streams, args.stream_tokens, args.stream_concurrency, deadline)
        cpu = sim.cpu_seconds() - cpu0
        print(
            f"streaming: {events:,} events in {elapsed:.1f} s = {events / elapsed:,.0f} chunks/s measured; "
            f"sim CPU {cpu / events * 1e6:.2f} µs/chunk = {events / cpu:,.0f} chunks/s per core"
        )
        print(f"RSS at end {sim.rss_mb():.1f} MB")
        if time.monotonic() > deadline:
            print("note: the time limit cut a phase short; the figures cover what ran")
    finally:
        stop_sim(sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, help="non-streaming requests (default 100,000; --against: 20,000 a round)")
    parser.add_argument("--concurrency", type=int, default=64, help="non-streaming requests in flight")
    parser.add_argument("--streams", type=int, default=40, help="streams to run (--against: per round and tree)")
    parser.add_argument("--stream-tokens", type=int, default=20_000, help="chunks per stream")
    parser.add_argument("--stream-concurrency", type=int, default=4, help="streams in flight")
    parser.add_argument("--against", metavar="REV", help="compare with the simulator of git revision REV, interleaved")
    parser.add_argument("--rounds", type=int, default=6, help="--against: rounds per tree (default 6)")
    parser.add_argument("--model", default=BODY["model"], help=f"model of every request (default {BODY['model']})")
    args = parser.parse_args()
    against = args.against is not None
    if args.requests is None:
        args.requests = 20_000 if against else 100_000  # --against: six rounds of both trees in the time limit
    for name in ("requests", "concurrency", "streams", "stream_tokens", "stream_concurrency", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    BODY["model"] = args.model
    if against:
        asyncio.run(run_against(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
