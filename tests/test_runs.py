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
    assert store.delete(gone.id) is True
    assert [r.id for r in store.list()] == [keep.id]
    assert files(store.root) == sorted([f"{keep.id}.json", f"{keep.id}.pt"])
    with pytest.raises(RunNotFoundError):
        store.get(gone.id)
    assert store.delete(gone.id) is False  # already gone: idempotent, not an error
    with pytest.raises(LookupError):
        store.load_model(gone.id)
    with pytest.raises(LookupError):
        store.weights_bytes(gone.id)


@pytest.mark.parametrize(
    "bad_id",
    [
        "../etc/passwd",
        "..",
        "",
        "a/b",
        "20250101-000000-000000-abcdef01/../x",
        "x.json",
        "20250101-000000-000000-abcdef01\n",  # `$` alone would let a trailing newline through
        " 20250101-000000-000000-abcdef01",
        None,
    ],
)
def test_path_traversal_and_malformed_ids_are_rejected(store, bad_id):
    store.save(CONFIG, METRICS, make_model())
    for call in (store.get, store.delete, store.load_model, store.weights_bytes):
        with pytest.raises(RunStoreError, match="invalid run id"):
            call(bad_id)


def test_metrics_csv_has_header_and_one_row_per_epoch():
    text = metrics_csv(METRICS)
    lines = text.splitlines()
    # These six first, in this order; later fields may be appended.
    assert lines[0].startswith("epoch,train_loss,train_acc,test_loss,test_acc,seconds")
    assert lines[0] == ",".join(METRIC_FIELDS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 2
    for row, m in zip(rows, METRICS, strict=True):
        assert int(row["epoch"]) == m.epoch
        for name in METRIC_FIELDS[1:]:
            assert float(row[name]) == getattr(m, name)  # full precision
    assert metrics_csv([]) == lines[0] + "\n"
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


# ---------------------------------------------------------------- several writers, one store
def test_default_cap_is_300_runs():
    assert RunStore().max_runs == 300 == runs_module.DEFAULT_MAX_RUNS


def test_a_run_pruned_by_another_process_at_the_same_moment_does_not_fail_the_save(
    tmp_path, monkeypatch
):
    store = RunStore(tmp_path / "capped", max_runs=1)
    old = store.save(CONFIG, METRICS, make_model())
    real_unlink = Path.unlink

    def other_process_wins(self, *args, **kwargs):
        # Whenever this process unlinks the old run, the other one has just done it: ours
        # finds nothing there (FileNotFoundError), whatever was checked before.
        if self.name.startswith(old.id):
            for path in (old.weights_path, store.root / f"{old.id}.json"):
                real_unlink(path, missing_ok=True)
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", other_process_wins)
    new = store.save(CONFIG.replace(seed=1), METRICS, make_model(1))
    assert [r.id for r in store.list()] == [new.id]
    assert files(store.root) == sorted([f"{new.id}.json", f"{new.id}.pt"])


@pytest.mark.parametrize("failure", ["unlink", "list"])
def test_pruning_never_fails_a_save_that_wrote_its_files(tmp_path, monkeypatch, caplog, failure):
    store = RunStore(tmp_path / "capped", max_runs=1)
    old = store.save(CONFIG, METRICS, make_model())
    if failure == "unlink":  # e.g. a file made read-only by hand

        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "unlink", refuse)
    else:  # anything at all going wrong while pruning

        def listing_fails_after_the_write(real):
            def listing(self):
                if any(p.suffix == ".json" and old.id not in p.name for p in self.root.iterdir()):
                    raise RuntimeError("the disk went away")
                return real(self)

            return listing

        for name in ("list", "_scan"):  # however the store lists its runs
            real = getattr(RunStore, name, None)
            if real is not None:
                monkeypatch.setattr(RunStore, name, listing_fails_after_the_write(real))
    with caplog.at_level(logging.WARNING, logger="dropout_demo.runs"):
        new = store.save(CONFIG.replace(seed=1), METRICS, make_model(1))
    monkeypatch.undo()
    assert (store.root / f"{new.id}.json").is_file()
    assert new.id in [r.id for r in store.list()]
    assert store.get(new.id) == new
    assert caplog.records  # the failure is logged, not raised


