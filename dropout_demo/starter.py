"""A default model for the Draw view on a fresh install: trained once, in the background.

The first visitor of a server with an empty run store should not have to train anything before
drawing. :func:`ensure_default_model` starts one short run through the job manager (under a
reserved owner no browser session can have) as a priority run: it skips the queue, starts at
once in a slot of its own and the class's runs pause until it is done. The result is saved to
the run store tagged ``starter`` and, from then on and in later processes, found there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from .config import PRESETS, STARTER_PRESET, ConfigError, TrainConfig

log = logging.getLogger(__name__)

STARTER_OWNER = "system:starter"  # session ids are uuid hex, so no session can own these jobs
STARTER_TAG = "starter"
STARTER_NAME = "Starter model"
CONFIG_ENV = "DROPOUT_DEMO_STARTER"

# The "Pen strokes" preset: what people draw on the canvas, read about as well as test digits
# (README: Canvas accuracy; bench/canvas_accuracy.py), ready about a minute after the first visit.
DEFAULT_STARTER_CONFIG = PRESETS[STARTER_PRESET]


@dataclass(frozen=True)
class StarterStatus:
    """Where the default model stands. ``state`` is one of:

    - ``ready``: ``run_id`` names the saved model in the run store;
    - ``queued`` / ``training``: being made (``epoch`` of ``epochs`` done, ``progress`` 0..1
      within the current epoch, ``queue_position`` while queued);
    - ``failed``: ``message`` says why (e.g. MNIST missing); ``ensure_default_model(retry=True)``
      tries again.
    """

    state: str
    run_id: str | None = None
    message: str = ""
    epoch: int = 0
    epochs: int = 0
    progress: float = 0.0
    queue_position: int | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def describe(self) -> str:
        """One line for a user, e.g. ``Training a starter model: epoch 1/2 (40%)``."""
        if self.state == "ready":
            return "The starter model is ready."
        if self.state == "queued":
            where = f" (position {self.queue_position})" if self.queue_position else ""
            return f"Training a starter model: waiting for a free worker{where}…"
        if self.state == "training":
            current = min(self.epoch + 1, self.epochs)
            return (
                f"Training a starter model: epoch {current}/{self.epochs} "
                f"({self.progress:.0%} of the epoch)…"
            )
        return f"The starter model could not be trained: {self.message}"


def starter_config() -> TrainConfig:
    """The default recipe, with fields overridden by ``DROPOUT_DEMO_STARTER`` (for tests).

    Format: comma-separated ``field=value`` pairs, e.g. ``train_size=256,epochs=1``.
    """
    raw = os.environ.get(CONFIG_ENV, "").strip()
    if not raw:
        return DEFAULT_STARTER_CONFIG
    types = {
        f.name: type(getattr(DEFAULT_STARTER_CONFIG, f.name))
        for f in dataclasses.fields(TrainConfig)
    }
    changes: dict[str, Any] = {}
    problems = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in types:
            problems.append(
                f"{CONFIG_ENV}: expected field=value with a TrainConfig field, got {item!r}"
            )
            continue
        try:
            changes[name] = types[name](value.strip())
        except ValueError:
            problems.append(
                f"{CONFIG_ENV}: {name}={value.strip()!r} is not a {types[name].__name__}"
            )
    if problems:
        raise ConfigError(problems)
    return DEFAULT_STARTER_CONFIG.replace(**changes)


def find_starter(store, config: TrainConfig | None = None) -> Any | None:
    """The newest finished starter run in ``store`` (a RunRecord) trained with ``config``
    (default: :func:`starter_config`), or None. A starter of an earlier recipe stays in the
    store as a saved run, but is not the default any more."""
    config = starter_config() if config is None else config
    for record in store.list():
        tags = getattr(record, "tags", ()) or ()
        is_starter = STARTER_TAG in tags or record.name == STARTER_NAME
        if is_starter and record.status == "done" and record.config == config:
            return record
    return None


class _Starter:
    """Process-wide state: at most one starter run at a time, and only one per process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.job: tuple[Any, str] | None = None  # (manager, this owner's row id) while training
        self.status = StarterStatus("idle")
        self.hooked: set[int] = set()  # managers whose finished hook reports to us

    def set(self, status: StarterStatus) -> None:
        with self.lock:
            self.status = status


_starter = _Starter()


