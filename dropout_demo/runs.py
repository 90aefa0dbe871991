"""The run store: finished runs on disk (JSON metadata + a weights-only checkpoint).

Layout: ``<root>/<run id>.json`` and ``<root>/<run id>.pt``. Both are written atomically (a
temp file in the same directory, then ``os.replace``), weights first and JSON last, so a run
appears in :meth:`RunStore.list` only once it is complete and a crash never damages earlier runs.

Several threads and several server processes may share one directory. Nothing here checks and
then acts: a delete unlinks and treats "already gone" as done, a listing skips a run that
vanishes while it is read, and the clean-up after each save removes only leftovers (temp files,
weights without metadata) old enough that no live writer can own them.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .data import cache_dir
from .model import SimpleCNN, make_checkpoint, model_from_checkpoint
from .training import EpochMetrics

log = logging.getLogger(__name__)

FORMAT = "dropout-demo-run"
FORMAT_VERSION = 1  # key and info are optional fields: files without them still load
# test_images: how many test images test_loss/test_acc were computed on (0: not recorded).
METRIC_FIELDS = (
    "epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "test_images"
)  # fmt: skip
_ID = r"[0-9]{8}-[0-9]{6}-[0-9]{6}-[0-9a-f]{8}"
_RUN_ID = re.compile(_ID)
# What _write_atomic leaves behind when its process dies mid-write.
_TEMP_FILE = re.compile(rf"\.({_ID})\.(json|pt)\..+\.tmp")
DEFAULT_MAX_RUNS = 300  # about 0.9 MB each
# A temp file or a weights file without its JSON this old has no live writer: a writer touches
# its temp file as it writes, and a save puts the JSON in place milliseconds after the weights.
STALE_SECONDS = 3600.0
MAX_KEY_LENGTH = 256


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
    key: str | None = None  # the run's identity (what determines its result), if the saver gave one
    # Free-form JSON-able facts, e.g. {"precision": "fp32", "device": "cpu"}; read-only by
    # convention (a fresh dict per record, so changing one changes nothing stored).
    info: dict[str, Any] = field(default_factory=dict, hash=False)


def default_runs_dir() -> Path:
    return cache_dir() / "runs"


def new_run_id(now: float | None = None) -> str:
    """Sorts by creation time (UTC, microseconds), then a random suffix; safe as a file name."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{int(now * 1e6) % 1_000_000:06d}-{secrets.token_hex(4)}"


def _metric_dict(m: EpochMetrics | dict[str, Any]) -> dict[str, Any]:
    d = m.to_dict() if hasattr(m, "to_dict") else {"test_images": 0, **m}  # older dicts lack it
    return {k: d[k] for k in METRIC_FIELDS}


