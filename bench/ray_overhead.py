"""What the Ray executor adds per run: submit -> first epoch, side by side with threads.

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/ray_overhead.py [--runs 5]
        [--ray local|auto|ADDRESS]

One invocation, one small config (256 images, 200 test images, 2 epochs: the epoch itself
takes a fraction of a second, so the figures are the path's cost): the job manager on its
thread executor, then on the Ray executor (a local Ray started here unless --ray names a
cluster): the first run while the executor's workers are still warming up (a replica's first
click), then --runs runs one after the other on warm workers. Each run has its own seed, so
nothing is shared or cached. Prints submit -> first epoch and submit -> done, median and max.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dropout_demo.config import TrainConfig
from dropout_demo.data import get_mnist, resolve_data_dir
from dropout_demo.jobs import JobManager

SMALL = TrainConfig(train_size=256, eval_size=200, epochs=2, precision="fp32")


def timed_run(manager: JobManager, seed: int) -> tuple[float, float]:
    """(submit -> first epoch, submit -> done) in seconds, read from the manager's rows."""
    done = threading.Event()
    manager.add_finished_hook(lambda snap, model: snap.config.seed == seed and done.set())
    start = time.perf_counter()
    job = manager.submit(SMALL.replace(seed=seed), "bench")
    first = None
    while not done.is_set():
        if first is None and manager.get(job, "bench").metrics:
            first = time.perf_counter() - start
        time.sleep(0.005)
    total = time.perf_counter() - start
    snap = manager.get(job, "bench")
    if snap.status != "done":
        raise SystemExit(f"run {seed} ended {snap.status}: {snap.error}")
    return first if first is not None else total, total


def row(name: str, times: list[tuple[float, float]]) -> str:
    firsts, totals = [t[0] for t in times], [t[1] for t in times]
    return (
        f"| {name} | {len(times)} | {statistics.median(firsts):.2f} / {max(firsts):.2f} "
        f"| {statistics.median(totals):.2f} / {max(totals):.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ray", default="local", help="local, auto or a cluster address")
    args = parser.parse_args()
    data_dir = resolve_data_dir()
    mnist = get_mnist(data_dir)
    rows = []

    threads = JobManager(data_provider=lambda: mnist, cores=2)
    timed_run(threads, 999)  # the process's first run pays for the probe and warm caches
    rows.append(row("threads of the server", [timed_run(threads, s) for s in range(args.runs)]))
    threads.shutdown(timeout=60)

    from dropout_demo.jobs.ray_executor import RayExecutor, cluster_cpus

    started = time.perf_counter()
    executor = RayExecutor(args.ray, data_dir=str(data_dir))
    connect_s = time.perf_counter() - started
    total, _ = cluster_cpus()
    on_ray = JobManager(executor=executor, cores=total)
    rows.append(row("Ray, first run (workers warming up)", [timed_run(on_ray, 100)]))
    import ray

    ray.get(executor._warming)
    warm = [timed_run(on_ray, 200 + s) for s in range(args.runs)]
    rows.append(row("Ray, warm workers", warm))
    on_ray.shutdown(timeout=60)

    print(f"\nRay: connected in {connect_s:.2f} s ({args.ray}, {total} CPUs)")
    print("| executor | runs | submit → first epoch, s (median / max) | submit → done, s |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
