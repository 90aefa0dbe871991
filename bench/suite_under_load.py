"""Run the whole test suite N times in a row while other processes keep every core busy.

Issue 10's flake check: the suite must pass 5 times in a row on a loaded 2-core machine.

    DROPOUT_DEMO_DATA=../shared/mnist DROPOUT_DEMO_REQUIRE_BROWSER=1 \
        .venv/bin/python bench/suite_under_load.py --runs 5

One busy-loop process per core (each stops by itself after ``--max-minutes``) runs beside
``python -m pytest`` for the whole invocation. Stops at the first red run and prints a table:
run, result, pass/fail counts, minutes. Exit status 0 only when every run was green.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _burn(deadline: float) -> None:
    """Keep one core busy until the deadline (a bounded loop that stops by itself)."""
    x = 0
    while time.monotonic() < deadline:
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


def _summary(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if re.search(r"\d+ (passed|failed)", ln)]
    return lines[-1].strip("= ") if lines else "(no pytest summary)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="suite runs in a row (default 5)")
    parser.add_argument(
        "--burners", type=int, default=os.cpu_count() or 2, help="busy processes (default: cores)"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=120.0, help="burners stop by themselves after this"
    )
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.burners < 0:
        parser.error("--runs must be ≥ 1 and --burners ≥ 0")

    deadline = time.monotonic() + args.max_minutes * 60
    ctx = mp.get_context("spawn")
    burners = [
        ctx.Process(target=_burn, args=(deadline,), daemon=True) for _ in range(args.burners)
    ]
    for proc in burners:
        proc.start()
    print(f"{args.burners} busy processes (pids {[p.pid for p in burners]}) beside the suite")
    rows = []
    try:
        for i in range(1, args.runs + 1):
            start = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            minutes = (time.monotonic() - start) / 60
            green = done.returncode == 0
            rows.append((i, "green" if green else "RED", _summary(done.stdout), minutes))
            print(f"run {i}: {rows[-1][1]} · {rows[-1][2]} · {minutes:.1f} min", flush=True)
            if not green:
                print(done.stdout[-6000:])
                print(done.stderr[-2000:])
                # The tail can be one long page snapshot: name the failures last, always.
                failed = [
                    ln for ln in done.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))
                ]
                print("\n".join(failed) or "(no FAILED lines in the pytest output)")
                break
    finally:
        for proc in burners:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=5)
    print()
    print(f"{'run':>3}  {'result':6}  {'minutes':>7}  pytest")
    for i, result, summary, minutes in rows:
        print(f"{i:>3}  {result:6}  {minutes:7.1f}  {summary}")
    green_runs = sum(1 for r in rows if r[1] == "green")
    print(f"\n{green_runs}/{args.runs} green in a row with {args.burners} busy processes beside")
    return 0 if green_runs == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
