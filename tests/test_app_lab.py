"""The Lab view in Streamlit's AppTest: start, watch, stop, refuse bad settings, show failures."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from apptest_helpers import owner_of, wait_until
from streamlit.testing.v1 import AppTest

from dropout_demo import jobs, links
from dropout_demo.config import PRESETS
from dropout_demo.runs import RunStore
from dropout_demo.ui import lab, state

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 60


@pytest.fixture
def lab_manager(make_app_manager, mnist, monkeypatch):
    monkeypatch.setenv(lab.TEST_PRESETS_ENV, "1")
    return make_app_manager(data_provider=lambda: mnist, max_running=2, store=RunStore())


def open_lab() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def chart_specs(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by chart key fragment (loss, acc, gap)."""
    specs = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        specs[spec["layout"]["uirevision"]] = spec
    return specs


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_app_opens_on_the_lab_without_exceptions(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    at = open_lab()
    assert at.title[0].value.startswith("Lab")
    assert at.radio(key="lab_preset").value == "Overfitting lab"
    assert "Tiny (test)" not in at.radio(key="lab_preset").options  # test preset hidden
    assert at.slider(key="lab_p").value == 0.5
    assert "No runs yet" in texts(at)
    assert set(chart_specs(at)) == {"loss", "accuracy", "gap"}
    assert at.info[0].value.startswith("Nothing yet")


def test_start_a_tiny_run_fills_the_table_then_the_charts(lab_manager):
    at = open_lab()
    at.radio(key="lab_preset").set_value("Tiny (test)").run()
    at.button(key="lab_start").click().run()
    assert not at.exception
    (snap,) = lab_manager.snapshot(owner_of(at))
    assert snap.config == PRESETS["Tiny (test)"].replace(p=0.5)
    assert snap.name in texts(at)  # its row in the runs table
    assert at.button(key=f"lab_stop_{snap.id}")

    wait_until(lambda: lab_manager.get(snap.id, owner_of(at)).is_terminal)
    at.run()
    assert not at.exception
    assert lab_manager.get(snap.id, owner_of(at)).status == "done"
    assert "done" in texts(at)
    loss = chart_specs(at)["loss"]
    assert [t["name"] for t in loss["data"]] == ["p = 0.50 · train", "p = 0.50 · test"]
    assert [len(t["x"]) for t in loss["data"]] == [3, 3]
    assert "after 3 epochs" in at.info[0].value
    assert at.button(key=f"lab_remove_{snap.id}")
    assert at.get("download_button")  # CSV and weights

    assert lab_manager.get(snap.id, owner_of(at)).saved_run_id is not None  # saved by itself

    at.button(key=f"lab_remove_{snap.id}").click().run()
    assert lab_manager.snapshot(owner_of(at)) == ()
    assert "No runs yet" in texts(at)


def test_stop_cancels_a_running_run(lab_manager):
    at = open_lab()
    at.radio(key="lab_preset").set_value("Custom").run()
    at.number_input(key="lab_train_size").set_value(20_000)
    at.number_input(key="lab_epochs").set_value(10).run()
    at.button(key="lab_start").click().run()
    (snap,) = lab_manager.snapshot(owner_of(at))
    wait_until(lambda: lab_manager.get(snap.id, owner_of(at)).status == "running")
    at.button(key=f"lab_stop_{snap.id}").click().run()
    assert not at.exception
    wait_until(lambda: lab_manager.get(snap.id, owner_of(at)).is_terminal)
    at.run()
    assert lab_manager.get(snap.id, owner_of(at)).status == "cancelled"
    assert "stopped" in texts(at)
    assert at.button(key=f"lab_remove_{snap.id}")


def test_invalid_custom_values_are_refused_with_a_message(make_app_manager):
    manager = make_app_manager(data_provider=lambda: None)
    at = open_lab()
    at.radio(key="lab_preset").set_value("Custom").run()
    at.number_input(key="lab_train_size").set_value(0)
    at.text_input(key="lab_lr").input("fast").run()
    assert not at.exception
    message = at.error[0].value
    assert "train_size must be an integer in 1..60000" in message
    assert "learning rate must be a number" in message
    assert at.button(key="lab_start").disabled  # a browser cannot click it
    assert at.button(key="lab_compare").disabled
    assert manager.snapshot(owner_of(at)) == ()


def test_a_run_over_the_server_limit_is_refused_with_the_managers_reason(make_app_manager):
    manager = make_app_manager(data_provider=lambda: None)
    at = open_lab()
    at.radio(key="lab_preset").set_value("Custom").run()
    at.number_input(key="lab_train_size").set_value(60_000)
    at.number_input(key="lab_epochs").set_value(100).run()
    at.button(key="lab_start").click().run()
    assert not at.exception
    assert any("too large" in e.value for e in at.error)
    assert manager.snapshot(owner_of(at)) == ()


def test_a_failed_run_shows_its_reason(make_app_manager):
    def broken_fit(*args, **kwargs):
        raise RuntimeError("out of paper")

    manager = make_app_manager(data_provider=lambda: None, fit_fn=broken_fit)
    at = open_lab()
    at.button(key="lab_start").click().run()
    owner = owner_of(at)
    wait_until(lambda: all(s.is_terminal for s in manager.snapshot(owner)))
    at.run()
    assert not at.exception
    assert any("failed" in e.value and "out of paper" in e.value for e in at.error)


def test_compare_pairs_the_run_with_p_zero_or_p_half():
    base = PRESETS["Overfitting lab"]
    assert lab.comparison_configs(base.replace(p=0.3), []) == [
        base.replace(p=0.3),
        base.replace(p=0.0),
    ]
    assert lab.comparison_configs(base.replace(p=0.0), []) == [
        base.replace(p=0.0),
        base.replace(p=0.5),
    ]


def test_compare_button_starts_both_runs_and_skips_one_already_there(make_app_manager):
    release = threading.Event()

    def waiting_fit(config, data, should_stop, **kwargs):
        while not (should_stop() or release.wait(0.01)):
            pass
        raise RuntimeError("test over")

    manager = make_app_manager(data_provider=lambda: None, fit_fn=waiting_fit, max_running=4)
    at = open_lab()
    at.button(key="lab_start").click().run()
    at.button(key="lab_compare").click().run()
    assert not at.exception
    ps = [s.config.p for s in manager.snapshot(owner_of(at))]
    assert ps == [0.5, 0.0]  # the p = 0.5 run already existed, so only p = 0 was added
    release.set()


def test_a_second_student_sees_the_shared_run_and_then_the_cached_result(
    make_app_manager, mnist, monkeypatch
):
    monkeypatch.setenv(lab.TEST_PRESETS_ENV, "1")
    manager = make_app_manager(data_provider=lambda: mnist, max_running=2, store=RunStore())
    first, second = open_lab(), open_lab()
    assert owner_of(first) != owner_of(second)
    for at in (first, second):
        at.radio(key="lab_preset").set_value("Tiny (test)").run()
        at.button(key="lab_start").click().run()
        assert not at.exception
    (a,), (b,) = manager.snapshot(owner_of(first)), manager.snapshot(owner_of(second))
    assert a.key == b.key and a.id != b.id
    wait_until(lambda: manager.get(b.id, owner_of(second)).saved_run_id is not None)
    assert manager.stats()["trained"] == 1
    second.run()
    assert "done" in texts(second)

    # A new process (new manager, same store): the same request is a cached result at once.
    manager.shutdown(timeout=TIMEOUT)
    later = make_app_manager(data_provider=lambda: None, store=RunStore())
    third = open_lab()
    third.radio(key="lab_preset").set_value("Tiny (test)").run()
    third.button(key="lab_start").click().run()
    assert not third.exception
    (c,) = later.snapshot(owner_of(third))
    assert c.status == "done" and c.cached
    assert "done · cached result, trained at" in texts(third)
    assert later.stats()["trained"] == 0


def test_the_live_panel_keeps_the_lease_of_an_open_page(make_app_manager, monkeypatch):
    import inspect

    release = threading.Event()

    def waiting_fit(config, data, should_stop, **kwargs):
        while not (should_stop() or release.wait(0.01)):
            pass
        raise RuntimeError("test over")

    manager = make_app_manager(data_provider=lambda: None, fit_fn=waiting_fit)
    at = open_lab()
    at.button(key="lab_start").click().run()
    owner = owner_of(at)
    callers = []
    original = state.touch

    def recording_touch(who):
        callers.append((who, inspect.stack()[1].function))
        original(who)

    monkeypatch.setattr(state, "touch", recording_touch)
    manager.release(owner)  # e.g. Streamlit closed an old session of this owner
    assert manager._leases.pending(owner)
    at.run()  # the live panel renders, as its timer makes it do every second
    assert (owner, "live_panel") in callers
    assert not manager._leases.pending(owner)
    release.set()


def test_the_live_panel_polls_fast_while_training_slowly_while_waiting_never_when_idle():
    from types import SimpleNamespace

    def snap(status):
        return SimpleNamespace(status=status, is_terminal=status in jobs.TERMINAL)

    assert lab.poll_interval([snap("running"), snap("queued")]) == lab.POLL_SECONDS
    assert lab.poll_interval([snap("queued"), snap("done")]) == lab.POLL_QUEUED_SECONDS
    assert lab.poll_interval([snap("done"), snap("cancelled")]) is None
    assert lab.poll_interval([]) is None
    assert lab.POLL_SECONDS < lab.POLL_QUEUED_SECONDS
    # A class shares the server's tick budget: more polling sessions, slower refresh for all.
    budget = lab.tick_budget()
    running = [snap("running")]
    assert lab.poll_interval(running, pollers=1) == lab.POLL_SECONDS
    assert lab.poll_interval(running, pollers=int(3 * budget)) == 3.0
    assert lab.poll_interval([snap("queued")], pollers=int(3 * budget)) == 6.0


def test_a_stale_remove_button_for_a_row_already_gone_says_nothing(make_app_manager, mnist):
    manager = make_app_manager(data_provider=lambda: mnist, store=RunStore())
    at = open_lab()
    at.radio(key="lab_preset").set_value("Custom").run()
    at.number_input(key="lab_train_size").set_value(256)
    at.number_input(key="lab_epochs").set_value(1).run()
    at.button(key="lab_start").click().run()
    (snap,) = manager.snapshot(owner_of(at))
    wait_until(lambda: manager.get(snap.id, owner_of(at)).is_terminal)
    at.run()
    button = at.button(key=f"lab_remove_{snap.id}")
    manager.remove(snap.id, owner_of(at))  # gone meanwhile (another tab, say)
    button.click().run()
    assert not at.exception
    assert not any("No such run" in e.value for e in at.error)


# ---------------------------------------------------------------------------- links
def open_lab_at(query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def url(at: AppTest) -> dict[str, str]:
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def test_a_link_restores_the_lab_settings_and_changes_go_back_into_the_url(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    custom = PRESETS["Overfitting lab"].replace(p=0.3, epochs=12, lr=0.002, seed=4)
    link = {**links.lab_settings("custom", 0.3, custom).to_query(), "class": "ABCDE"}
    at = open_lab_at(link)
    assert not at.warning
    assert at.slider(key="lab_p").value == 0.3
    assert at.radio(key="lab_preset").value == "Custom"
    assert at.number_input(key="lab_epochs").value == 12
    assert at.number_input(key="lab_seed").value == 4
    assert at.text_input(key="lab_lr").value == "0.002"
    assert "Next run: p=0.30 · 1,000 imgs · 12 ep · lr 0.002" in texts(at)
    assert url(at) == link  # nothing rewritten, the class code kept

    at.slider(key="lab_p").set_value(0.45).run()
    at.number_input(key="lab_train_size").set_value(3_000).run()
    assert url(at)["p"] == "0.45" and url(at)["train_size"] == "3000"
    assert url(at)["class"] == "ABCDE"
    # The URL now opens the same settings for anyone.
    again = open_lab_at(url(at))
    assert again.slider(key="lab_p").value == 0.45
    assert again.number_input(key="lab_train_size").value == 3_000
    assert again.number_input(key="lab_epochs").value == 12

    # A preset drops the custom fields from the link.
    at.radio(key="lab_preset").set_value("Seed recipe").run()
    assert url(at) == {"class": "ABCDE", "preset": "seed", "p": "0.45"}
    seed = open_lab_at(url(at))
    assert seed.radio(key="lab_preset").value == "Seed recipe"
    assert seed.slider(key="lab_p").value == 0.45


def test_a_plain_visit_writes_the_default_settings_into_the_url(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    at = open_lab()
    assert url(at) == {"preset": "overfit", "p": "0.5"}
    assert not at.warning


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"p": "banana"}, "p: 'banana' is not a number"),
        ({"p": "7", "preset": "warp"}, "preset: 'warp' is not one of"),
        ({"preset": "custom", "epochs": "-5", "batch_size": "1e9"}, "epochs must be an integer"),
        ({"preset": "tiny"}, "preset: 'tiny' is not offered on this server"),  # tests only
    ],
)
def test_a_bad_lab_link_gives_a_readable_message_and_the_defaults(make_app_manager, query, says):
    make_app_manager(data_provider=lambda: None)
    at = open_lab_at({**query, "present": "1"})
    assert not at.exception
    (warning,) = at.warning
    assert "can't be used" in warning.value and says in warning.value
    preset = "Custom" if query.get("preset") == "custom" else "Overfitting lab"
    assert at.radio(key="lab_preset").value == preset
    assert at.slider(key="lab_p").value == 0.5
    assert not at.error  # the defaults are valid settings
    assert not at.button(key="lab_start").disabled
    assert url(at)["present"] == "1"  # someone else's parameter stays
    assert links.lab_from_query(url(at))[1] == []  # the URL now holds good settings
    at.run()
    assert not at.warning  # said once, not on every rerun


