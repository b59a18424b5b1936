"""Gateway benchmark: direct vs ``kimiflow gateway`` vs a minimal aiohttp proxy vs LiteLLM's proxy.

    .venv/bin/python bench/bench_gateway.py            # 3 interleaved rounds, about 2-3 minutes
    .venv/bin/python bench/bench_gateway.py --quick    # 1 round, fewer requests
    .venv/bin/python bench/bench_gateway.py --litellm-venv bench/.venv-litellm   # with LiteLLM too

LiteLLM's proxy runs from its own venv (never a kimiflow dependency; bench/.venv-* is gitignored):

    python3 -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]'

Without ``--litellm-venv`` that peer is skipped, and the run says so.

The upstream is nginx serving canned Kimi answers (bench/upstream/, pinned to CPU 1), so it is not
the bottleneck. Each proxy runs in its own process; the load generator (aiohttp, this process) is
pinned to CPU 0. Figures per target and round:

- added latency at 1 request in flight (p50, p99 of the target minus direct's),
- requests/s and p99 at 64 in flight,
- the proxy process's user+sys CPU per request (from /proc/PID/stat) in the 64-in-flight phase,
- streams at 64 in flight: CPU per relayed chunk and frames lost (every stream must end in
  ``[DONE]`` with all its events).

The minimal proxy (``--serve-minimal``, below, ~60 lines) is the floor for any Python gateway:
one virtual-key check, forward, stream back. The gateway runs with auth, admission, the ledger
(a journal line before each answer's last bytes, batched commits) and metrics all on.

LiteLLM's proxy (``litellm --config``) runs with one worker, no database, in memory, the master key
as the only key and no callbacks; one model ``openai/<model>`` whose ``api_base`` is the nginx
upstream. It is kept offline: the bundled model cost map (``LITELLM_LOCAL_MODEL_COST_MAP``),
telemetry vetoed (``LITELLM_TELEMETRY_DISABLED``; older releases read ``LITELLM_TELEMETRY``), no
HTTP(S) proxy variables, ``NO_PROXY=*``. Its log goes to a file in the run's temp dir and every
line that mentions an error, a timeout or a refused/failed connection is printed after the run
(nothing outside 127.0.0.1 is reachable here, so an outbound attempt would show up there). It is
much slower than the others, so it gets fewer requests per phase (``LITELLM_SIZES``); every
figure is a per-request rate or a percentile, so the rows stay comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from upstream.canned import MESSAGES, MODEL, PROMPT_TOKENS  # noqa: E402

LOAD_CPU = 0
UPSTREAM_CPU = 1
VIRTUAL_KEY = "vk-bench-minimal-proxy-key"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
STREAM_CHUNKS = 20
LITELLM_MASTER_KEY = "sk-bench-litellm-master-key"
LITELLM_SIZES = {"single": 100, "many": 600, "streams": 150, "concurrent": 1000}
LITELLM_START_TIMEOUT = 180.0
LITELLM_HINT = ("python3 -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]'")


# -- the minimal pass-through proxy ------------------------------------------------------------

def serve_minimal(port: int, upstream: str) -> None:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    keys = {f"Bearer {VIRTUAL_KEY}"}
    hop = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}

    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") not in keys:
            return web.json_response({"error": {"message": "Invalid Authentication",
                                                "type": "invalid_authentication_error"}}, status=401)
        session: ClientSession = request.app["session"]
        body = await request.read()
        url = upstream + request.path_qs.removeprefix("/v1")
        async with session.request(request.method, url, data=body, headers={
                "Authorization": "Bearer sk-upstream", "Content-Type": "application/json"}) as up:
            headers = {k: v for k, v in up.headers.items() if k.lower() not in hop}
            out = web.StreamResponse(status=up.status, headers=headers)
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=None),
                                       auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", proxy)
    print(f"minimal proxy serving on http://127.0.0.1:{port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- targets -----------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """User+sys CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Target:
    """A way to reach the upstream: JSON and stream halves, each served by its own process (or none)."""

    def __init__(self, name: str, key: str, json_url: str, stream_url: str,
                 json_proc: subprocess.Popen[str] | None = None, stream_proc: subprocess.Popen[str] | None = None,
                 stream_key: str | None = None) -> None:
        self.name, self.key, self.json_url, self.stream_url = name, key, json_url, stream_url
        self.json_proc, self.stream_proc = json_proc, stream_proc
        self.stream_key = stream_key or key

    @staticmethod
    def cpu(proc: subprocess.Popen[str] | None) -> float:
        return proc_cpu(proc.pid) if proc is not None else 0.0

    def stop(self) -> None:
        for proc in (self.json_proc, self.stream_proc):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


