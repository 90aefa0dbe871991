"""Two server processes (and many threads) saving into one run store with a small cap."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import traceback
import types
from pathlib import Path

import torch

from dropout_demo.config import TrainConfig
from dropout_demo.model import SimpleCNN
from dropout_demo.runs import RunStore
from dropout_demo.training import EpochMetrics

CONFIG = TrainConfig(p=0.5, train_size=500, eval_size=200, epochs=1, seed=0)
METRICS = (EpochMetrics(1, 0.9, 0.7, 0.5, 0.8, 1.0),)
CAP = 3
SAVES = 25
WAIT = 300  # seconds; generous for a loaded 2-core machine, never reached when all is well


def _save_many(root: str, who: str, start, error_file: str) -> None:
    """One app process: save SAVES runs into ``root`` (capped), as fast as it can."""
    try:
        torch.set_num_threads(1)
        store = RunStore(root, max_runs=CAP)
        model = SimpleCNN(p=0.5).eval()
        if not start.wait(WAIT):
            raise TimeoutError("the other process never started")
        for i in range(SAVES):
            record = store.save(CONFIG.replace(seed=i), METRICS, model, key=f"{who}-{i}")
            assert record.key == f"{who}-{i}"
    except BaseException:
        Path(error_file).write_text(traceback.format_exc())
        raise


def assert_consistent(root: Path, kept: set[str]) -> list[str]:
    """At most CAP runs plus the kept ones, each loadable, and no other file of ours."""
    store = RunStore(root, max_runs=CAP)
    listed = [r.id for r in store.list()]
    assert kept <= set(listed)
    assert len(listed) == CAP + len(kept)
    for run_id in listed:
        store.load_model(run_id)  # every listed run loads
    expected = sorted(f"{i}{ext}" for i in listed for ext in (".json", ".pt"))
    assert sorted(p.name for p in root.iterdir()) == expected  # no orphans, no temp files
    return listed


def test_two_processes_saving_into_one_capped_store(tmp_path, monkeypatch):
    root = tmp_path / "shared-store"
    starter = RunStore(root, max_runs=CAP).save(
        CONFIG, METRICS, SimpleCNN(p=0.5).eval(), tags=("starter",)
    )
    # A spawned child re-runs the parent's __main__ from its path; after an AppTest in this
    # process that is the app script. The children need only this module: give them a bare one.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    errors = [tmp_path / f"error-{who}.txt" for who in ("a", "b")]
    procs = [
        ctx.Process(target=_save_many, args=(str(root), who, start, str(err)))
        for who, err in zip(("a", "b"), errors, strict=True)
    ]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(WAIT)
    for proc, err in zip(procs, errors, strict=True):
        if proc.is_alive():
            proc.kill()
        assert proc.exitcode == 0, err.read_text() if err.exists() else f"exit {proc.exitcode}"
    listed = assert_consistent(root, {starter.id})
    newest = RunStore(root).list()[0]
    assert newest.id in listed and newest.key in {"a-24", "b-24"}


def test_threads_with_their_own_and_a_shared_store_object(tmp_path):
    root = tmp_path / "threads"
    shared = RunStore(root, max_runs=CAP)
    model = SimpleCNN(p=0.5).eval()
    start = threading.Barrier(4)
    errors = []

    def save_many(store: RunStore) -> None:
        try:
            start.wait()
            for i in range(8):
                store.save(CONFIG.replace(seed=i), METRICS, model)
                store.list()
        except Exception:  # pragma: no cover - the failure this test is about
            errors.append(traceback.format_exc())

    stores = [shared, shared, RunStore(root, max_runs=CAP), RunStore(root, max_runs=CAP)]
    threads = [threading.Thread(target=save_many, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_consistent(root, set())
