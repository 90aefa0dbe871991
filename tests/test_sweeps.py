"""Sweep grids, cell hand-out, aggregates (against numpy), links, reading and CSV."""

from __future__ import annotations

import csv
import io
import random
from urllib.parse import parse_qsl, urlencode

import numpy as np
import pytest

from dropout_demo.config import TrainConfig
from dropout_demo.sweeps import (
    BASE_PRESETS,
    CSV_FIELDS,
    GRID_PRESETS,
    MAX_CELLS,
    Cell,
    CellResult,
    Claim,
    Grid,
    GridError,
    Stat,
    aggregate,
    grid_csv,
    next_cell,
    reading,
    size_effects,
    underfit_from,
)

P_VALUES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# -- grids -----------------------------------------------------------------------------------


def test_p_grid_cells_replace_p_and_seed_on_the_base():
    base = TrainConfig(train_size=500, epochs=7, lr=2e-3)
    grid = Grid(ps=(0.5, 0, 0.25), seeds=(2, 1), base=base)
    cells = grid.cells()
    assert grid.kind == "p" and len(grid) == len(cells) == 6
    assert [c.index for c in cells] == list(range(6))
    assert grid.ps == (0.0, 0.25, 0.5) and grid.seeds == (1, 2)  # sorted
    # seed-major: the first three cells are one whole curve
    assert [(c.seed, c.p) for c in cells[:3]] == [(1, 0.0), (1, 0.25), (1, 0.5)]
    for c in cells:
        assert c.config == base.replace(p=c.p, seed=c.seed)
        assert c.point == (500, c.p)
    assert grid.cells() == cells  # stable


def test_size_grid_cells_replace_the_training_set_size():
    grid = Grid(ps=(0, 0.5), sizes=(1000, 100), seeds=(0,))
    cells = grid.cells()
    assert grid.kind == "size" and len(cells) == 4
    assert [(c.train_size, c.p) for c in cells] == [(100, 0), (100, 0.5), (1000, 0), (1000, 0.5)]
    assert all(c.config.train_size == c.train_size for c in cells)
    assert all(c.config.epochs == BASE_PRESETS["overfit"].epochs for c in cells)


def test_presets_are_the_issue_grids():
    p_curve = GRID_PRESETS["p-curve"]
    assert len(p_curve) == 30  # a class of 30
    assert p_curve.ps == P_VALUES and p_curve.seeds == (0, 1, 2)
    assert [c.config for c in p_curve.cells()[:10]] == [
        TrainConfig(p=p, train_size=1_000, epochs=30, epoch_eval_size=1_000) for p in p_curve.ps
    ]
    assert GRID_PRESETS["p-curve, 5 seeds"].seeds == (1, 2, 3, 4, 5)
    sizes = GRID_PRESETS["data-size"]
    assert sizes.sizes == (100, 300, 1_000, 3_000, 10_000) and sizes.ps == (0.0, 0.5)
    assert all(len(g) <= MAX_CELLS for g in GRID_PRESETS.values())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"ps": (0, 1.0)}, "dropout rate must be in [0, 1), got 1.0"),
        ({"ps": (-0.1,)}, "got -0.1"),
        ({"ps": (float("nan"),)}, "got nan"),
        ({"ps": (True,)}, "got True"),
        ({"ps": ()}, "p: give at least one value"),
        ({"ps": (0.5, 0.5)}, "duplicate value(s) 0.5"),
        ({"ps": (0,), "seeds": ()}, "seeds: give at least one value"),
        ({"ps": (0,), "seeds": (-1,)}, "seed must be an integer >= 0"),
        ({"ps": (0,), "seeds": (1.5,)}, "seed must be an integer >= 0"),
        ({"ps": (0,), "seeds": (3, 3)}, "seeds: duplicate value(s) 3"),
        ({"ps": (0,), "sizes": (0,)}, "size must be an integer in 1..60,000, got 0"),
        ({"ps": (0,), "sizes": (60_001,)}, "got 60001"),
        ({"ps": (0,), "sizes": (100, 100)}, "sizes: duplicate"),
        ({"ps": "0.5"}, "must be a list"),
        ({"ps": (0,), "base": {"p": 0}}, "base must be a TrainConfig"),
        ({"ps": [i / 100 for i in range(51)], "seeds": (0, 1)}, "102 cells is too many"),
    ],
)
def test_bad_grids_are_refused_in_words(kwargs, expected):
    with pytest.raises(GridError) as e:
        Grid(**kwargs)
    assert expected in str(e.value)


