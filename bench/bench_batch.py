"""Batch benchmark: kimiflow batch vs a hand-written semaphore + aiohttp loop vs openai SDK + gather.

    .venv/bin/python bench/bench_batch.py                 # tier 1, 2,400 requests, ~4 minutes
    .venv/bin/python bench/bench_batch.py --n 600         # a quick look

Setup (why it looks like this): the simulator runs in its own process with tier limits and
realistic latency (0.3-0.7 s to first token, 40-80 tokens/s). Kimi's windows are a real minute,
which would make every tier's run take many minutes, so the simulator's *rate-limit clock* runs
``--speed`` times faster than real time (default 10: a tier's minute lasts 6 real seconds);
latency stays real. kimiflow is given the same scaled clock, as a user would give it the real one.
Each client runs in its own process (clean CPU figures) with its own API key (fresh windows).

Peers, "under the same limits" (the server enforces the tier on every client):
* aiohttp: ``asyncio.Semaphore(tier concurrency)`` around one aiohttp session; on 429 it backs off
  exponentially (0.5 s, 1 s, 2 s ... with jitter) up to 6 attempts — what careful hand-written code does.
* openai: ``AsyncOpenAI(max_retries=5)`` + ``asyncio.gather`` under the same semaphore.
* kimiflow: ``run_batch`` with the tier preset (journal, output files and all).

Figures: throughput as requests per tier-minute over the run, and the *sustained* rate after the
first window's free burst ((ok - RPM) per minute of run after the first), 429s the server sent,
requests that failed (a 429 that reached the user), and client CPU seconds (user + system).
Windows are sliding, so any client gets the first minute's RPM as a burst; the run spans 12 tier
minutes (2,400 requests at 200 RPM) so that burst does not dominate the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

MODEL = "moonshot-v1-8k"
MAX_TOKENS = 20
KEYS = ("sk-bench-kimiflow-000000", "sk-bench-aiohttp-0000000", "sk-bench-openai-00000000")


def scaled_clock(speed: float) -> Any:
    # CLOCK_MONOTONIC is shared by every process on the machine, so all agree on tier time.
    return lambda: time.monotonic() * speed


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the simulator process -----------------------------------------------------------------------


def serve(port: int, tier: int, speed: float) -> None:
    from kimiflow.sim import SimConfig, Simulator

    async def main() -> None:
        config = SimConfig(tier=tier, latency="realistic", seed=1, keys=KEYS, balance=1e9,
                           clock=scaled_clock(speed), sleep=asyncio.sleep)
        async with Simulator(config, port=port):
            await asyncio.Event().wait()

    asyncio.run(main())


def sim_stats(root: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{root}/_sim/stats", timeout=10) as resp:  # loopback only
        data: dict[str, Any] = json.load(resp)
        return data


# -- the clients ---------------------------------------------------------------------------------


def requests_of(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


async def run_kimiflow(args: argparse.Namespace) -> dict[str, Any]:
    from kimiflow.batch.runner import run_batch

    clock = scaled_clock(args.speed)

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / args.speed)

    out = Path(args.workdir) / "kimiflow-out.jsonl"
    summary = await run_batch(args.input, out, api_key=args.key, base_url=args.base_url, tier=args.tier,
                              model=MODEL, clock=clock, sleep=sleep, timeout=60)
    return {"ok": summary.this_run.succeeded, "failed": summary.this_run.failed,
            "client_429": summary.this_run.rate_limited}


async def run_aiohttp(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    from kimiflow.core.tiers import tier_limits

    limit = tier_limits(args.tier).concurrency
    semaphore = asyncio.Semaphore(limit)
    ok = failed = seen_429 = 0
    headers = {"Authorization": f"Bearer {args.key}"}
    rng = random.Random(0)

    async def one(session: aiohttp.ClientSession, line: dict[str, Any]) -> None:
        nonlocal ok, failed, seen_429
        body = {"model": MODEL, "messages": [{"role": "user", "content": line["prompt"]}],
                "max_tokens": line["max_tokens"]}
        async with semaphore:
            for attempt in range(6):
                async with session.post(f"{args.base_url}/chat/completions", json=body) as resp:
                    data = await resp.read()
                    if resp.status == 200:
                        json.loads(data)
                        ok += 1
                        return
                    if resp.status == 429:
                        seen_429 += 1
                    elif resp.status < 500:
                        break
                await asyncio.sleep(min(8.0, 0.5 * 2**attempt) * rng.uniform(0.5, 1.0))
            failed += 1

    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        await asyncio.gather(*(one(session, line) for line in requests_of(args.input)))
    return {"ok": ok, "failed": failed, "client_429": seen_429}


async def run_openai(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    from kimiflow.core.tiers import tier_limits

    semaphore = asyncio.Semaphore(tier_limits(args.tier).concurrency)
    client = openai.AsyncOpenAI(api_key=args.key, base_url=args.base_url, max_retries=5)
    ok = failed = 0

    async def one(line: dict[str, Any]) -> None:
        nonlocal ok, failed
        async with semaphore:
            try:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": line["prompt"]}],
                    max_tokens=line["max_tokens"])
                ok += 1
            except openai.APIError:
                failed += 1

    await asyncio.gather(*(one(line) for line in requests_of(args.input)))
    await client.close()
    return {"ok": ok, "failed": failed, "client_429": None}


def client(args: argparse.Namespace) -> None:
    runner = {"kimiflow": run_kimiflow, "aiohttp": run_aiohttp, "openai": run_openai}[args.mode]
    cpu0, t0 = cpu_seconds(), time.monotonic()
    result = asyncio.run(runner(args))
    result.update(elapsed_s=time.monotonic() - t0, cpu_s=cpu_seconds() - cpu0)
    print(json.dumps(result))


# -- the driver ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drive(args: argparse.Namespace) -> None:
    from kimiflow.core.tiers import tier_limits

    limits = tier_limits(args.tier)
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    me = [sys.executable, __file__]
    sim = subprocess.Popen([*me, "serve", "--port", str(port), "--tier", str(args.tier), "--speed",
                            str(args.speed)])
    try:
        for _ in range(100):
            try:
                sim_stats(root)
                break
            except OSError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as workdir:
            src = Path(workdir) / "in.jsonl"
            with src.open("w", encoding="utf-8") as f:
                for i in range(args.n):
                    f.write(json.dumps({"custom_id": f"q{i}", "prompt": f"工单 {i}: 请把这条反馈分类",
                                        "max_tokens": MAX_TOKENS}, ensure_ascii=False) + "\n")
            rows = []
            for mode, key in zip(("kimiflow", "aiohttp", "openai"), KEYS, strict=True):
                if mode not in args.only:
                    continue
                before = sim_stats(root)
                done = subprocess.run(
                    [*me, "client", mode, "--base-url", f"{root}/v1", "--key", key, "--tier", str(args.tier),
                     "--speed", str(args.speed), "--input", str(src), "--workdir", workdir],
                    capture_output=True, text=True, timeout=args.timeout,
                )
                if done.returncode != 0:
                    raise SystemExit(f"{mode} client failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                after = sim_stats(root)
                result["server_429"] = after["by_status"].get("429", 0) - before["by_status"].get("429", 0)
                result["mode"] = mode
                rows.append(result)
                print(f"  {mode}: done in {result['elapsed_s']:.1f}s", file=sys.stderr, flush=True)
    finally:
        sim.kill()
        sim.wait(10)
    print_table(rows, limits.rpm, args)


def print_table(rows: list[dict[str, Any]], rpm: int, args: argparse.Namespace) -> None:
    print(f"\nbatch of {args.n} requests, tier {args.tier} ({rpm} RPM), rate-limit clock x{args.speed:g} "
          f"(a tier minute = {60 / args.speed:.1f} s), realistic latency, client CPU in its own process\n")
    header = (f"{'client':<10} {'ok':>6} {'failed':>6} {'tier-min':>8} {'req/min':>8} {'% RPM':>6} "
              f"{'sustained':>9} {'% RPM':>6} {'429s':>6} {'CPU s':>6} {'CPU ms/req':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        minutes = r["elapsed_s"] * args.speed / 60.0
        rate = r["ok"] / minutes
        sustained = max(r["ok"] - rpm, 0) / max(minutes - 1.0, 1e-9) if minutes > 1 else float("nan")
        print(f"{r['mode']:<10} {r['ok']:>6} {r['failed']:>6} {minutes:>8.2f} {rate:>8.0f} {rate / rpm:>6.0%} "
              f"{sustained:>9.0f} {sustained / rpm:>6.0%} {r['server_429']:>6} {r['cpu_s']:>6.2f} "
              f"{r['cpu_s'] / max(r['ok'], 1) * 1000:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--tier", type=int, required=True)
    s.add_argument("--speed", type=float, required=True)
    c = sub.add_parser("client")
    c.add_argument("mode", choices=("kimiflow", "aiohttp", "openai"))
    for name in ("--base-url", "--key", "--input", "--workdir"):
        c.add_argument(name, required=True)
    c.add_argument("--tier", type=int, required=True)
    c.add_argument("--speed", type=float, required=True)
    parser.add_argument("--n", type=int, default=2400)
    parser.add_argument("--tier", type=int, default=1)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--only", default="kimiflow,aiohttp,openai")
    parser.add_argument("--timeout", type=float, default=150.0, help="Per-client time limit in seconds.")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.tier, args.speed)
    elif args.command == "client":
        client(args)
    else:
        drive(args)


if __name__ == "__main__":
    os.environ.pop("MOONSHOT_API_KEY", None)  # never a real key in a benchmark
    main()
