"""The thread executor: training threads yield the CPU to the server's own threads."""

from __future__ import annotations

import os
import threading

import pytest

from dropout_demo.config import TrainConfig
from dropout_demo.jobs import executors
from dropout_demo.jobs.executors import FAILED, Outcome, RunTask, ThreadExecutor


def _run_once(monkeypatch, nice: str | None) -> tuple[int, int, Outcome]:
    """Start one task whose fit records its thread's nice value; returns (caller's nice,
    the run thread's nice, the outcome)."""
    if nice is None:
        monkeypatch.delenv(executors.NICE_ENV, raising=False)
    else:
        monkeypatch.setenv(executors.NICE_ENV, nice)
    seen: dict[str, int] = {}
    finished = threading.Event()
    outcomes: list[Outcome] = []

    def fit(config, data, **_kwargs):
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        raise RuntimeError("stop here")  # the outcome is a failure; the nice value is recorded

    def on_finish(outcome: Outcome) -> None:
        outcomes.append(outcome)
        finished.set()

    task = RunTask(
        name="nice-check",
        config=TrainConfig(train_size=64, epochs=1),
        threads=1,
        should_stop=lambda: False,
        on_batch=lambda _b, _n: None,
        on_epoch=lambda _m: None,
        on_finish=on_finish,
    )
    executor = ThreadExecutor(fit, lambda: None)
    executor.start(task)
    assert finished.wait(60)
    executor.shutdown(60)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    return caller, seen["nice"], outcomes[0]


def test_a_niced_run_thread_and_the_caller_not(monkeypatch):
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    caller, run, outcome = _run_once(monkeypatch, "10")
    assert caller == before  # only the run's own thread changed
    assert run == min(19, before + 10)
    assert outcome.status == FAILED and "stop here" in (outcome.error or "")


def test_run_threads_are_not_niced_by_default(monkeypatch):
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    _caller, run, _outcome = _run_once(monkeypatch, None)
    assert executors.DEFAULT_NICE == 0 and run == before


def test_nice_zero_leaves_the_run_thread_alone(monkeypatch):
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    _caller, run, _outcome = _run_once(monkeypatch, "0")
    assert run == before


@pytest.mark.parametrize(("raw", "expected"), [("3", 3), ("-5", 0), ("99", 19), ("x", 0)])
def test_training_nice_reads_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv(executors.NICE_ENV, raw)
    assert executors.training_nice() == expected
