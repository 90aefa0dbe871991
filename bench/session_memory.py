"""Memory with many sessions: RSS after N sessions each finished K runs, under the job layer's
process-wide bound on models held in memory (older ones reload from the run store on use).

    python bench/session_memory.py                # 100 sessions x 4 runs, default bound (64)
    python bench/session_memory.py --max-models 0  # no bound, for comparison (0 = unbounded)

Each run is a real SimpleCNN with its per-epoch metrics (30 epochs, as the Overfitting lab),
made without training (the weights' values do not change their size), so the figure is the
memory the app keeps, not the time to train 400 runs. Every run has its own seed, so none are
shared. Prints RSS before, after, and after every model was asked for once more.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dropout_demo.config import TrainConfig
from dropout_demo.jobs import JobManager, Limits
from dropout_demo.model import build_model
from dropout_demo.runs import RunStore
from dropout_demo.training import EpochMetrics


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Result:
    status: str
    metrics: list
    model: object
    config: TrainConfig
    message: str = ""
    precision: str = "fp32"


def instant_fit(config, data, on_epoch=None, should_stop=None, on_batch=None):
    model = build_model(config).eval()
    metrics = []
    for epoch in range(1, config.epochs + 1):
        m = EpochMetrics(epoch, 1 / epoch, 0.9, 0.2 + 0.001 * epoch, 0.95, 0.1 * epoch)
        on_epoch(m)
        metrics.append(m)
    return Result("done", metrics, model, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--max-models", type=int, default=64, help="0: no bound")
    args = parser.parse_args()

    before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp), max_runs=None)
        manager = JobManager(
            data_provider=lambda: None,
            fit_fn=instant_fit,
            store=store,
            max_models=args.max_models or 10**9,
            limits=Limits(max_queued=10**6),
        )
        saved = threading.Semaphore(0)
        manager.add_finished_hook(lambda snap, model: saved.release())
        config = TrainConfig(train_size=1_000, epochs=30)
        rows = []
        for s in range(args.sessions):
            owner = f"{s:032x}"
            for r in range(args.runs):
                seed = s * args.runs + r
                rows.append((owner, manager.submit(config.replace(seed=seed), owner)))
                saved.acquire()
        gc.collect()
        after = rss_mb()
        stats = manager.stats()
        for owner, job in rows:  # every visitor opens every model once more
            manager.model(job, owner)
        gc.collect()
        reused = rss_mb()
        manager.shutdown()
    runs = args.sessions * args.runs
    print(f"{args.sessions} sessions x {args.runs} finished runs = {runs} runs")
    print(f"max models in memory: {args.max_models or 'unbounded'}")
    print(f"{'RSS before':<34}{before:>9.0f} MB")
    print(f"{'RSS after all runs finished':<34}{after:>9.0f} MB  ({stats['models']} models held)")
    print(f"{'RSS after every model used again':<34}{reused:>9.0f} MB")


if __name__ == "__main__":
    main()
