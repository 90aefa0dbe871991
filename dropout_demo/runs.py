"""The run store: finished runs on disk (JSON metadata + a weights-only checkpoint).

Layout: ``<root>/<run id>.json`` and ``<root>/<run id>.pt``. Both are written atomically (a
temp file in the same directory, then ``os.replace``), weights first and JSON last, so a run
appears in :meth:`RunStore.list` only once it is complete and a crash never damages earlier runs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .data import cache_dir
from .model import SimpleCNN, make_checkpoint, model_from_checkpoint
from .training import EpochMetrics

log = logging.getLogger(__name__)

FORMAT = "dropout-demo-run"
FORMAT_VERSION = 1
METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
_RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9]{6}-[0-9a-f]{8}$")


class RunStoreError(Exception):
    """A run that can't be read or written; the message names the file and the problem."""


class RunNotFoundError(RunStoreError, LookupError):
    pass


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    config: TrainConfig
    metrics: tuple[EpochMetrics, ...]
    created: float  # epoch seconds
    status: str
    weights_path: Path
    tags: tuple[str, ...] = ()


def default_runs_dir() -> Path:
    return cache_dir() / "runs"


def new_run_id(now: float | None = None) -> str:
    """Sorts by creation time (UTC, microseconds), then a random suffix; safe as a file name."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{int(now * 1e6) % 1_000_000:06d}-{secrets.token_hex(4)}"


def _metric_dict(m: EpochMetrics | dict[str, Any]) -> dict[str, Any]:
    d = m.to_dict() if hasattr(m, "to_dict") else dict(m)
    return {k: d[k] for k in METRIC_FIELDS}


def metrics_csv(metrics: Iterable[EpochMetrics | dict[str, Any]]) -> str:
    """Per-epoch metrics (EpochMetrics or dicts) as CSV text with a header row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for m in metrics:
        writer.writerow(_metric_dict(m))
    return out.getvalue()


class RunStore:
    """Saved runs in one directory; safe to use from several threads and processes."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        max_runs: int | None = 100,
        keep_tags: Iterable[str] = ("starter",),
    ):
        raw = root if root is not None else os.environ.get("DROPOUT_DEMO_RUNS")
        self.root = Path(raw).expanduser() if raw else default_runs_dir()
        # Every visitor of a hosted demo can save: past ``max_runs`` the oldest runs go (about
        # 0.9 MB each), except those tagged with one of ``keep_tags`` (the starter model).
        self.max_runs = max_runs
        self.keep_tags = frozenset(keep_tags)
        self._warned: set[tuple[str, int, int]] = set()  # bad files already reported

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # ---------------------------------------------------------------- writing
    def save(
        self,
        config: TrainConfig,
        metrics: Iterable[EpochMetrics],
        model: SimpleCNN,
        status: str = "done",
        name: str | None = None,
        tags: Iterable[str] = (),
    ) -> RunRecord:
        metric_dicts = [_metric_dict(m) for m in metrics]
        run_id = new_run_id()
        created = time.time()
        name = name or config.label()
        self.root.mkdir(parents=True, exist_ok=True)
        weights = self._weights_path(run_id)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "id": run_id,
            "name": name,
            "config": config.to_dict(),
            "metrics": metric_dicts,
            "created": created,
            "status": status,
            "tags": list(tags),
        }
        ckpt = make_checkpoint(model, config, run_id=run_id, name=name, metrics=metric_dicts)
        try:
            self._write_atomic(weights, lambda f: torch.save(ckpt, f))
            data = json.dumps(meta, indent=1, ensure_ascii=False).encode()
            self._write_atomic(self._meta_path(run_id), lambda f: f.write(data))
        except BaseException:
            with contextlib.suppress(OSError):
                weights.unlink()  # no JSON -> not a run; don't leave the weights behind
            raise
        self._prune()
        return self._record(meta)

    def _prune(self) -> None:
        if self.max_runs is None:
            return
        records = self.list()  # newest first
        for record in records[self.max_runs :]:
            if not self.keep_tags & set(record.tags):
                with contextlib.suppress(RunNotFoundError):  # another process got there first
                    self.delete(record.id)

    def delete(self, run_id: str) -> None:
        meta = self._meta_path(run_id)
        if not meta.exists():
            raise RunNotFoundError(f"no saved run {run_id!r}")
        meta.unlink()  # the run disappears from listings first
        with contextlib.suppress(FileNotFoundError):
            self._weights_path(run_id).unlink()

    # ---------------------------------------------------------------- reading
    def list(self) -> list[RunRecord]:
        """Every complete run, newest first; unreadable or foreign files are logged and skipped."""
        if not self.root.is_dir():
            return []
        records = []
        for path in self.root.glob("*.json"):
            if path.name.startswith("."):
                continue
            try:
                records.append(self._read(path))
            except RunStoreError as exc:
                self._skip(path, exc)
        records.sort(key=lambda r: (r.created, r.id), reverse=True)
        return records

    def get(self, run_id: str) -> RunRecord:
        path = self._meta_path(run_id)
        if not path.exists():
            raise RunNotFoundError(f"no saved run {run_id!r}")
        return self._read(path)

    def load_model(self, run_id: str) -> SimpleCNN:
        """The run's model, in eval mode on the CPU."""
        path = self.get(run_id).weights_path
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model, _ = model_from_checkpoint(ckpt)
        except Exception as exc:
            raise RunStoreError(
                f"weights file {path} is damaged or not a Dropout Lab checkpoint "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
            ) from exc
        return model

    def weights_bytes(self, run_id: str) -> bytes:
        return self.get(run_id).weights_path.read_bytes()

    # ---------------------------------------------------------------- internals
    def _meta_path(self, run_id: str) -> Path:
        return self.root / f"{_checked_id(run_id)}.json"

    def _weights_path(self, run_id: str) -> Path:
        return self.root / f"{_checked_id(run_id)}.pt"

    def _skip(self, path: Path, exc: RunStoreError) -> None:
        # The UI lists the store on every rerun: report each bad file once, not every second.
        try:
            info = path.stat()
            key = (path.name, info.st_mtime_ns, info.st_size)
        except OSError:
            key = (path.name, 0, 0)
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        log.log(level, "skipping %s: %s", path, exc)

    def _write_atomic(self, path: Path, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _read(self, path: Path) -> RunRecord:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunStoreError(f"unreadable run file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RunStoreError("not a Dropout Lab run file")
        if meta.get("version") != FORMAT_VERSION:
            raise RunStoreError(f"unsupported run file version {meta.get('version')!r}")
        if meta.get("id") != path.stem:
            raise RunStoreError(f"run id {meta.get('id')!r} does not match the file name")
        record = self._record(meta)
        if not record.weights_path.is_file():
            raise RunStoreError(f"its weights file {record.weights_path.name} is missing")
        return record

    def _record(self, meta: dict[str, Any]) -> RunRecord:
        try:
            return RunRecord(
                id=meta["id"],
                name=str(meta["name"]),
                config=TrainConfig.from_dict(meta["config"]),
                metrics=tuple(EpochMetrics.from_dict(m) for m in meta["metrics"]),
                created=float(meta["created"]),
                status=str(meta["status"]),
                weights_path=self._weights_path(meta["id"]),
                tags=tuple(str(t) for t in meta.get("tags", ())),
            )
        except (KeyError, TypeError, ValueError, RunStoreError) as exc:
            raise RunStoreError(f"malformed run file ({type(exc).__name__}: {exc})") from exc


def _checked_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise RunStoreError(f"invalid run id {run_id!r}")
    return run_id