def test_float_noise_in_p_is_one_cell():
    grid = Grid(ps=np.arange(10) * 0.1, seeds=(0,))  # 0.30000000000000004, ...
    assert grid.ps == P_VALUES and grid.to_query()["p"] == "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    with pytest.raises(GridError, match="duplicate value"):
        Grid(ps=(0.1 * 3, 0.3))
    assert (
        Grid(ps=(0,), seeds=(0,)).describe()
        == "1 dropout rate × 1 seed = 1 run (1,000 images, 30 epochs)"
    )


def test_every_problem_is_listed():
    with pytest.raises(GridError) as e:
        Grid(ps=(2,), seeds=(-1,), sizes=(0,))
    assert len(e.value.problems) == 3


# -- links -----------------------------------------------------------------------------------

ROUND_TRIP_GRIDS = [
    *GRID_PRESETS.values(),
    Grid(ps=(0.0, 0.25, 0.5), seeds=(0, 1, 2)),
    Grid(ps=(0.123456789,), base=BASE_PRESETS["tiny"]),
    Grid(ps=(0.5,), seeds=(4,), base=BASE_PRESETS["seed"].replace(train_size=30_000, epochs=2)),
    Grid(
        ps=(0, 0.3),
        sizes=(50, 60_000),
        base=TrainConfig(epochs=3, lr=3e-4, batch_size=128, eval_size=2_000, precision="fp32"),
    ),
]


@pytest.mark.parametrize("grid", ROUND_TRIP_GRIDS)
def test_url_round_trip(grid):
    query = grid.to_query()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in query.items())
    # through a real query string, as a browser would carry it
    assert Grid.from_query(dict(parse_qsl(urlencode(query)))) == grid


def test_links_are_compact_and_readable():
    q = Grid(ps=(0, 0.1, 0.2), seeds=(0, 1, 2)).to_query()
    assert q == {"preset": "overfit", "p": "0,0.1,0.2", "seeds": "0,1,2"}
    base = BASE_PRESETS["overfit"].replace(epochs=10)
    q = Grid(ps=(0, 0.5), sizes=(100, 1000), base=base).to_query()
    assert q == {
        "preset": "overfit",
        "sizes": "100,1000",
        "p": "0,0.5",
        "seeds": "0",
        "epochs": "10",
    }
    # a base with the seed recipe's per-epoch subset (which no link field carries) names the
    # seed recipe, so the link gives back the same runs
    plain = Grid(ps=(0, 0.5), sizes=(100, 1000), base=TrainConfig(epochs=10))
    assert plain.to_query()["preset"] == "seed"
    assert Grid.from_query(plain.to_query()) == plain


def test_from_query_defaults_and_ignores_other_state():
    grid = Grid.from_query({"p": "0, 0.5", "class": "ABCD", "page": "sweep"})
    assert grid == Grid(ps=(0, 0.5), seeds=(0,), base=BASE_PRESETS["overfit"])
    grid = Grid.from_query({"sizes": "100,300"})
    assert grid.ps == (0.0, 0.5) and grid.sizes == (100, 300)
    assert Grid.from_query({"p": ["0.9", "0.1"]}).ps == (0.1,)  # parse_qs lists: last wins


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, "p: missing"),
        ({"p": "0,,0.5"}, "not a comma-separated list"),
        ({"p": "half"}, "'half' is not a number"),
        ({"p": "inf"}, "not a finite number"),
        ({"p": "0,1"}, "must be in [0, 1)"),
        ({"p": "0", "seeds": "1.5"}, "seeds: '1.5' is not an integer"),
        ({"p": "0", "sizes": "1e3"}, "sizes: '1e3' is not an integer"),
        ({"p": "0", "preset": "huge"}, "unknown preset 'huge' (one of overfit, seed, tiny)"),
        ({"p": "0", "epochs": "many"}, "epochs: 'many' is not an integer"),
        ({"p": "0", "epochs": "0"}, "epochs must be an integer >= 1"),
        ({"p": "0", "precision": "fp8"}, "precision must be one of"),
        ({"sizes": "100", "train_size": "5"}, "takes its sizes from sizes="),
        ({"p": ",".join(str(i / 100) for i in range(60)), "seeds": "0,1"}, "too many"),
    ],
)
def test_garbage_links_are_refused_in_words(query, expected):
    with pytest.raises(GridError) as e:
        Grid.from_query(query)
    assert expected in str(e.value)


# -- handing out cells -----------------------------------------------------------------------