def ensure_default_model(store, manager, *, retry: bool = False) -> StarterStatus:
    """Return the default model's status, starting its training if nothing has yet.

    Cheap enough to call on every rerun: it lists the store, and starts work at most once per
    process (concurrent callers share that one run; an identical run someone else started, or
    a cached result, is reused). ``retry=True`` starts again after a failure. No thread polls:
    the manager's finished hook saves the model the moment its run ends.
    """
    record = find_starter(store)
    if record is not None:
        return StarterStatus("ready", run_id=record.id)
    with _starter.lock:
        status = _starter.status
        if status.state == "ready":
            # Saved while this caller waited for the lock (its look above came too early), or
            # saved and since deleted from the store: then train it again.
            record = find_starter(store)
            if record is not None:
                return StarterStatus("ready", run_id=record.id)
            status = _starter.status = StarterStatus("idle")
        if status.state == "failed" and not retry:
            return status
        if _starter.job is None or _starter.job[0] is not manager:
            try:
                config = starter_config()
                if id(manager) not in _starter.hooked:
                    manager.add_finished_hook(lambda snap, model: _on_finished(snap, store))
                    _starter.hooked.add(id(manager))
                job_id = manager.submit(
                    config, STARTER_OWNER, tags=(STARTER_TAG,), name=STARTER_NAME, priority=True
                )
            except Exception as exc:  # a bad override or a refusal is reported, not raised
                _starter.status = StarterStatus("failed", message=str(exc))
                return _starter.status
            _starter.job = (manager, job_id)
            _starter.status = StarterStatus("queued", epochs=config.epochs)
        return _follow(store)


def _follow(store) -> StarterStatus:
    """The status of the run in progress, read from its snapshot (under ``_starter.lock``)."""
    manager, job_id = _starter.job
    try:
        snap = manager.get(job_id, STARTER_OWNER)
    except Exception as exc:  # the manager shut down or forgot the run
        _starter.job = None
        _starter.status = StarterStatus("failed", message=str(exc) or type(exc).__name__)
        return _starter.status
    epochs = snap.config.epochs
    if not snap.is_terminal:
        state = "queued" if snap.status == "queued" else "training"
        _starter.status = StarterStatus(
            state,
            epoch=snap.epoch,
            epochs=epochs,
            progress=snap.progress,
            queue_position=snap.queue_position,
        )
        return _starter.status
    if snap.status != "done" or not snap.has_model:
        message = snap.error or f"the run ended with status {snap.status!r}"
        _starter.job = None
        _starter.status = StarterStatus("failed", message=message, epochs=epochs)
        return _starter.status
    try:
        record = _tagged_record(manager, job_id, store)
    except Exception as exc:
        log.exception("could not save the starter model")
        _starter.job = None
        _starter.status = StarterStatus("failed", message=str(exc) or type(exc).__name__)
        return _starter.status
    final = snap.metrics[-1] if snap.metrics else None
    log.info(
        "starter model saved as %s (test accuracy %s)",
        record.id,
        f"{final.test_acc:.2%}" if final else "?",
    )
    with contextlib.suppress(Exception):  # only bookkeeping; the model is saved
        manager.remove(job_id, STARTER_OWNER)
    _starter.job = None
    _starter.status = StarterStatus("ready", run_id=record.id, epoch=epochs, epochs=epochs)
    return _starter.status


def _tagged_record(manager, job_id: str, store):
    """The run's record in ``store``, tagged as the starter (saved now if it is not there)."""
    record = manager.save(job_id, STARTER_OWNER, store)
    if STARTER_TAG in record.tags:
        return record
    # Someone else's identical run, saved untagged: keep a tagged copy safe from pruning.
    model = manager.model(job_id, STARTER_OWNER)
    return store.save(
        record.config,
        record.metrics,
        model,
        name=STARTER_NAME,
        tags=(STARTER_TAG,),
        key=record.key,
        info=dict(record.info or {}),
    )


def _on_finished(snap, store) -> None:
    """The manager's finished hook: when the starter's run ends, settle its status now."""
    with _starter.lock:
        if _starter.job is None or snap.key != _key_of(_starter.job):
            return
        _follow(store)


def _key_of(job: tuple[Any, str]) -> str | None:
    manager, job_id = job
    try:
        return manager.get(job_id, STARTER_OWNER).key
    except Exception:
        return None


def _reset_for_tests() -> None:
    """Forget this process's starter run (tests simulate a new process with it)."""
    with _starter.lock:
        _starter.job = None
        _starter.status = StarterStatus("idle")
        _starter.hooked.clear()
