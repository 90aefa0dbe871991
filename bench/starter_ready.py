"""How long the first visitor of the Draw page waits for the default model (the starter).

Each scenario runs in a fresh process with an empty run store, as a fresh server: the app's
job manager (``jobs.get_manager``, which measures the precision probe in the background at
start, as the app does), then, with ``N`` class runs already training (N students' runs of
one preset, each its own seed), the first visit: ``starter.ensure_default_model`` polled every
0.2 s (the Draw page polls every 1 s) until the model is ready. Printed side by side: seconds
from the first visit to ready, and the starter run's own training time from the run store.

    python bench/starter_ready.py [--class-runs 0,2,6] [--repeats 1] [--class-preset "Seed recipe"]
        [--keep-runs DIR]

Timing-sensitive: run it alone on the machine. A smoke run with a tiny starter:
``DROPOUT_DEMO_STARTER=train_size=512,epochs=1,eval_size=500 python bench/starter_ready.py
--class-runs 0,2 --class-preset "Tiny (test)"`` (tiny class runs may finish before the visit).
MNIST from ``DROPOUT_DEMO_DATA``, else the default data directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/...` from anywhere

TARGET = 60.0  # seconds (issue 11, item 5)


def class_training(manager, jobs) -> bool:
    """Every class run that got a slot has trained a batch (or all have ended)."""
    snaps = [manager.get(job, owner) for job, owner in jobs]
    if all(s.is_terminal for s in snaps):
        return True
    running = [s for s in snaps if s.status == "running"]
    return bool(running) and all(s.batch > 0 or s.epoch > 0 for s in running)


def scenario(class_runs: int, class_preset: str, timeout: float) -> dict:
    """One fresh server: ``class_runs`` runs training, then the first Draw visit."""
    from dropout_demo import starter
    from dropout_demo.config import PRESETS
    from dropout_demo.data import get_mnist
    from dropout_demo.jobs import get_manager
    from dropout_demo.runs import RunStore

    manager = get_manager()  # the app's: store from DROPOUT_DEMO_RUNS, probe warming up
    store = RunStore()
    try:
        jobs = []
        if class_runs:
            get_mnist()  # a class that is training has loaded MNIST already
            base = PRESETS[class_preset]
            for i in range(class_runs):
                owner = f"{i:032x}"  # session ids are uuid hex
                jobs.append((manager.submit(base.replace(seed=i), owner), owner))
            deadline = time.monotonic() + timeout
            while not class_training(manager, jobs):
                if time.monotonic() > deadline:
                    raise SystemExit("the class runs never started training")
                time.sleep(0.05)
        running = manager.running_count()
        queued = manager.queued_count()

        started = time.perf_counter()
        status = starter.ensure_default_model(store, manager)
        while not status.ready:
            if status.state == "failed":
                raise SystemExit(f"the starter failed: {status.message}")
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"the starter was not ready after {timeout:.0f} s")
            time.sleep(0.2)
            status = starter.ensure_default_model(store, manager)
        ready = time.perf_counter() - started
        record = store.get(status.run_id)
        after = {j: manager.get(j, o) for j, o in jobs}
        still = sum(not s.is_terminal for s in after.values())
        return {
            "class_runs": class_runs,
            "class_running": running,
            "class_queued": queued,
            "ready_s": round(ready, 2),
            "starter_train_s": (record.info or {}).get("train_seconds"),
            "starter_test_acc": record.metrics[-1].test_acc if record.metrics else None,
            "starter": record.config.label(),
            "class_still_training": still,
        }
    finally:
        manager.shutdown(timeout=60)


def run_child(class_runs: int, class_preset: str, timeout: float, keep: Path | None) -> dict:
    """The scenario in a fresh process with a fresh, empty run store (a temporary one, or a
    new directory under ``keep`` that stays, with the starter the worker trained)."""
    with contextlib.ExitStack() as stack:
        if keep is None:
            runs = stack.enter_context(tempfile.TemporaryDirectory(prefix="starter-ready-"))
        else:
            keep.mkdir(parents=True, exist_ok=True)
            runs = tempfile.mkdtemp(prefix=f"{class_runs}-class-runs-", dir=keep)
        env = {**os.environ, "DROPOUT_DEMO_RUNS": runs}
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(class_runs),
            "--class-preset",
            class_preset,
            "--timeout",
            str(timeout),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout + 120)
    if out.returncode != 0:
        raise SystemExit(f"scenario with {class_runs} class runs failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if keep is not None:
        result["run_store"] = runs
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--class-runs", default="0,2,6", help="comma-separated: runs training")
    ap.add_argument("--class-preset", default="Seed recipe", help="the class runs' preset")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument(
        "--keep-runs",
        type=Path,
        default=None,
        help="keep each scenario's run store in a new directory under this one (the starter "
        "the worker trained: bench/canvas_accuracy.py --starter-store DIR reads it)",
    )
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child is not None:
        print(json.dumps(scenario(args.child, args.class_preset, args.timeout)), flush=True)
        return

    from dropout_demo.starter import starter_config

    counts = [int(n) for n in args.class_runs.split(",") if n.strip()]
    print(f"starter: {starter_config().label()}  ({starter_config()})")
    print(f"class runs: {args.class_preset!r}, one per student; cores: {os.cpu_count()}")
    results: dict[int, list[dict]] = {n: [] for n in counts}
    for rep in range(args.repeats):
        for n in counts:  # interleaved, so a load that comes and goes hits them alike
            r = run_child(n, args.class_preset, args.timeout, args.keep_runs)
            results[n].append(r)
            print(f"  repeat {rep + 1}, {n} class runs: {json.dumps(r)}", flush=True)

    print(f"\n{'class runs':>10s} {'running':>8s} {'queued':>7s} {'ready s':>16s} {'train s':>9s}")
    for n in counts:
        rs = results[n]
        ready = [r["ready_s"] for r in rs]
        train = [r["starter_train_s"] or 0.0 for r in rs]
        spread = f"{min(ready):.1f}-{max(ready):.1f}" if len(ready) > 1 else f"{ready[0]:.1f}"
        print(
            f"{n:10d} {rs[0]['class_running']:8d} {rs[0]['class_queued']:7d} "
            f"{statistics.median(ready):7.1f} ({spread:>6s}) {statistics.median(train):9.1f}"
        )
    worst = max(r["ready_s"] for rs in results.values() for r in rs)
    print(f"worst: {worst:.1f} s (target <= {TARGET:.0f} s from the first visit)")


if __name__ == "__main__":
    main()