def test_coming_back_to_the_lab_without_a_link_keeps_the_sessions_settings(make_app_manager):
    make_app_manager(data_provider=lambda: None)
    two_pages = (
        "import streamlit as st\n"
        "from dropout_demo.ui.lab import lab_view\n"
        "if st.session_state.get('elsewhere'):\n"
        "    st.write('another page')\n"
        "else:\n"
        "    lab_view()\n"
    )
    at = AppTest.from_string(two_pages, default_timeout=TIMEOUT).run()
    at.radio(key="lab_preset").set_value("Seed recipe").run()
    at.slider(key="lab_p").set_value(0.2).run()
    # Another page: Streamlit forgets the Lab's widgets; the navigation's way back has no query.
    at.session_state["elsewhere"] = True
    at.run()
    assert not at.slider
    at.query_params.clear()
    at.session_state["elsewhere"] = False
    at.run()
    assert not at.exception
    assert at.radio(key="lab_preset").value == "Seed recipe"
    assert at.slider(key="lab_p").value == 0.2
    assert url(at) == {"preset": "seed", "p": "0.2"}


def test_csv_reads_the_metrics_at_the_click_and_a_first_epoch_redraws_no_page(lab_manager):
    """The CSV button is drawn with the row and reads the run's metrics when clicked, so the
    page's buttons need no redraw when the first epoch lands (in a class, every page at once)."""
    import dataclasses

    at = open_lab()
    at.radio(key="lab_preset").set_value("Tiny (test)").run()
    at.button(key="lab_start").click().run()
    owner = owner_of(at)
    (snap,) = lab_manager.snapshot(owner)
    assert at.get("download_button")  # the CSV button, before any epoch may have landed
    wait_until(lambda: lab_manager.get(snap.id, owner).is_terminal)
    done = lab_manager.get(snap.id, owner)
    rows = lab._csv(snap.id, owner).strip().splitlines()
    assert len(rows) == 1 + len(done.metrics) == 4 and rows[0].startswith("epoch")
    assert lab._csv("no-such-run", owner).strip().splitlines() == rows[:1]
    fewer = dataclasses.replace(done, metrics=done.metrics[:1])
    assert lab._actions_signature([fewer]) == lab._actions_signature([done])
    assert lab._actions_signature([done]) != lab._actions_signature(
        [dataclasses.replace(done, has_model=not done.has_model)]
    )


def test_a_ray_cluster_that_cannot_be_used_is_a_message_on_the_page(monkeypatch):
    """DROPOUT_DEMO_RAY set on a server without Ray: every page says training is not
    available and why, instead of a traceback (and nothing else runs)."""
    import sys

    from dropout_demo.jobs import manager as manager_module

    monkeypatch.setattr(manager_module, "_manager", None)
    monkeypatch.setattr(manager_module, "_register_exit", lambda fn: None)
    monkeypatch.setenv("DROPOUT_DEMO_RAY", "auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    state._manager.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.error]
        assert any(
            "Training is not available" in e and "requirements-ray.txt" in e for e in errors
        ), errors
    finally:
        state._manager.clear()
