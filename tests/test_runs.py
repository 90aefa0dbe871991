"""Run store: round trip, listing order, damaged and foreign files, atomic writes, CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from dropout_demo import runs as runs_module
from dropout_demo.config import TrainConfig
from dropout_demo.model import SimpleCNN
from dropout_demo.runs import (
    METRIC_FIELDS,
    RunNotFoundError,
    RunStore,
    RunStoreError,
    metrics_csv,
    new_run_id,
)
from dropout_demo.training import EpochMetrics

CONFIG = TrainConfig(p=0.3, train_size=500, eval_size=200, epochs=2, seed=4)
METRICS = (
    EpochMetrics(1, 0.91, 0.72, 0.55, 0.84, 1.25),
    EpochMetrics(2, 0.43, 0.88, 0.37, 0.9, 2.5),
)


def make_model(seed: int = 0, p: float = 0.3) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(p=p).eval()


def probe() -> torch.Tensor:
    return torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(123))


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_save_list_load_round_trip_reproduces_predictions(store):
    model = make_model()
    record = store.save(CONFIG, METRICS, model, tags=("lesson-1",))
    (listed,) = RunStore(store.root).list()  # a fresh store, as after a restart
    assert listed == record
    assert listed.name == CONFIG.label() == "p=0.30 · 500 imgs · 2 ep"
    assert listed.config == CONFIG and listed.metrics == METRICS and listed.status == "done"
    assert listed.tags == ("lesson-1",) and listed.weights_path.is_file()

    loaded = store.load_model(record.id)
    assert isinstance(loaded, SimpleCNN) and not loaded.training and loaded.p == pytest.approx(0.3)
    x = probe()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_weights_file_is_a_weights_only_checkpoint(store):
    record = store.save(CONFIG, METRICS, make_model(), status="cancelled", name="first try")
    ckpt = torch.load(io.BytesIO(store.weights_bytes(record.id)), weights_only=True)
    assert TrainConfig.from_dict(ckpt["config"]) == CONFIG
    assert ckpt["run_id"] == record.id and ckpt["name"] == "first try"
    assert [m["epoch"] for m in ckpt["metrics"]] == [1, 2]
    assert store.get(record.id).status == "cancelled"


def test_list_is_newest_first_and_ids_sort_by_time(store):
    saved = [store.save(CONFIG.replace(seed=i), METRICS[:1], make_model(i)) for i in range(3)]
    assert [r.id for r in store.list()] == [r.id for r in reversed(saved)]
    assert sorted(r.id for r in saved) == [r.id for r in saved]
    assert len({r.id for r in saved}) == 3
    assert new_run_id(0.0).startswith("19700101-000000-000000-")


def test_runs_dir_comes_from_env(monkeypatch, tmp_path):
    assert RunStore().root == Path(os.environ["DROPOUT_DEMO_RUNS"])  # conftest sets it
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(tmp_path / "elsewhere"))
    env_store = RunStore()
    assert env_store.list() == []  # a directory that does not exist yet lists as empty
    record = env_store.save(CONFIG, METRICS, make_model())
    assert sorted(files(tmp_path / "elsewhere")) == sorted([f"{record.id}.json", f"{record.id}.pt"])
    assert RunStore(tmp_path / "arg").root == tmp_path / "arg"  # an argument wins
    monkeypatch.delenv("DROPOUT_DEMO_RUNS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert RunStore().root == tmp_path / "cache" / "dropout_demo" / "runs"


def test_damaged_and_foreign_files_are_skipped_with_a_warning(store, caplog):
    good = store.save(CONFIG, METRICS, make_model())
    other = store.save(CONFIG.replace(p=0.0), METRICS, make_model(p=0.0))
    root = store.root
    # a truncated JSON
    text = (root / f"{other.id}.json").read_text()
    (root / f"{other.id}.json").write_text(text[: len(text) // 2])
    # a JSON whose weights are gone
    lonely = store.save(CONFIG, METRICS, make_model())
    (root / f"{lonely.id}.pt").unlink()
    # foreign files: someone else's JSON, binary junk, a copied run under another name
    (root / "settings.json").write_text(json.dumps({"theme": "dark"}))
    (root / "junk.json").write_bytes(b"\x80\x81\x00garbage")
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "copy.json").write_text((root / f"{good.id}.json").read_text())
    (root / "notes.txt").write_text("not a run")
    (root / "orphan.pt").write_bytes(b"weights without metadata")

    with caplog.at_level(logging.WARNING, logger="dropout_demo.runs"):
        listed = store.list()
    assert [r.id for r in listed] == [good.id]
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in (f"{other.id}.json", f"{lonely.id}.json", "settings.json", "junk.json"):
        assert name in warned
    assert "weights file" in warned and "missing" in warned
    assert "list.json" in warned and "copy.json" in warned
    assert "notes.txt" not in warned and "orphan.pt" not in warned
    assert all(r.levelno == logging.WARNING for r in caplog.records)

    caplog.clear()  # listed again (the UI does, every rerun): no second round of warnings
    with caplog.at_level(logging.WARNING, logger="dropout_demo.runs"):
        assert [r.id for r in store.list()] == [good.id]
    assert caplog.records == []


def test_truncated_or_foreign_weights_raise_a_clear_error(store):
    record = store.save(CONFIG, METRICS, make_model())
    data = record.weights_path.read_bytes()
    record.weights_path.write_bytes(data[: len(data) // 3])
    assert [r.id for r in store.list()] == [record.id]  # listing reads JSON only
    with pytest.raises(RunStoreError, match="damaged or not a Dropout Lab checkpoint"):
        store.load_model(record.id)

    torch.save({"something": torch.zeros(3)}, record.weights_path)  # a foreign checkpoint
    with pytest.raises(RunStoreError, match=record.weights_path.name):
        store.load_model(record.id)

    # a pickle that weights_only refuses to unpickle
    torch.save({"config": CONFIG}, record.weights_path)
    with pytest.raises(RunStoreError, match="damaged or not a Dropout Lab checkpoint"):
        store.load_model(record.id)


def test_crash_while_writing_weights_loses_nothing_saved_before(store, monkeypatch):
    earlier = store.save(CONFIG, METRICS, make_model())
    before = files(store.root)

    def torch_save_crashes(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(runs_module.torch, "save", torch_save_crashes)
    with pytest.raises(OSError, match="disk full"):
        store.save(CONFIG.replace(seed=1), METRICS, make_model(1))
    assert [r.id for r in store.list()] == [earlier.id]
    assert files(store.root) == before  # no temp file or half-written weights left behind


def test_crash_before_metadata_is_in_place_leaves_no_run(store, monkeypatch):
    earlier = store.save(CONFIG, METRICS, make_model())
    before = files(store.root)
    real_replace = os.replace

    def replace_crashes_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(runs_module.os, "replace", replace_crashes_on_json)
    with pytest.raises(OSError, match="power cut"):
        store.save(CONFIG.replace(seed=1), METRICS, make_model(1))
    monkeypatch.setattr(runs_module.os, "replace", real_replace)
    assert [r.id for r in store.list()] == [earlier.id]
    assert files(store.root) == before


def test_temp_files_are_never_listed(store):
    earlier = store.save(CONFIG, METRICS, make_model())
    # what a process killed mid-write (no cleanup) leaves behind
    meta = (store.root / f"{earlier.id}.json").read_text()
    (store.root / f".{earlier.id}.json.abc123.tmp").write_text(meta)
    (store.root / ".20990101-000000-000000-deadbeef.json").write_text(meta)
    assert [r.id for r in store.list()] == [earlier.id]


def test_delete_removes_both_files(store):
    keep = store.save(CONFIG, METRICS, make_model())
    gone = store.save(CONFIG, METRICS, make_model())
    store.delete(gone.id)
    assert [r.id for r in store.list()] == [keep.id]
    assert files(store.root) == sorted([f"{keep.id}.json", f"{keep.id}.pt"])
    with pytest.raises(RunNotFoundError):
        store.get(gone.id)
    with pytest.raises(RunNotFoundError):
        store.delete(gone.id)
    with pytest.raises(LookupError):
        store.load_model(gone.id)


@pytest.mark.parametrize(
    "bad_id", ["../etc/passwd", "..", "", "a/b", "20250101-000000-000000-abcdef01/../x", "x.json"]
)
def test_path_traversal_and_malformed_ids_are_rejected(store, bad_id):
    store.save(CONFIG, METRICS, make_model())
    for call in (store.get, store.delete, store.load_model, store.weights_bytes):
        with pytest.raises(RunStoreError, match="invalid run id"):
            call(bad_id)


def test_metrics_csv_has_header_and_one_row_per_epoch():
    text = metrics_csv(METRICS)
    lines = text.splitlines()
    assert lines[0] == "epoch,train_loss,train_acc,test_loss,test_acc,seconds"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    for row, m in zip(rows, METRICS, strict=True):
        assert int(row["epoch"]) == m.epoch
        for name in METRIC_FIELDS[1:]:
            assert float(row[name]) == getattr(m, name)  # full precision
    assert metrics_csv([]) == "epoch,train_loss,train_acc,test_loss,test_acc,seconds\n"
    assert metrics_csv([m.to_dict() for m in METRICS]) == text


def test_oldest_runs_go_past_the_cap_but_kept_tags_stay(tmp_path):
    store = RunStore(tmp_path / "capped", max_runs=3)
    starter = store.save(CONFIG, METRICS, make_model(), tags=("starter",))
    saved = [store.save(CONFIG.replace(seed=i), METRICS[:1], make_model(i)) for i in range(4)]
    kept = [r.id for r in store.list()]
    assert kept == [r.id for r in reversed(saved[1:])] + [starter.id]  # saved[0] went
    assert not (tmp_path / "capped" / f"{saved[0].id}.pt").exists()
    unbounded = RunStore(tmp_path / "unbounded", max_runs=None)
    for i in range(4):
        unbounded.save(CONFIG.replace(seed=i), METRICS[:1], make_model(i))
    assert len(unbounded.list()) == 4
