"""The training worker process (see :mod:`.process_executor`): ``python -m`` this with the fd
of its end of a socket pair. It trains every run it is sent in a thread of its own (a
:class:`.executors.ThreadExecutor`, so threads, torch thread counts and outcomes work as in
the server), reports over the socket, and exits when told to or when the socket closes (its
server ended)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

BATCH_EVERY = 0.2  # s between a run's batch-progress messages (and each epoch's last batch)


def resolve(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Controls:
    """One run's stop and hold, set by the listener, read by the run between batches."""

    def __init__(self, held: bool = False) -> None:
        self.cond = threading.Condition()
        self.stop = False
        self.held = held

    def set(self, stop: bool | None = None, held: bool | None = None) -> None:
        with self.cond:
            if stop is not None:
                self.stop = stop
            if held is not None:
                self.held = held
            self.cond.notify_all()

    def should_stop(self) -> bool:
        """Between batches: waits while held (its OpenMP threads handed back, see
        :mod:`dropout_demo.openmp`); True once a stop was asked for."""
        with self.cond:
            if self.held and not self.stop:
                from ..openmp import release_pool  # torch is loaded: a run is training

                release_pool()
            while self.held and not self.stop:
                self.cond.wait()
            return self.stop


class Progress:
    """``on_batch`` of a run: sends its batch progress a few times a second."""

    def __init__(self, post: Any, run_id: int):
        self.post, self.run_id, self.last = post, run_id, 0.0

    def __call__(self, batch: int, batches: int) -> None:
        now = time.monotonic()
        if batch == batches or now - self.last >= BATCH_EVERY:
            self.last = now
            self.post(("batch", self.run_id, batch, batches))


def result_of(outcome: Any) -> dict:
    """An :class:`.executors.Outcome` as plain data (the weights as ``torch.save`` bytes)."""
    from .process_executor import weights_to_bytes

    weights = None
    if outcome.model is not None:
        state = {k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}
        weights = weights_to_bytes(state)
    return {
        "status": outcome.status,
        "error": outcome.error,
        "weights": weights,
        "metrics": None if outcome.metrics is None else [m.to_dict() for m in outcome.metrics],
        "precision": outcome.precision,
        "device": outcome.device,
        "plan": outcome.plan,
    }


class Worker:
    """This process's side: the runs it trains and their controls."""

    def __init__(self, conn: Connection):
        from .process_executor import send

        self.conn = conn
        self.send_lock = threading.Lock()  # the run threads post, the main thread too
        self.controls: dict[int, Controls] = {}
        self.lock = threading.Lock()
        self.executor: Any = None
        self._send = send

    def post(self, message: tuple) -> None:
        with self.send_lock:
            self._send(self.conn, message)

    def init(self, fit_spec: str, data_spec: str, warm_up: str | None) -> None:
        from .executors import ThreadExecutor

        fit, data = resolve(fit_spec), resolve(data_spec)
        self.executor = ThreadExecutor(fit, data)
        try:
            from ..openmp import single_threaded_caller

            cores = single_threaded_caller()  # this thread lives as long as the worker
            data()  # load it now (cached), before the first run asks
            if warm_up:
                resolve(warm_up)(cores)
        except Exception:  # reported by the run that needs it
            logging.getLogger(__name__).debug("warming up failed", exc_info=True)
        self.post(("ready", os.getpid()))

    def run(self, run_id: int, config: dict, threads: int, held: bool) -> None:
        from ..config import TrainConfig
        from .executors import RunTask

        controls = Controls(held)
        with self.lock:
            self.controls[run_id] = controls

        def finish(outcome: Any) -> None:
            with self.lock:
                self.controls.pop(run_id, None)
            self.post(("finish", run_id, result_of(outcome)))

        self.executor.start(
            RunTask(
                name=f"{run_id}",
                config=TrainConfig.from_dict(config),
                threads=threads,
                should_stop=controls.should_stop,
                on_batch=Progress(self.post, run_id),
                on_epoch=lambda m: self.post(("epoch", run_id, m.to_dict())),
                on_finish=finish,
            )
        )

    def control(self, run_id: int, **change: bool) -> None:
        with self.lock:
            controls = self.controls.get(run_id)
        if controls is not None:
            controls.set(**change)

    def serve(self, receive: Any) -> None:
        """Handle messages until ``exit`` (stop every run, wait for them) or the socket closes
        (exit at once: the server is gone)."""
        while True:
            try:
                message = receive(self.conn)
            except (EOFError, OSError):
                os._exit(0)
            kind = message[0]
            if kind == "run":
                self.run(*message[1:])
            elif kind == "stop":
                self.control(message[1], stop=True)
            elif kind == "hold":
                self.control(message[1], held=message[2])
            elif kind == "init":
                self.init(*message[1:])
            elif kind == "exit":
                with self.lock:
                    running = list(self.controls.values())
                for controls in running:
                    controls.set(stop=True)
                if self.executor is not None:
                    self.executor.shutdown(timeout=message[1])
                return


def main(fd: int) -> None:
    from .process_executor import receive, worker_nice

    logging.basicConfig(level=logging.WARNING, format="training worker %(process)d: %(message)s")
    nice = worker_nice()
    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)  # before any thread starts: every thread of this process inherits it
    Worker(Connection(fd)).serve(receive)
    logging.shutdown()
    os._exit(0)  # a run that ignored its stop must not keep the process


if __name__ == "__main__":
    main(int(sys.argv[1]))