def test_deleting_one_run_from_many_threads_at_once_is_not_an_error(store):
    import threading

    gone = store.save(CONFIG, METRICS, make_model())
    kept = store.save(CONFIG.replace(seed=1), METRICS, make_model(1))
    start = threading.Barrier(8)
    results, errors = [], []

    def delete():
        start.wait()
        try:
            results.append(store.delete(gone.id))
        except Exception as exc:  # pragma: no cover - the failure this test is about
            errors.append(exc)

    threads = [threading.Thread(target=delete) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results.count(True) <= 1 and len(results) == 8
    assert [r.id for r in store.list()] == [kept.id]
    assert files(store.root) == sorted([f"{kept.id}.json", f"{kept.id}.pt"])


def test_stale_temp_files_and_orphan_weights_are_cleaned_up_fresh_ones_kept(store):
    earlier = store.save(CONFIG, METRICS, make_model())
    root = store.root
    long_ago = runs_module.time.time() - 2 * 86_400  # far past any safe age
    ids = [new_run_id() for _ in range(4)]
    stale = [
        root / f".{ids[0]}.pt.k3j9x_2q.tmp",  # a writer killed mid-write
        root / f".{ids[0]}.json.a1b2c3.tmp",
        root / f"{ids[1]}.pt",  # weights whose JSON never came
    ]
    fresh = [
        root / f".{ids[2]}.pt.zz9.tmp",  # maybe another process writing right now
        root / f"{ids[3]}.pt",  # maybe another process about to write the JSON
    ]
    foreign = [root / "orphan.pt", root / ".hidden.tmp", root / "notes.txt", root / ".x.pt.y.tmp"]
    for path in stale + fresh + foreign:
        path.write_bytes(b"leftover")
    for path in [*stale, *foreign, earlier.weights_path]:
        os.utime(path, (long_ago, long_ago))

    later = store.save(CONFIG.replace(seed=1), METRICS, make_model(1))
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in fresh + foreign)
    assert earlier.weights_path.exists()  # old, but its run is complete: a run, not a leftover
    assert [r.id for r in store.list()] == [later.id, earlier.id]


def test_key_and_info_are_stored_and_find_returns_the_newest_done_run(store):
    info = {"precision": "fp32", "device": "cpu", "train_seconds": 4.2, "nested": {"a": [1, 2]}}
    first = store.save(CONFIG, METRICS, make_model(), key="k1", info=info)
    assert first.key == "k1" and first.info == info
    stopped = store.save(CONFIG, METRICS[:1], make_model(), status="cancelled", key="k1")
    other = store.save(CONFIG.replace(p=0.0), METRICS, make_model(p=0.0), key="k2")
    plain = store.save(CONFIG, METRICS, make_model())
    assert plain.key is None and plain.info == {}

    fresh = RunStore(store.root)  # another process
    assert fresh.find("k1") == first  # the newer run under k1 was cancelled
    assert fresh.get(first.id).info == info
    assert fresh.find("k2") == other
    assert fresh.find("nope") is None
    assert stopped.status == "cancelled"

    found = fresh.find("k1")
    found.info["device"] = "changed by a caller"  # never reaches the store's cache
    assert fresh.find("k1").info == info

    # Another process saves a newer run under k1, then deletes it: find follows both.
    newer = RunStore(store.root).save(CONFIG, METRICS, make_model(), key="k1")
    assert fresh.find("k1") == newer
    RunStore(store.root).delete(newer.id)
    assert fresh.find("k1") == first


def test_json_written_before_keys_existed_still_loads(store):
    record = store.save(CONFIG, METRICS, make_model(), key="k1", info={"device": "cpu"})
    path = store.root / f"{record.id}.json"
    meta = json.loads(path.read_text())
    del meta["key"], meta["info"]
    path.write_text(json.dumps(meta))
    (loaded,) = RunStore(store.root).list()
    assert loaded.key is None and loaded.info == {}
    assert loaded.config == CONFIG and loaded.metrics == METRICS
    assert RunStore(store.root).find("k1") is None


@pytest.mark.parametrize(
    ("key", "info"),
    [
        ("", None),
        (42, None),
        ("x" * 1000, None),
        (None, {"model": object()}),
        (None, {"seconds": float("nan")}),
        (None, {1: "not a string key"}),
        (None, ["not", "a", "mapping"]),
    ],
)
def test_bad_key_or_info_is_refused_before_anything_is_written(store, key, info):
    with pytest.raises((TypeError, ValueError)):
        store.save(CONFIG, METRICS, make_model(), key=key, info=info)
    assert not store.root.exists() or files(store.root) == []


def test_a_changed_listing_is_seen_by_a_store_that_listed_before(store):
    a = store.save(CONFIG, METRICS, make_model())
    assert [r.id for r in store.list()] == [a.id]
    path = store.root / f"{a.id}.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # damaged by hand after it was listed
    assert store.list() == []
    path.write_text(text)
    assert [r.id for r in store.list()] == [a.id]
    a.weights_path.unlink()
    assert store.list() == []


def test_an_unreadable_store_lists_as_empty_with_one_warning(store, monkeypatch, caplog):
    store.save(CONFIG, METRICS, make_model())

    def refused(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(runs_module.os, "scandir", refused)
    with caplog.at_level(logging.WARNING, logger="dropout_demo.runs"):
        assert store.list() == [] and store.find("anything") is None
        assert store.list() == []
    assert len(caplog.records) == 1 and "can't be listed" in caplog.records[0].getMessage()
