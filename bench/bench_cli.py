"""Start-up time of the command line: ``kimiflow --help`` and ``kimiflow chat --help``.

Runs each command N times in a fresh process and prints the median, min and max wall time in
milliseconds against the 300 ms budget (issue 6). Usage: python bench/bench_cli.py [-n 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUDGET_MS = 300.0
COMMANDS = (["--help"], ["chat", "--help"])


def kimiflow_executable() -> list[str]:
    """The installed console script next to this Python, else ``python -c`` on the entry point."""
    script = Path(sys.executable).with_name("kimiflow")
    if script.exists():
        return [str(script)]
    found = shutil.which("kimiflow")
    if found:
        return [found]
    return [sys.executable, "-c", "from kimiflow.cli.main import main; main()"]


def time_command(argv: list[str], runs: int) -> list[float]:
    """Wall-clock milliseconds of ``runs`` fresh runs of ``argv`` (one warm-up run first)."""
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--runs", type=int, default=15, help="runs per command (default 15)")
    args = parser.parse_args()
    base = kimiflow_executable()
    over_budget = False
    for extra in COMMANDS:
        timings = time_command(base + extra, max(1, min(args.runs, 200)))
        median = statistics.median(timings)
        over_budget |= median > BUDGET_MS
        label = "kimiflow " + " ".join(extra)
        print(f"{label:<22} median {median:6.1f} ms  min {min(timings):6.1f}  max {max(timings):6.1f}  "
              f"({len(timings)} runs; budget {BUDGET_MS:.0f} ms: {'OK' if median <= BUDGET_MS else 'OVER'})")
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