def metrics_csv(metrics: Iterable[EpochMetrics | dict[str, Any]]) -> str:
    """Per-epoch metrics (EpochMetrics or dicts) as CSV text with a header row."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for m in metrics:
        writer.writerow(_metric_dict(m))
    return out.getvalue()


def _checked_key(key: str | None) -> str | None:
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH):
        raise ValueError(f"key must be a non-empty string of at most {MAX_KEY_LENGTH} characters")
    return key


def _checked_info(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON round trip of ``info``: what will be stored, and proof that it can be."""
    if info is None:
        return {}
    if not isinstance(info, Mapping) or not all(isinstance(k, str) for k in info):
        raise TypeError("info must be a mapping with string keys")
    try:
        return json.loads(json.dumps(dict(info), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"info must hold only JSON values (finite numbers): {exc}") from None


class RunStore:
    """Saved runs in one directory; safe to use from several threads and processes."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        max_runs: int | None = DEFAULT_MAX_RUNS,
        keep_tags: Iterable[str] = ("starter",),
    ):
        raw = root if root is not None else os.environ.get("DROPOUT_DEMO_RUNS")
        self.root = Path(raw).expanduser() if raw else default_runs_dir()
        # Every visitor of a hosted demo can save: past ``max_runs`` the oldest runs go (about
        # 0.9 MB each), except those tagged with one of ``keep_tags`` (the starter model).
        self.max_runs = max_runs
        self.keep_tags = frozenset(keep_tags)
        self._warned: set[tuple[str, int, int]] = set()  # bad files already reported
        # Parsed JSON files by name, with the (mtime, size, inode) they were parsed at: a
        # listing re-reads only what changed, so find() on every submit costs a directory scan.
        self._parsed: dict[str, tuple[tuple[int, int, int], RunRecord | RunStoreError]] = {}
        self._lock = threading.Lock()

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
        key: str | None = None,
        info: dict | None = None,
    ) -> RunRecord:
        """Write the run (weights, then JSON) and return its record.

        Once both files are in place the save has succeeded: the clean-up and pruning that
        follow log their problems and never turn it into an error.
        """
        key = _checked_key(key)
        info = _checked_info(info)
        metric_dicts = [_metric_dict(m) for m in metrics]
        run_id = new_run_id()
        name = name or config.label()
        self.root.mkdir(parents=True, exist_ok=True)
        weights = self._weights_path(run_id)
        ckpt = make_checkpoint(model, config, run_id=run_id, name=name, metrics=metric_dicts)
        try:
            self._write_atomic(weights, lambda f: torch.save(ckpt, f))
            meta = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "id": run_id,
                "name": name,
                "config": config.to_dict(),
                "metrics": metric_dicts,
                # when it became complete: a slow save still sorts with the runs of its moment
                "created": time.time(),
                "status": status,
                "tags": list(tags),
                "key": key,
                "info": info,
            }
            data = json.dumps(meta, indent=1, ensure_ascii=False).encode()
            self._write_atomic(self._meta_path(run_id), lambda f: f.write(data))
        except BaseException:
            with contextlib.suppress(OSError):
                weights.unlink()  # no JSON -> not a run; don't leave the weights behind
            raise
        record = self._record(meta)
        try:
            self.tidy()
        except Exception:  # the run is saved; a failed clean-up must not say otherwise
            log.warning(
                "run store %s: clean-up after saving %s failed", self.root, run_id, exc_info=True
            )
        return record

    def tidy(self, now: float | None = None) -> None:
        """Remove stale leftovers, then the oldest runs past ``max_runs`` (kept tags stay)."""
        self._remove_leftovers(time.time() if now is None else now)
        if self.max_runs is None:
            return
        records = self._scan()  # newest first
        for record in records[self.max_runs :]:
            if not self.keep_tags & set(record.tags):
                try:
                    self.delete(record.id)
                except OSError as exc:  # e.g. permissions: the next save tries again
                    log.warning("run store: could not remove old run %s: %s", record.id, exc)

    def delete(self, run_id: str) -> bool:
        """Remove a run; True if this call removed it, False if it was already gone.

        Idempotent and race-free: two threads or processes deleting the same run both succeed.
        """
        meta, weights = self._meta_path(run_id), self._weights_path(run_id)
        removed = True
        try:
            meta.unlink()  # the run disappears from listings first
        except FileNotFoundError:
            removed = False
        with contextlib.suppress(FileNotFoundError):
            weights.unlink()
        return removed

    def _remove_leftovers(self, now: float) -> None:
        """Temp files of dead writers and weights whose JSON never came (or already went)."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        names = {entry.name for entry in entries}
        for entry in entries:
            name = entry.name
            if _TEMP_FILE.fullmatch(name):
                pass
            elif name.endswith(".pt") and _RUN_ID.fullmatch(name[:-3]):
                if f"{name[:-3]}.json" in names:
                    continue
            else:
                continue
            try:
                if now - entry.stat().st_mtime < STALE_SECONDS:
                    continue  # maybe a live writer's: leave it
                # A late JSON would make these weights a run again: look once more.
                if name.endswith(".pt") and (self.root / f"{name[:-3]}.json").exists():
                    continue
                os.unlink(entry.path)
                log.info("run store: removed leftover %s", name)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("run store: could not remove leftover %s: %s", name, exc)

    # ---------------------------------------------------------------- reading
    def list(self) -> list[RunRecord]:
        """Every complete run, newest first; unreadable or foreign files are logged and skipped.

        Each JSON file is parsed once and re-read only when it changes, so a listing of an
        unchanged store costs one directory scan.
        """
        return [_fresh(r) for r in self._scan()]

    def find(self, key: str) -> RunRecord | None:
        """The newest complete run with status "done" saved under ``key``, or None.

        Cheap enough for every submit: one directory scan when nothing changed (about 4 ms for
        300 runs on the 2-core machine), and other processes' saves and deletes are seen.
        """
        for record in self._scan():
            if record.key == key and record.status == "done":
                return _fresh(record)
        return None

    def _scan(self) -> list[RunRecord]:
        """The complete runs, newest first, as cached (never hand these out: info is shared)."""
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:  # e.g. permissions: no runs to offer, and the log says why
            self._skip(self.root, RunStoreError(f"the run store can't be listed: {exc}"))
            return []
        names = {entry.name for entry in entries}
        records = []
        with self._lock:
            seen = set()
            for entry in entries:
                name = entry.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                seen.add(name)
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue  # deleted since the scan
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                cached = self._parsed.get(name)
                if cached is not None and cached[0] == stamp:
                    result = cached[1]
                else:
                    try:
                        result = self._read(Path(entry.path), check_weights=False)
                    except FileNotFoundError:
                        continue  # deleted while we read it: another process pruned it
                    except RunStoreError as exc:
                        result = exc
                    self._parsed[name] = (stamp, result)
                if isinstance(result, RunRecord) and f"{result.id}.pt" not in names:
                    if not os.path.exists(entry.path):
                        continue  # the whole run went while we scanned (a delete)
                    result = RunStoreError(
                        f"its weights file {result.weights_path.name} is missing"
                    )
                if isinstance(result, RunStoreError):
                    self._skip(Path(entry.path), result)
                else:
                    records.append(result)
            for name in self._parsed.keys() - seen:
                del self._parsed[name]
        records.sort(key=lambda r: (r.created, r.id), reverse=True)
        return records

    def get(self, run_id: str) -> RunRecord:
        path = self._meta_path(run_id)
        try:
            return self._read(path)
        except FileNotFoundError:
            raise RunNotFoundError(f"no saved run {run_id!r}") from None

    def load_model(self, run_id: str) -> SimpleCNN:
        """The run's model, in eval mode on the CPU."""
        path = self.get(run_id).weights_path
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model, _ = model_from_checkpoint(ckpt)
        except FileNotFoundError:
            raise RunNotFoundError(f"no saved run {run_id!r}") from None
        except Exception as exc:
            raise RunStoreError(
                f"weights file {path} is damaged or not a Dropout Lab checkpoint "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
            ) from exc
        return model

    def weights_bytes(self, run_id: str) -> bytes:
        path = self.get(run_id).weights_path
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise RunNotFoundError(f"no saved run {run_id!r}") from None

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

    def _read(self, path: Path, check_weights: bool = True) -> RunRecord:
        """The record in ``path``; FileNotFoundError when it does not exist (or just went)."""
        try:
            meta = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunStoreError(f"unreadable run file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RunStoreError("not a Dropout Lab run file")
        if meta.get("version") != FORMAT_VERSION:
            raise RunStoreError(f"unsupported run file version {meta.get('version')!r}")
        if meta.get("id") != path.stem:
            raise RunStoreError(f"run id {meta.get('id')!r} does not match the file name")
        record = self._record(meta)
        if check_weights and not record.weights_path.is_file():
            if not path.exists():
                raise FileNotFoundError(path)  # deleted while we looked
            raise RunStoreError(f"its weights file {record.weights_path.name} is missing")
        return record

    def _record(self, meta: dict[str, Any]) -> RunRecord:
        try:
            key = meta.get("key")
            info = meta.get("info") or {}
            if not isinstance(info, dict):
                raise TypeError(f"info is a {type(info).__name__}, not an object")
            return RunRecord(
                id=meta["id"],
                name=str(meta["name"]),
                config=TrainConfig.from_dict(meta["config"]),
                metrics=tuple(EpochMetrics.from_dict(m) for m in meta["metrics"]),
                created=_finite(meta["created"]),
                status=str(meta["status"]),
                weights_path=self._weights_path(meta["id"]),
                tags=tuple(str(t) for t in meta.get("tags", ())),
                key=None if key is None else str(key),
                info=info,
            )
        except (KeyError, TypeError, ValueError, RunStoreError) as exc:
            raise RunStoreError(f"malformed run file ({type(exc).__name__}: {exc})") from exc


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _fresh(record: RunRecord) -> RunRecord:
    """The record with its own copy of ``info``, so a caller's change never reaches the cache."""
    return replace(record, info=copy.deepcopy(record.info)) if record.info else record


def _checked_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise RunStoreError(f"invalid run id {run_id!r}")
    return run_id
