"""Keeping torch's OpenMP threads from slowing the runs that train beside each other.

torch computes on the CPU with OpenMP (on Linux, the GNU libgomp bundled with the wheel).
Every thread that has run multi-threaded torch work keeps a pool of OpenMP worker threads
while it lives, and while the pools of a process hold more threads than the machine has
cores, libgomp stops spin-waiting between parallel regions (about 100 spins instead of
300,000) and its threads sleep and wake around every operator: a two-thread run takes about
30% longer. A training worker trains each run in a thread of its own, so a pool outlives its
run's need for it in two places:

- the worker's main thread, which lives as long as the process: it keeps one torch thread
  (:func:`single_threaded_caller`) and never makes a pool;
- a run paused while a priority run trains (the Draw page's default model): it hands its
  pool back (:func:`release_pool`) before it waits, and makes a new one when it goes on.

Measured with ``bench/starter_ready.py`` (README: the training worker).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: free the threads, keep nothing


def single_threaded_caller() -> int:
    """Set the calling thread to one torch thread and return the count it had (on a fresh
    process: all cores). For a long-lived thread of a process whose runs train in threads of
    their own, before it does any torch work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The libgomp this process has loaded (torch's), or None (another OpenMP, or none)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line.split()[-1]}
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same library, not a second copy
            pause = lib.omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        return lib
    return None


def release_pool() -> bool:
    """Free the calling thread's OpenMP worker threads (``omp_pause_resource_all``); the next
    multi-threaded torch operator in this thread starts new ones. True if freed (or there
    were none), False where this process's OpenMP cannot (not libgomp, or inside a parallel
    region)."""
    lib = _libgomp()
    if lib is None:
        return False
    return lib.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0
