"""The Sweep and Class pages in Streamlit's AppTest: a tiny grid trains through the job manager,
cells finish, charts, reading and CSV appear; the grid round-trips through the URL."""

from __future__ import annotations

import csv
import io
import json

import pytest
from apptest_helpers import owner_of, wait_until
from streamlit.testing.v1 import AppTest

from dropout_demo.classes import Classes, p_choices
from dropout_demo.runs import RunStore
from dropout_demo.sweeps import BASE_PRESETS, GRID_PRESETS, Grid
from dropout_demo.ui import state, sweep

SWEEP = "from dropout_demo.ui.sweep import sweep_view\nsweep_view()\n"
CLASS = "from dropout_demo.ui.classroom import class_view\nclass_view()\n"
TWO_PAGES = """
import streamlit as st
from dropout_demo.ui.sweep import sweep_view
if st.session_state.get("elsewhere"):
    st.write("another page")
else:
    sweep_view()
"""
TIMEOUT = 120


@pytest.fixture
def tiny_manager(make_app_manager, mnist, monkeypatch):
    monkeypatch.setenv(sweep.TEST_PRESETS_ENV, "1")
    return make_app_manager(data_provider=lambda: mnist, max_running=2, store=RunStore())


def open_page(script: str, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_string(script, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def chart_titles(at: AppTest) -> dict[str, dict]:
    specs = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        specs[spec["layout"]["title"]["text"]] = spec
    return specs


def progress_text(at: AppTest) -> str:
    return " ".join(str(p.proto.text) for p in at.get("progress"))


def test_the_sweep_page_opens_on_the_p_curve_and_puts_it_in_the_url(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    at = open_page(SWEEP)
    assert at.text_input(key="sweep_ps").value == "0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9"
    assert at.text_input(key="sweep_seeds").value == "0, 1, 2"
    assert at.radio(key="sweep_base").value == "overfit"
    assert "tiny" not in at.radio(key="sweep_base").options
    assert "0 of 30 cells finished" in progress_text(at)
    assert Grid.from_query(dict(at.query_params)) == GRID_PRESETS["p-curve"]
    assert set(chart_titles(at)) == {
        "Test loss against p",
        "Test accuracy against p",
        "Generalisation gap against p",
    }
    assert at.info[0].value == "No finished runs yet."


def test_a_link_restores_the_grid_and_edits_go_back_into_the_url(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    grid = Grid(ps=(0.0, 0.5), seeds=(0, 1), sizes=(100, 300), base=BASE_PRESETS["seed"])
    at = open_page(SWEEP, grid.to_query())
    assert at.radio(key="sweep_kind").value == sweep.SIZE_KIND
    assert at.text_input(key="sweep_sizes").value == "100, 300"
    assert at.radio(key="sweep_base").value == "seed"
    assert "0 of 8 cells finished" in progress_text(at)
    assert set(chart_titles(at)) == {
        "Test error against training-set size",
        "Final test loss against training-set size",
    }
    at.text_input(key="sweep_seeds").input("0, 1, 2").run()
    assert not at.exception
    assert Grid.from_query(dict(at.query_params)) == Grid(
        ps=(0.0, 0.5), seeds=(0, 1, 2), sizes=(100, 300), base=BASE_PRESETS["seed"]
    )
    # A link with extra base fields keeps them (no widget for lr here).
    custom = Grid(ps=(0.0, 0.3), seeds=(4,), base=BASE_PRESETS["overfit"].replace(lr=0.002))
    again = open_page(SWEEP, custom.to_query())
    assert Grid.from_query(dict(again.query_params)) == custom
    assert "0 of 2 cells finished" in progress_text(again)


def test_a_bad_link_gives_a_readable_message(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    at = open_page(SWEEP, {"p": "0,banana", "seeds": "-1"})
    message = at.error[0].value
    assert "can't be used" in message and "'banana' is not a number" in message
    assert at.text_input(key="sweep_seeds").value == "0, 1, 2"  # the default grid instead
    at.text_input(key="sweep_ps").input("0, 1.5").run()
    assert not at.exception
    assert any("dropout rate must be in [0, 1)" in e.value for e in at.error)
    assert at.button(key="sweep_run").disabled


def test_a_tiny_sweep_runs_cell_by_cell_and_fills_the_charts(tiny_manager):
    at = open_page(SWEEP)
    at.radio(key="sweep_base").set_value("tiny").run()
    at.text_input(key="sweep_ps").input("0, 0.5, 0.9")
    at.text_input(key="sweep_seeds").input("0, 1").run()
    assert at.number_input(key="sweep_epochs").value == 3
    assert "0 of 6 cells finished" in progress_text(at)
    at.button(key="sweep_run").click().run()
    assert not at.exception
    owner = owner_of(at)
    # Gradual: never more than the session's limit in flight, so nothing is refused.
    snaps = tiny_manager.snapshot(owner)
    assert 1 <= len(snaps) <= sweep.IN_FLIGHT
    assert not at.error

    def finished() -> bool:
        at.run()  # what the panel's timer does every second
        assert not at.exception, at.exception
        active = [s for s in tiny_manager.snapshot(owner) if not s.is_terminal]
        assert len(active) <= sweep.IN_FLIGHT
        return "6 of 6 cells finished" in progress_text(at)

    wait_until(finished)
    at.run()
    assert not at.error
    assert {s.status for s in tiny_manager.snapshot(owner)} == {"done"}
    table = at.dataframe[0].value
    assert table.shape == (2, 3) and all(str(v).startswith("✓") for v in table.to_numpy().ravel())
    loss = chart_titles(at)["Test loss against p"]
    mean = next(t for t in loss["data"] if t["name"] == "final test loss")
    assert list(mean["x"]) == [0.0, 0.5, 0.9]
    assert all(e >= 0 for e in mean["error_y"]["array"])
    seeds = next(t for t in loss["data"] if t["name"] == "final test loss · each seed")
    assert len(seeds["y"]) == 6
    assert at.info[0].value.startswith("Lowest final test loss at p = ")
    (download,) = at.get("download_button")
    assert download.proto.label == "Download the grid (CSV)"

    # A second visitor asking for the same grid gets every cell from the run store at once.
    other = open_page(SWEEP, dict(at.query_params))
    assert "6 of 6 cells finished" in progress_text(other)
    trained = tiny_manager.stats()["trained"]
    other.button(key="sweep_run").click().run()
    assert tiny_manager.stats()["trained"] == trained


def test_csv_of_the_grid_has_a_row_per_cell(tiny_manager):
    grid = Grid(ps=(0.0, 0.5), seeds=(0,), base=BASE_PRESETS["tiny"])
    cells = grid.cells()
    text = sweep.grid_csv(cells, {}, {0: "running 1/3"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["status"] for r in rows] == ["running 1/3", "pending"]


def test_a_student_runs_a_cell_and_it_lands_on_another_students_board(tiny_manager):
    grid = Grid(ps=(0.0, 0.5), seeds=(0,), base=BASE_PRESETS["tiny"])
    teacher = open_page(CLASS)
    assert teacher.title[0].value.startswith("Class")
    room = Classes(state.store().root / "classes").create(
        owner_of(teacher), grid, "Which p wins?", p_choices(grid)
    )
    first = open_page(CLASS, {"class": room.code})
    second = open_page(CLASS, {"class": room.code})
    assert first.title[0].value == f"Class {room.code}"
    assert "0 of 2 runs finished" in progress_text(second)
    first.radio(key=f"class_guess_{room.code}").set_value("p = 0.5").run()
    second.radio(key=f"class_guess_{room.code}").set_value("p = 0").run()
    second.radio(key=f"class_guess_{room.code}").set_value("p = 0.5").run()  # changes her mind
    assert Classes(state.store().root / "classes").get(room.code).guess_counts() == {"p = 0.5": 2}
    # A reload (a new session of the same visitor) shows her guess.
    again = AppTest.from_string(CLASS, default_timeout=TIMEOUT)
    again.session_state["dropout_lab_owner"] = owner_of(first)
    again.query_params["class"] = room.code
    again.run()
    assert again.radio(key=f"class_guess_{room.code}").value == "p = 0.5"
    first.button(key="class_run").click().run()
    assert not first.exception
    assert any("Your cell: p = 0" in s.value for s in first.success)

    def on_board() -> bool:
        second.run()
        return "1 of 2 runs finished" in progress_text(second)

    wait_until(on_board)
    guesses = next(
        json.loads(c.proto.spec)
        for c in second.get("plotly_chart")
        if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("The class's guesses")
    )
    assert guesses["data"][0]["y"] == [0, 2]
    second.button(key="class_run").click().run()  # the next free cell, not the first one
    assert any("Your cell: p = 0.5" in s.value for s in second.success)
    labels = {b.proto.label for b in second.get("download_button")}
    assert labels == {"Download the class's grid (CSV)", "Download the guesses (CSV)"}
    presenter = open_page(CLASS, {"class": room.code, "present": "1"})
    assert not presenter.button  # no controls on the projector
    assert presenter.title[0].value == f"Class {room.code}"


def test_a_wrong_class_code_is_a_message(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    at = open_page(CLASS, {"class": "NOPE1"})
    assert "not a class code" in at.error[0].value
    at = open_page(CLASS, {"class": "AAAAA"})
    assert "no class AAAAA" in at.error[0].value


def test_coming_back_to_the_page_without_a_link_keeps_the_sessions_grid(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    at = open_page(TWO_PAGES)
    at.text_input(key="sweep_ps").input("0, 0.25").run()
    grid = Grid.from_query(dict(at.query_params))
    assert grid.ps == (0.0, 0.25)
    # Another page: Streamlit forgets the Sweep widgets; the navigation's way back has no query.
    at.session_state["elsewhere"] = True
    at.run()
    assert not at.text_input
    at.query_params.clear()
    at.session_state["elsewhere"] = False
    at.run()
    assert not at.exception
    assert at.text_input(key="sweep_ps").value == "0, 0.25"
    assert Grid.from_query(dict(at.query_params)) == grid


def test_a_teacher_starts_a_class_on_the_page_and_a_student_joins_with_the_code(
    make_app_manager, monkeypatch
):
    make_app_manager(data_provider=lambda: None)
    monkeypatch.setenv(sweep.TEST_PRESETS_ENV, "1")
    teacher = open_page(CLASS)
    teacher.radio(key="class_new_base").set_value("tiny").run()
    teacher.button(key="class_create").click().run()
    assert not teacher.exception
    code = teacher.query_params["class"]
    code = code[-1] if isinstance(code, list) else code
    shelf = Classes(state.store().root / "classes")
    room = shelf.get(code)
    assert room.teacher == owner_of(teacher)
    preset = GRID_PRESETS["p-curve"]
    assert room.grid == Grid(ps=preset.ps, seeds=preset.seeds, base=BASE_PRESETS["tiny"])
    assert room.question == "Which p will give the lowest test loss?"
    assert room.choices == p_choices(room.grid)
    assert teacher.title[0].value == f"Class {code}"
    assert any(f"class?class={code}" in m.value for m in teacher.markdown)
    assert teacher.get("image")  # the QR code

    teacher.text_input(key="class_edit_question").input("From which p does training underfit?")
    teacher.text_input(key="class_edit_choices").input("p = 0.5, p = 0.7, p = 0.9").run()
    teacher.button(key="class_set_question").click().run()
    room = shelf.get(code)
    assert room.question == "From which p does training underfit?"
    assert room.choices == ("p = 0.5", "p = 0.7", "p = 0.9")
    teacher.selectbox(key="class_edit_grid").set_value("data-size").run()
    teacher.button(key="class_set_grid").click().run()
    assert not teacher.exception
    assert shelf.get(code).grid.sizes == GRID_PRESETS["data-size"].sizes

    student = open_page(CLASS)
    student.text_input(key="class_join_code").input(f" {code.lower()} ")
    student.button(key="class_join").click().run()
    assert not student.exception
    assert student.title[0].value == f"Class {code}"
    assert student.radio(key=f"class_guess_{code}").options == ["p = 0.5", "p = 0.7", "p = 0.9"]
    student_keys = {w.key for w in student.text_input}
    assert "class_edit_question" not in student_keys  # teacher tools for the teacher only


def test_a_grid_too_large_for_the_server_is_refused_before_it_runs(make_app_manager):
    manager = make_app_manager(data_provider=lambda: None)
    at = open_page(SWEEP)
    at.radio(key="sweep_base").set_value("seed").run()
    at.number_input(key="sweep_epochs").set_value(30).run()
    assert not at.exception
    assert any("can't run on this server" in e.value and "too large" in e.value for e in at.error)
    assert at.button(key="sweep_run").disabled
    assert manager.snapshot(owner_of(at)) == ()


def test_the_guess_histogram_marks_the_p_the_results_favour():
    from dropout_demo.classes import ClassRoom
    from dropout_demo.sweeps import CellResult
    from dropout_demo.ui.classroom import favoured_choice

    grid = Grid(ps=(0.0, 0.5, 0.9), seeds=(0, 1), base=BASE_PRESETS["tiny"])
    cells = grid.cells()
    loss = {0.0: 0.3, 0.5: 0.2, 0.9: 0.4}
    results = {c.index: CellResult(loss[c.p] + 0.01 * c.seed, 0.1, 0.9, 0.1) for c in cells}
    room = ClassRoom("ACDEF", grid, "t", 0.0, "Which p?", p_choices(grid))
    assert favoured_choice(room, cells, results) == "p = 0.5"
    assert favoured_choice(room, cells, {}) is None
    other = ClassRoom("ACDEF", grid, "t", 0.0, "Which p?", ("p = 0", "p = 0.9"))
    assert favoured_choice(other, cells, results) is None  # not among the choices
