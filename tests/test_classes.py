"""Classes: codes, claims that never collide, one guess per student, a JSON file that survives a
restart and concurrent updates from threads and from processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dropout_demo.classes import (
    CODE_ALPHABET,
    CODE_LENGTH,
    ClassError,
    Classes,
    ClassRoom,
    cell_key,
    cell_results,
    guesses_csv,
    normal_code,
    p_choices,
)
from dropout_demo.config import TrainConfig
from dropout_demo.sweeps import Grid

REPO = Path(__file__).resolve().parents[1]
BASE = TrainConfig(train_size=256, epochs=3, eval_size=1_000, precision="fp32", device="cpu")
GRID = Grid(ps=(0.0, 0.3, 0.6), seeds=(0, 1), base=BASE)  # 6 cells


@pytest.fixture
def classes(tmp_path) -> Classes:
    return Classes(tmp_path / "classes")


def test_codes_are_short_unambiguous_and_normalised(classes):
    room = classes.create("teacher", GRID)
    assert len(room.code) == CODE_LENGTH and set(room.code) <= set(CODE_ALPHABET)
    assert not set(CODE_ALPHABET) & set("0O1IL5S2Z8B")
    assert normal_code(f"  {room.code.lower()} ") == room.code
    assert classes.get(room.code.lower()) == room
    for bad in ("", "ABC", "ABCDEF", "A1CDE", "OOOOO", None):
        with pytest.raises(ClassError):
            normal_code(bad)
    with pytest.raises(ClassError, match="no class"):
        classes.get("AAAAA")
    assert not classes.exists("AAAAA") and not classes.exists("?")
    assert len({classes.create("t", GRID).code for _ in range(20)}) == 20


def test_claims_never_duplicate_while_unclaimed_cells_remain(classes):
    room = classes.create("teacher", GRID)
    got = [classes.claim(room.code, f"s{i}", now=float(i))[1].index for i in range(6)]
    assert sorted(got) == list(range(6))  # six students, six different cells
    # pressing Start again (or reloading) gives the same cell back, not a second one
    assert classes.claim(room.code, "s2", now=10.0)[1].index == got[2]
    # a seventh student shares the oldest unfinished claim; its first claim stays
    room7, cell7 = classes.claim(room.code, "s7", now=11.0)
    assert cell7.index == got[0] and room7.claims[got[0]].student == "s0"
    # s0's cell finished and none is free: s0 shares the oldest unfinished claim
    room, cell = classes.claim(room.code, "s0", finished={got[0]}, now=12.0)
    assert cell.index == got[1]
    assert len(room.claims) == 6


def test_cells_finished_elsewhere_are_skipped(classes):
    room = classes.create("teacher", GRID)
    _, cell = classes.claim(room.code, "a", finished={0, 1})
    assert cell.index == 2
    room = classes.get(room.code)
    assert room.cell_of("a") == 2 and room.cell_of("nobody") is None


def test_guesses_are_counted_once_per_student(classes):
    choices = p_choices(GRID)
    assert choices == ("p = 0", "p = 0.3", "p = 0.6")
    room = classes.create("teacher", GRID, "Which p wins?", choices)
    classes.guess(room.code, "a", "p = 0")
    classes.guess(room.code, "b", "p = 0.3")
    classes.guess(room.code, "a", "p = 0.3")  # changes her mind: replaces
    classes.guess(room.code, "a", "p = 0.3")
    room = classes.get(room.code)
    assert room.guess_counts() == {"p = 0.3": 2}
    assert sum(room.guess_counts().values()) == 2
    with pytest.raises(ClassError):
        classes.guess(room.code, "c", "p = 0.9")
    assert guesses_csv(room).splitlines() == [
        "question,choice,students",
        "Which p wins?,p = 0,0",
        "Which p wins?,p = 0.3,2",
        "Which p wins?,p = 0.6,0",
    ]
    room = classes.set_question(room.code, "Which p underfits?", ["p = 0.6", "p = 0", " "])
    assert room.choices == ("p = 0.6", "p = 0") and room.guesses == {}
    with pytest.raises(ClassError, match="two"):
        classes.set_question(room.code, "Only one?", ["yes"])


def test_a_class_survives_a_restart(tmp_path):
    first = Classes(tmp_path / "classes")
    room = first.create("teacher", GRID, "Which p?", p_choices(GRID), now=5.0)
    first.guess(room.code, "a", "p = 0.6")
    first.claim(room.code, "a", now=6.0)
    first.claim(room.code, "b", now=7.0)
    later = Classes(tmp_path / "classes")  # a new server process reading the same directory
    again = later.get(room.code)
    assert again.grid == GRID and again.grid.cells() == GRID.cells()
    assert again.teacher == "teacher" and again.created == 5.0
    assert again.guesses == {"a": "p = 0.6"}
    assert {i: c.student for i, c in again.claims.items()} == {0: "a", 1: "b"}
    assert again.version == 3
    assert ClassRoom.from_dict(json.loads(json.dumps(again.to_dict()))) == again
    # a new experiment drops the old claims
    size_grid = Grid(ps=(0.0, 0.5), sizes=(100, 300), base=BASE)
    assert later.set_grid(room.code, size_grid).claims == {}
    assert Classes(tmp_path / "classes").get(room.code).grid == size_grid


def test_a_damaged_class_file_is_a_readable_error(classes):
    room = classes.create("teacher", GRID)
    (classes.root / f"{room.code}.json").write_text("{not json")
    with pytest.raises(ClassError, match="damaged"):
        classes.get(room.code)


def test_thirty_students_pressing_start_at_once_fill_a_ten_by_three_grid(classes):
    grid = Grid(ps=tuple(i / 10 for i in range(10)), seeds=(0, 1, 2), base=BASE)
    room = classes.create("teacher", grid)
    barrier = threading.Barrier(30)
    got: dict[str, int] = {}

    def student(name: str) -> None:
        barrier.wait()
        got[name] = Classes(classes.root).claim(room.code, name)[1].index

    threads = [threading.Thread(target=student, args=(f"s{i}",)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got.values()) == list(range(30))
    room = classes.get(room.code)
    assert {i: c.student for i, c in room.claims.items()} == {i: s for s, i in got.items()}


# A separate interpreter (not multiprocessing: its spawn start re-runs whatever __main__ the
# test process has, which after an AppTest is a Streamlit script).
CLAIMER = """
import sys
from dropout_demo.classes import Classes
root, code, prefix = sys.argv[1:4]
shelf = Classes(root)
sys.stdin.readline()  # start together
for i in range(10):
    print(shelf.claim(code, f"{prefix}-{i}")[1].index, flush=True)