def _wait_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving on " not in line:
        raise RuntimeError(f"proxy did not start: {line!r}")
    return line.split("serving on ", 1)[1].split()[0]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned() -> None:
    os.sched_setaffinity(0, {UPSTREAM_CPU})


def start_minimal(base: str) -> tuple[str, subprocess.Popen[str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-minimal", str(port), "--upstream", base],
                            stdout=subprocess.PIPE, text=True, preexec_fn=_pinned)
    return _wait_url(proc) + "/v1", proc


def start_gateway(base: str, workdir: Path, name: str) -> tuple[str, subprocess.Popen[str], str]:
    kimiflow = str(Path(sys.executable).parent / "kimiflow")
    env = {**os.environ, "KIMIFLOW_HOME": str(workdir), "KIMIFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
           "MOONSHOT_API_KEY": "sk-upstream", "MOONSHOT_BASE_URL": base}
    db = workdir / f"{name}.sqlite"
    created = subprocess.run([kimiflow, "gateway", "keys", "create", "bench", "--db", str(db), "--json"],
                             env=env, capture_output=True, text=True, check=True)
    key = json.loads(created.stdout)["key"]
    proc = subprocess.Popen([kimiflow, "gateway", "serve", "--port", "0", "--db", str(db)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=_pinned)
    return _wait_url(proc) + "/v1", proc, key


def litellm_binary(venv: Path) -> Path:
    """The ``litellm`` command of a venv, or a SystemExit that says how to make one."""
    binary = venv.absolute() / "bin" / "litellm"
    if not binary.is_file():
        raise SystemExit(f"--litellm-venv {venv}: no {binary} (is LiteLLM's proxy installed there?). "
                         f"Create the venv with:\n    {LITELLM_HINT}")
    return binary


def litellm_config(base: str) -> str:
    """LiteLLM's config.yaml: one model on the nginx upstream, a master key, no database, no callbacks."""
    return "\n".join([
        "model_list:",
        f"  - model_name: {MODEL}",
        "    litellm_params:",
        f"      model: openai/{MODEL}",
        f"      api_base: {base}",
        "      api_key: sk-upstream",
        "litellm_settings:",
        "  callbacks: []",
        "  success_callback: []",
        "  failure_callback: []",
        "general_settings:",
        f"  master_key: {LITELLM_MASTER_KEY}",
        "",
    ])


def litellm_env() -> dict[str, str]:
    """The environment for LiteLLM's proxy: offline, no proxies, no database."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "database_url", "redis_url"}}
    env.update({"NO_PROXY": "*", "no_proxy": "*", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY_DISABLED": "True", "LITELLM_TELEMETRY": "False"})
    return env


def start_litellm(base: str, workdir: Path, name: str, venv: Path) -> tuple[str, subprocess.Popen[str], Path]:
    """LiteLLM's proxy on a free port in front of ``base``; returns its /v1 URL, the process and its log."""
    import urllib.error
    import urllib.request

    binary = litellm_binary(venv)
    config = workdir / f"litellm-{name}.yaml"
    config.write_text(litellm_config(base), encoding="utf-8")
    log = workdir / f"litellm-{name}.log"
    port = free_port()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                 "--num_workers", "1"], env=litellm_env(), cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, text=True, preexec_fn=_pinned)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + LITELLM_START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM's proxy exited with {proc.returncode} while starting; its log ({log}):\n"
                               + log.read_text(encoding="utf-8", errors="replace")[-3000:])
        try:
            with opener.open(f"http://127.0.0.1:{port}/health/liveliness", timeout=1) as resp:
                if resp.status == 200:
                    return f"http://127.0.0.1:{port}/v1", proc, log
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"LiteLLM's proxy did not answer /health/liveliness within {LITELLM_START_TIMEOUT:.0f} s; "
                               f"its log: {log}")
        time.sleep(0.5)


