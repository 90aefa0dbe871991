"""A thread's OpenMP pool: made by multi-threaded torch work, handed back by release_pool.

libgomp stops spin-waiting while its pools hold more threads than there are cores, so a run
paused for a priority run hands its pool back (dropout_demo.openmp). Counted by the process's
OS threads, not timed."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from dropout_demo import openmp
from dropout_demo.jobs.process_worker import Controls


@pytest.fixture(autouse=True)
def threads_as_before():
    """Setting a thread count anywhere also sets the count a new thread starts with; these
    tests set it in threads of their own, so set it back for the tests after them."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def os_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def multi_threaded_work() -> None:
    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    for _ in range(5):
        a = torch.tanh(a @ a / 512)  # large enough for two OpenMP threads


def pool_left(before_waiting) -> tuple[set[str], set[str]]:
    """In a thread that stays alive: the OS threads its multi-threaded work started, and
    those of them still there after ``before_waiting`` ran in it."""
    out: list[set[str]] = []
    checked, finish = threading.Event(), threading.Event()

    def body():
        before = os_threads()
        multi_threaded_work()
        out.append(os_threads() - before)
        before_waiting()
        out.append(out[0] & os_threads())  # release_pool joins the threads it frees
        checked.set()
        finish.wait(60)

    thread = threading.Thread(target=body)
    thread.start()
    assert checked.wait(60)
    finish.set()
    thread.join(60)
    return out[0], out[1]


def test_multi_threaded_work_leaves_a_pool_that_release_pool_frees():
    assert openmp._libgomp() is not None  # torch's libgomp on Linux
    started, left = pool_left(lambda: None)
    assert started and left == started  # the pool outlives the work while its thread lives
    started, left = pool_left(lambda: assert_true(openmp.release_pool()))
    assert started and not left


def assert_true(value: bool) -> None:
    assert value


def test_a_held_run_hands_its_pool_back_before_it_waits():
    """The worker's Controls: a held run's stop check frees its pool, then waits."""
    controls = Controls(held=True)

    def unhold() -> None:
        controls.set(held=False)  # takes the condition: only once should_stop waits on it

    def stop_check() -> None:
        releaser = threading.Thread(target=unhold)
        with controls.cond:  # re-entrant; wait() releases it whole
            releaser.start()
            assert controls.should_stop() is False
        releaser.join(60)

    started, left = pool_left(stop_check)
    assert started and not left


def test_single_threaded_caller_returns_the_count_and_keeps_one():
    before = torch.get_num_threads()
    result = []

    def body():
        torch.set_num_threads(2)
        result.append(openmp.single_threaded_caller())
        result.append(torch.get_num_threads())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(60)
    assert result == [2, 1]
    assert torch.get_num_threads() == before