"""


def test_concurrent_claims_from_two_processes_never_collide(classes):
    room = classes.create("teacher", Grid(ps=(0.0, 0.5), seeds=tuple(range(10)), base=BASE))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(classes.root), room.code, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for prefix in ("a", "b")
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    got = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        got += [int(line) for line in out.split()]
    assert sorted(got) == list(range(20))
    assert len(classes.get(room.code).claims) == 20


class _Row:
    def __init__(self, key, status, metrics):
        self.key, self.status, self.metrics = key, status, metrics


class _Record:
    def __init__(self, key, status, metrics):
        self.key, self.status, self.metrics = key, status, metrics


class _Store:
    def __init__(self, records):
        self.records = records

    def list(self):
        return self.records


def _metrics(loss: float):
    return [{"epoch": 1, "test_loss": loss, "test_acc": 0.9, "train_loss": 0.1}]


def test_cell_results_come_from_the_store_by_run_key_and_from_live_rows(classes):
    cells = GRID.cells()
    store = _Store(
        [
            _Record(cell_key(cells[1]), "done", _metrics(0.2)),  # newest first
            _Record(cell_key(cells[1]), "done", _metrics(0.9)),
            _Record(cell_key(cells[2]), "cancelled", _metrics(0.5)),
            _Record("someone-elses-run", "done", _metrics(0.1)),
        ]
    )
    live = [
        _Row(cell_key(cells[3]), "done", _metrics(0.3)),
        _Row(cell_key(cells[4]), "running", []),
    ]
    results = cell_results(cells, store, live)
    assert set(results) == {1, 3}
    assert results[1].final_test_loss == 0.2 and results[3].final_test_loss == 0.3
    room = classes.create("teacher", GRID)
    classes.claim(room.code, "a", finished=set(results))
    text = classes.csv(classes.get(room.code), results)
    statuses = [line.rsplit(",", 1)[1] for line in text.splitlines()[1:]]
    assert statuses == ["claimed", "done", "free", "done", "free", "free"]
    assert "a" not in {line.split(",")[0] for line in text.splitlines()}
