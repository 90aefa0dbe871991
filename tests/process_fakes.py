"""Stand-ins for ``training.fit`` and the data that the process executor's tests run in its
worker processes (imported there by name: ``process_fakes:fit``). They talk to the test
through files in ``$DROPOUT_DEMO_FAKE_DIR``: ``started-SEED`` when a fit begins,
``release-SEED`` (made by the test) to let a gated run go on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import torch

from dropout_demo.model import SimpleCNN
from dropout_demo.training import EpochMetrics, FitResult

FAKE_DATA = "fake data"
GATED, DIES, RAISES, DEAF = 2, 3, 4, 5  # seeds that behave differently; others just train


def fake_dir() -> Path:
    return Path(os.environ["DROPOUT_DEMO_FAKE_DIR"])


def data() -> str:
    return FAKE_DATA


def warm_up(cores):
    """Records what the worker's warm-up is told, the calling thread's torch threads and
    whether that thread is the worker's main thread."""
    main = threading.current_thread() is threading.main_thread()
    (fake_dir() / "warm").write_text(f"{cores} {torch.get_num_threads()} {main}")


def fit(config, data, on_epoch=None, should_stop=None, on_batch=None):
    assert data == FAKE_DATA
    seed = config.seed
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # this thread's
    (fake_dir() / f"started-{seed}").write_text(f"{os.getpid()} {torch.get_num_threads()} {nice}")
    if seed == DIES:
        os._exit(3)
    if seed == RAISES:
        raise ValueError(f"boom in run {seed}")
    if seed == DEAF:  # never looks at should_stop
        while not (fake_dir() / f"release-{seed}").exists():
            time.sleep(0.01)
    metrics = []
    model = SimpleCNN(p=config.p).eval()
    with torch.no_grad():
        model.fc2.bias.fill_(float(seed))  # so the test can tell the weights came back
    for epoch in range(1, config.epochs + 1):
        for b in range(1, 4):
            while seed == GATED and not (fake_dir() / f"release-{seed}").exists():
                if should_stop():
                    return FitResult("cancelled", metrics, model, config)
                time.sleep(0.01)
            if should_stop():
                return FitResult("cancelled", metrics, model, config)
            on_batch(epoch, b, 3)
        m = EpochMetrics(epoch, 1.0 / epoch, 0.5, 1.1 / epoch, 0.5, 0.01 * epoch)
        on_epoch(m)
        metrics.append(m)
    return FitResult("done", metrics, model, config)