def test_no_cell_is_shared_while_free_cells_remain():
    for seed in range(200):
        rng = random.Random(seed)
        cells = Grid(ps=[i / 10 for i in range(rng.randint(1, 10))], seeds=(0, 1, 2)).cells()
        claims: dict[int, Claim] = {}
        finished: set[int] = set()
        # some cells finished elsewhere before anyone came (the shared run cache)
        finished.update(rng.sample(range(len(cells)), rng.randint(0, len(cells) // 4)))
        students = [f"s{i}" for i in range(rng.randint(1, 2 * len(cells)))]
        clock = 0.0
        for _ in range(3 * len(students)):
            student = rng.choice(students)
            clock += rng.random()
            own = [i for i, c in claims.items() if c.student == student and i not in finished]
            free = [c.index for c in cells if c.index not in claims and c.index not in finished]
            cell = next_cell(cells, claims, finished, student)
            assert cell is not None
            if own:
                assert cell.index == min(own, key=lambda i: (claims[i].at, i))
            elif free:
                assert cell.index == min(free)  # never someone else's, never finished
                claims[cell.index] = Claim(student, clock)
            else:
                unfinished = [i for i in claims if i not in finished]
                if unfinished:
                    assert cell.index == min(unfinished, key=lambda i: (claims[i].at, i))
                else:
                    assert cell.index in finished
            if rng.random() < 0.3 and claims:
                finished.add(rng.choice(list(claims)))


def test_a_student_gets_their_own_claim_back():
    cells = Grid(ps=(0, 0.5), seeds=(0, 1)).cells()
    claims = {2: Claim("ann", 5.0), 0: Claim("bob", 1.0)}
    assert next_cell(cells, claims, set(), "ann").index == 2
    assert next_cell(cells, claims, set(), "ann").index == 2  # again: still the same
    assert next_cell(cells, claims, set(), "bob").index == 0
    assert next_cell(cells, claims, set(), "cy").index == 1  # the lowest free cell
    # ann's run finished: her next Start takes a new free cell
    assert next_cell(cells, claims, {2}, "ann").index == 1


def test_full_grid_hands_out_the_oldest_unfinished_claim_then_finished_cells():
    cells = Grid(ps=(0, 0.5), seeds=(0,)).cells()
    claims = {0: Claim("ann", 9.0), 1: Claim("bob", 3.0)}
    assert next_cell(cells, claims, set(), "late").index == 1  # bob's claim is older
    assert next_cell(cells, claims, {1}, "late").index == 0
    # a free cell finished elsewhere is only handed out once everything is finished
    cells3 = Grid(ps=(0, 0.25, 0.5), seeds=(0,)).cells()
    assert next_cell(cells3, {0: Claim("ann", 1.0)}, {1}, "bob").index == 2
    everything = {0, 1, 2}
    picks = {s: next_cell(cells3, {}, everything, s).index for s in map(str, range(30))}
    assert set(picks.values()) == everything  # late students are spread over the cells
    assert all(next_cell(cells3, {}, everything, s).index == i for s, i in picks.items())


def test_empty_grid_and_foreign_indices():
    assert next_cell([], {}, set(), "ann") is None
    cells = Grid(ps=(0,), seeds=(0,)).cells()
    assert next_cell(cells, {7: Claim("ann", 0.0)}, {9}, "ann").index == 0


# -- aggregates ------------------------------------------------------------------------------


def fake_result(rng: np.random.Generator) -> CellResult:
    test = float(rng.uniform(0.1, 0.5))
    return CellResult(
        final_test_loss=test,
        best_test_loss=test - float(rng.uniform(0, 0.05)),
        final_test_acc=float(rng.uniform(0.9, 0.99)),
        final_train_loss=float(rng.uniform(0.0, 0.3)),
    )


def test_aggregates_match_numpy():
    rng = np.random.default_rng(0)
    grid = Grid(ps=(0, 0.5), sizes=(100, 1000), seeds=(0, 1, 2, 3))
    cells = grid.cells()
    results = {c.index: fake_result(rng) for c in cells if rng.random() < 0.8}
    results[0] = fake_result(rng)  # (100, 0) seed 0 is always there
    for c in cells:  # (1000, 0.5) keeps a single seed
        if c.point == (1000, 0.5) and c.seed > 0:
            results.pop(c.index, None)
        if c.point == (1000, 0.5) and c.seed == 0:
            results[c.index] = fake_result(rng)
    points = aggregate(cells, results)
    assert [(pt.train_size, pt.p) for pt in points] == [
        (100, 0),
        (100, 0.5),
        (1000, 0),
        (1000, 0.5),
    ]
    for pt in points:
        members = [c for c in cells if c.point == (pt.train_size, pt.p) and c.index in results]
        assert pt.seeds == tuple(c.seed for c in members)
        for name, get in [
            ("final_test_loss", lambda r: r.final_test_loss),
            ("best_test_loss", lambda r: r.best_test_loss),
            ("final_test_acc", lambda r: r.final_test_acc),
            ("final_test_error", lambda r: 1 - r.final_test_acc),
            ("final_train_loss", lambda r: r.final_train_loss),
            ("gap", lambda r: r.final_test_loss - r.final_train_loss),
        ]:
            x = np.array([get(results[c.index]) for c in members])
            s = pt[name]
            assert s.n == len(x) and s.values == pytest.approx(tuple(x))
            assert s.mean == pytest.approx(x.mean())
            assert s.std == pytest.approx(x.std(ddof=1) if len(x) > 1 else 0.0)
    assert points[-1].n == 1 and points[-1]["gap"].std == 0.0


def test_size_effects_match_numpy():
    rng = np.random.default_rng(1)
    grid = Grid(ps=(0, 0.25, 0.5), sizes=(100, 1000), seeds=(0, 1, 2))
    cells = grid.cells()
    results = {c.index: fake_result(rng) for c in cells}
    del results[next(c.index for c in cells if c.point == (1000, 0.5) and c.seed == 2)]
    effects = size_effects(cells, results)
    assert [(e.p_on, e.train_size) for e in effects] == [(0.25, 100), (0.25, 1000), (0.5, 100),
                                                         (0.5, 1000)]  # fmt: skip
    for e in effects:

        def errors(p, e=e):
            return {
                c.seed: 1 - results[c.index].final_test_acc
                for c in cells
                if c.point == (e.train_size, p) and c.index in results
            }

        off, on = errors(0.0), errors(e.p_on)
        a, b = np.array(list(off.values())), np.array(list(on.values()))
        assert e.diff == pytest.approx(b.mean() - a.mean())
        assert e.diff_std == pytest.approx(np.sqrt(a.var(ddof=1) + b.var(ddof=1)))
        common = set(off) & set(on)
        assert e.pairs == len(common)
        assert e.wins == sum(on[s] < off[s] for s in common)
    with pytest.raises(ValueError, match="unknown metric"):
        size_effects(cells, results, "accuracy")


def test_stat_and_result_from_metrics():
    assert Stat.of([2.0]).text() == "2.000 (n = 1)"
    assert Stat.of([1.0, 3.0]).text(2) == "2.00 ± 1.41"
    metrics = [
        {"epoch": 1, "train_loss": 0.9, "train_acc": 0.7, "test_loss": 0.5, "test_acc": 0.85},
        {"epoch": 2, "train_loss": 0.2, "train_acc": 0.9, "test_loss": 0.3, "test_acc": 0.91},
        {"epoch": 3, "train_loss": 0.1, "train_acc": 0.95, "test_loss": 0.4, "test_acc": 0.9},
    ]
    r = CellResult.from_metrics(metrics)
    assert (r.final_test_loss, r.best_test_loss, r.best_epoch) == (0.4, 0.3, 2)
    assert (r.final_test_acc, r.final_train_loss) == (0.9, 0.1)
    assert r.gap == pytest.approx(0.3) and r.final_test_error == pytest.approx(0.1)
    with pytest.raises(ValueError):
        CellResult.from_metrics([])


# -- reading ---------------------------------------------------------------------------------


def curve_results(cells: list[Cell], test: dict, train: dict, noise=0.002) -> dict:
    """Results whose seeds scatter by ±noise around the given means per p."""
    out = {}
    for c in cells:
        jitter = noise * (c.seed - 1)  # seeds 0, 1, 2: -noise, 0, +noise
        out[c.index] = CellResult(
            final_test_loss=test[c.p] + jitter,
            best_test_loss=test[c.p] + jitter - 0.01,
            final_test_acc=0.95,
            final_train_loss=train[c.p] + jitter / 10,
        )
    return out


U_TEST = {0.0: 0.22, 0.1: 0.19, 0.2: 0.17, 0.3: 0.16, 0.4: 0.152, 0.5: 0.15, 0.6: 0.155,
          0.7: 0.17, 0.8: 0.21, 0.9: 0.30}  # fmt: skip
U_TRAIN = {0.0: 0.001, 0.1: 0.005, 0.2: 0.01, 0.3: 0.02, 0.4: 0.03, 0.5: 0.04, 0.6: 0.055,
           0.7: 0.08, 0.8: 0.15, 0.9: 0.40}  # fmt: skip


def test_reading_of_a_u_shaped_curve():
    cells = GRID_PRESETS["p-curve"].cells()
    results = curve_results(cells, U_TEST, U_TRAIN)
    points = aggregate(cells, results)
    # p = 0.7: train 0.08 >= 1.5 × 0.04 and test 0.17 clearly above 0.15; so are 0.8 and 0.9
    assert underfit_from(points).p == 0.7
    line = reading(cells, results)
    assert line.startswith("Lowest final test loss at p = 0.5: 0.150 ± 0.002 (p = 0.4 within noise")
    assert "p = 0: 0.220 ± 0.002; p = 0.9: 0.300 ± 0.002." in line
    assert "Training underfits from p = 0.7: train loss 0.080 ± 0.000 vs 0.040 ± 0.000" in line
    assert "single seed" not in line


def test_underfitting_must_hold_for_every_larger_p():
    cells = GRID_PRESETS["p-curve"].cells()
    test = {**U_TEST, 0.8: 0.151}  # p = 0.8 happens to test as well as the best
    results = curve_results(cells, test, U_TRAIN)
    assert underfit_from(aggregate(cells, results)).p == 0.9


def test_reading_without_underfitting_and_with_noise():
    cells = Grid(ps=(0, 0.2, 0.4), seeds=(0, 1, 2)).cells()
    test = {0: 0.2, 0.2: 0.17, 0.4: 0.175}
    # p = 0.4 tests worse than p = 0.2, but its train loss is not 1.5 times p = 0.2's
    results = curve_results(cells, test, {0: 0.0, 0.2: 0.01, 0.4: 0.012})
    line = reading(cells, results)
    assert line.startswith("Lowest final test loss at p = 0.2: 0.170 ± 0.002.")
    assert line.endswith("No sign of underfitting up to p = 0.4.")
    # noise as large as the differences: every p is within noise of the best
    noisy = curve_results(cells, test, {0: 0, 0.2: 0.01, 0.4: 0.03}, 0.05)
    assert "(p = 0 and 0.4 within noise of it)" in reading(cells, noisy)
    assert "underfits" not in reading(cells, noisy)


def test_reading_before_and_with_single_seeds():
    cells = Grid(ps=(0, 0.5), seeds=(0, 1)).cells()
    assert reading(cells, {}) == "No finished runs yet."
    one = {0: CellResult(0.2, 0.19, 0.95, 0.01)}
    assert reading(cells, one).startswith("Only p = 0 so far: final test loss 0.200 (n = 1).")
    assert "single seed" in reading(cells, one)


def test_reading_of_a_size_grid():
    grid = Grid(ps=(0, 0.5), sizes=(100, 1000, 10_000), seeds=(0, 1, 2))
    cells = grid.cells()
    test = {(100, 0.0): 0.60, (100, 0.5): 0.60, (1000, 0.0): 0.22, (1000, 0.5): 0.15,
            (10_000, 0.0): 0.06, (10_000, 0.5): 0.08}  # fmt: skip
    results = {
        c.index: CellResult(test[c.point] + 0.005 * (c.seed - 1), 0.0, 0.9, 0.01) for c in cells
    }
    line = reading(cells, results)
    assert line == (
        "Dropout (p = 0.5) lowers the final test loss at 1,000 images (-0.070 ± 0.007); "
        "raises it at 10,000 images (+0.020 ± 0.007); makes no clear difference at 100 images."
    )
    effects = {e.train_size: e for e in size_effects(cells, results, "final_test_loss")}
    assert (effects[1000].verdict, effects[1000].wins, effects[1000].pairs) == ("helps", 3, 3)
    assert reading(cells, {0: results[0]}).startswith("Waiting for runs with and without")
    shifted = Grid(ps=(0.2, 0.5), sizes=(100, 1000), seeds=(0,)).cells()
    line = reading(shifted, {c.index: CellResult(0.3 - c.p / 10, 0, 0.9, 0.0) for c in shifted})
    assert line.startswith("p = 0.5 (against p = 0.2) lowers the final test loss at 100 and 1,000")
    assert line.endswith("differences may be noise.)")


# -- CSV -------------------------------------------------------------------------------------


def test_grid_csv_has_one_row_per_cell():
    grid = Grid(ps=(0, 0.5), seeds=(0, 1), base=TrainConfig(train_size=300, epochs=2))
    cells = grid.cells()
    results = {1: CellResult(0.3, 0.25, 0.91, 0.1, best_epoch=1)}
    text = grid_csv(cells, results, statuses={2: "running"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 4
    assert [r["status"] for r in rows] == ["pending", "done", "running", "pending"]
    done = rows[1]
    assert (done["p"], done["seed"], done["train_size"], done["epochs"]) == ("0.5", "0", "300", "2")
    assert float(done["gap"]) == pytest.approx(0.2) and done["best_epoch"] == "1"
    assert rows[0]["final_test_loss"] == ""