SUSPECT_WORDS = ("error", "timeout", "timed out", "refused", "unreachable", "failed to", "connecterror",
                 "name resolution", "getaddrinfo")


def suspect_lines(log: Path) -> list[str]:
    """Lines of a proxy's log that mention an error, a timeout or a failed connection."""
    return [line.rstrip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if any(word in line.lower() for word in SUSPECT_WORDS)]


# -- load ----------------------------------------------------------------------------------------

BODY = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
STREAM_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()


async def run_json(session: Any, target: Target, n: int, in_flight: int) -> tuple[list[float], float, float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            t0 = time.perf_counter()
            async with session.post(target.json_url + "/chat/completions", data=BODY, headers=headers) as r:
                body = await r.read()
                if r.status != 200 or b'"total_tokens":40' not in body:
                    raise RuntimeError(f"{target.name}: bad answer {r.status} {body[:200]!r}")
            latencies.append(time.perf_counter() - t0)

    cpu0, t0 = target.cpu(target.json_proc), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return latencies, time.perf_counter() - t0, target.cpu(target.json_proc) - cpu0


STREAM_USAGE = b'"total_tokens":%d' % (PROMPT_TOKENS + STREAM_CHUNKS)


async def run_streams(session: Any, target: Target, n: int, in_flight: int) -> tuple[int, int, float]:
    """Frames lost, streams whose body never carried the usage (Kimi puts it in the last choice), proxy CPU."""
    headers = {"Authorization": f"Bearer {target.stream_key}", "Content-Type": "application/json"}
    lost = no_usage = 0
    queue = iter(range(n))

    async def worker() -> None:
        nonlocal lost, no_usage
        for _ in queue:
            async with session.post(target.stream_url + "/chat/completions", data=STREAM_BODY, headers=headers) as r:
                body = await r.read()
            events = body.count(b"\n\ndata: ") + 1 if body.startswith(b"data: ") else 0
            expected = STREAM_CHUNKS + 3  # role chunk, content chunks, final chunk, [DONE]
            if not body.endswith(b"data: [DONE]\n\n") or events != expected:
                lost += max(expected - events, 1)
            if STREAM_USAGE not in body:
                no_usage += 1

    cpu0 = target.cpu(target.stream_proc)
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return lost, no_usage, target.cpu(target.stream_proc) - cpu0


def rss_mb(proc: subprocess.Popen[str] | None) -> float:
    if proc is None:
        return 0.0
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(target: Target, sizes: dict[str, int]) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await run_json(session, target, 200, 8)  # warm-up: pools open, code paths hot
        single, _, _ = await run_json(session, target, sizes["single"], 1)
        many, wall, cpu = await run_json(session, target, sizes["many"], 64)
        lost, no_usage, stream_cpu = await run_streams(session, target, sizes["streams"], 64)
        rss_before = rss_mb(target.stream_proc)
        t0 = time.perf_counter()
        lost_1000, no_usage_1000, _ = await run_streams(session, target, sizes["concurrent"], sizes["concurrent"])
        wall_1000 = time.perf_counter() - t0
        rss_after = rss_mb(target.stream_proc)
    return {"lost_1000": lost_1000, "rss_before_mb": rss_before, "rss_after_mb": rss_after, "wall_1000_s": wall_1000,
            "no_usage": no_usage + no_usage_1000,
            "p50_1": statistics.median(single) * 1e3, "p99_1": pct(single, 0.99) * 1e3,
            "rps_64": sizes["many"] / wall, "p99_64": pct(many, 0.99) * 1e3,
            "cpu_req_us": cpu / sizes["many"] * 1e6,
            "cpu_chunk_us": stream_cpu / (sizes["streams"] * (STREAM_CHUNKS + 3)) * 1e6, "lost": lost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--litellm-venv", type=Path, default=None, metavar="PATH",
                        help=f"a venv with LiteLLM's proxy installed (made with: {LITELLM_HINT}); "
                             "without it LiteLLM is skipped")
    parser.add_argument("--litellm-concurrent", type=int, default=LITELLM_SIZES["concurrent"], metavar="N",
                        help="concurrent streams through LiteLLM in the all-at-once phase (default %(default)s)")
    parser.add_argument("--serve-minimal", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_minimal is not None:
        serve_minimal(args.serve_minimal, args.upstream)
        return 0
    if args.rounds < 1 or args.litellm_concurrent < 1:
        parser.error("--rounds and --litellm-concurrent must be at least 1")
    if args.litellm_venv is not None:
        litellm_binary(args.litellm_venv)  # fail before anything starts if the venv is not usable
    else:
        print(f"litellm: skipped (no --litellm-venv given; to include it: {LITELLM_HINT}, "
              "then pass --litellm-venv bench/.venv-litellm)", flush=True)
    from upstream.nginx import NginxUpstream

    sizes = ({"single": 300, "many": 3000, "streams": 600, "concurrent": 1000} if not args.quick
             else {"single": 100, "many": 800, "streams": 200, "concurrent": 1000})
    litellm_sizes = {**LITELLM_SIZES, "concurrent": args.litellm_concurrent}
    if args.quick:
        litellm_sizes.update(single=50, many=300, streams=100)
    rounds = 1 if args.quick else args.rounds
    os.sched_setaffinity(0, {LOAD_CPU})
    results: dict[str, list[dict[str, float]]] = {}
    logs: list[Path] = []
    with NginxUpstream(chunks=STREAM_CHUNKS, cpu=UPSTREAM_CPU) as nginx, tempfile.TemporaryDirectory() as tmp:
        targets = [Target("direct", "sk-upstream", nginx.json_base_url, nginx.stream_base_url)]
        try:
            (mj, mjp), (ms, msp) = start_minimal(nginx.json_base_url), start_minimal(nginx.stream_base_url)
            targets.append(Target("minimal", VIRTUAL_KEY, mj, ms, mjp, msp))
            (gj, gjp, gjk), (gs, gsp, gsk) = (start_gateway(nginx.json_base_url, Path(tmp), "json"),
                                              start_gateway(nginx.stream_base_url, Path(tmp), "stream"))
            targets.append(Target("gateway", gjk, gj, gs, gjp, gsp, gsk))
            if args.litellm_venv is not None:
                t0 = time.perf_counter()
                lj, ljp, ljl = start_litellm(nginx.json_base_url, Path(tmp), "json", args.litellm_venv)
                targets.append(Target("litellm", LITELLM_MASTER_KEY, lj, lj, ljp))  # stopped if the next fails
                logs.append(ljl)
                ls, lsp, lsl = start_litellm(nginx.stream_base_url, Path(tmp), "stream", args.litellm_venv)
                targets[-1] = Target("litellm", LITELLM_MASTER_KEY, lj, ls, ljp, lsp)
                logs.append(lsl)
                print(f"litellm: two proxies (JSON, stream) ready in {time.perf_counter() - t0:.1f} s", flush=True)
            for round_no in range(rounds):
                for target in targets:
                    figures = asyncio.run(measure(target, litellm_sizes if target.name == "litellm" else sizes))
                    results.setdefault(target.name, []).append(figures)
                    print(f"round {round_no + 1} {target.name:<8} " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()),
                          flush=True)
        finally:
            for target in targets:
                target.stop()
            for log in logs:
                found = suspect_lines(log)
                print(f"litellm log {log.name}: {len(found)} line(s) mentioning an error, a timeout or a failed "
                      "connection" + "".join(f"\n    {line[:300]}" for line in found[:20]), flush=True)
    print(table(results, {"litellm": litellm_sizes}, sizes))
    return 0


def table(results: dict[str, list[dict[str, float]]], own_sizes: dict[str, dict[str, int]],
          sizes: dict[str, int]) -> str:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    def added(name: str, key: str) -> float:
        return med(name, key) - med("direct", key)

    labels = {"direct": "direct (no proxy)", "minimal": "minimal aiohttp pass-through proxy (the floor)",
              "gateway": "kimiflow gateway (auth, limits, budget, ledger, metrics on)",
              "litellm": "LiteLLM proxy (1 worker, in-memory, master key only)"}
    rounds = max(len(r) for r in results.values())
    lines = [f"{rounds} interleaved round(s); per round: {sizes['single']} requests at 1 in flight, {sizes['many']} at 64, "
             f"{sizes['streams']} streams of {STREAM_CHUNKS} chunks at 64, {sizes['concurrent']} streams at once"
             + "".join(f"; {name}: {s['single']} / {s['many']} / {s['streams']} / {s['concurrent']} (fewer: slower)"
                       for name, s in own_sizes.items() if name in results),
             "",
             "| target | added p50 @1 (ms) | added p99 @1 (ms) | req/s @64 | p99 @64 (ms) | proxy CPU/request (µs) "
             "| proxy CPU/chunk (µs) | frames lost | streams without usage | N streams at once: lost, wall s, "
             "RSS before→after (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in results:
        n_at_once = own_sizes.get(name, sizes)["concurrent"]
        lines.append(f"| {labels.get(name, name)} | {added(name, 'p50_1'):.2f} | {added(name, 'p99_1'):.2f} "
                     f"| {med(name, 'rps_64'):.0f} | {med(name, 'p99_64'):.1f} | {med(name, 'cpu_req_us'):.0f} "
                     f"| {med(name, 'cpu_chunk_us'):.1f} | {int(sum(r['lost'] for r in results[name]))} "
                     f"| {int(sum(r['no_usage'] for r in results[name]))} "
                     f"| {n_at_once:,}: {int(sum(r['lost_1000'] for r in results[name]))}, {med(name, 'wall_1000_s'):.1f}, "
                     f"{results[name][0]['rss_before_mb']:.0f}→{results[name][-1]['rss_after_mb']:.0f} |")
    if "minimal" in results:
        lines.append("")
        for name in ("gateway", "litellm"):
            if name in results:
                lines.append(
                    f"- {name} / minimal: added p50 {added(name, 'p50_1') / max(added('minimal', 'p50_1'), 1e-9):.2f}x, "
                    f"CPU/request {med(name, 'cpu_req_us') / med('minimal', 'cpu_req_us'):.2f}x, "
                    f"CPU/chunk {med(name, 'cpu_chunk_us') / med('minimal', 'cpu_chunk_us'):.2f}x, "
                    f"req/s {med(name, 'rps_64') / med('minimal', 'rps_64'):.2f}x")
    if "gateway" in results and "litellm" in results:
        lines.append(
            f"- litellm / gateway: added p50 {added('litellm', 'p50_1') / max(added('gateway', 'p50_1'), 1e-9):.1f}x, "
            f"CPU/request {med('litellm', 'cpu_req_us') / med('gateway', 'cpu_req_us'):.1f}x, "
            f"req/s {med('litellm', 'rps_64') / med('gateway', 'rps_64'):.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
