"""AppTest checks of the Draw page's uncertainty probe and the Inside page, with tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dropout_demo.config import TrainConfig
from dropout_demo.model import SimpleCNN
from dropout_demo.probes import probe_image
from dropout_demo.runs import RunStore
from dropout_demo.ui import draw, state
from dropout_demo.ui.draw import ModelChoice
from dropout_demo.ui.inside import default_pair
from dropout_demo.ui.probe_panel import partner_for

DRAW_SCRIPT = "from dropout_demo.ui.draw import draw_view\ndraw_view()\n"
INSIDE_SCRIPT = "from dropout_demo.ui.inside import inside_view\ninside_view()\n"
OWNER = "test-probe-owner"
BASE = TrainConfig(p=0.5, epochs=1, train_size=512, eval_size=500, seed=0)


def canvas_with(ink: np.ndarray) -> np.ndarray:
    """A 280x280 RGBA canvas holding a 28x28 ink image scaled up 10x (white on black)."""
    gray = np.kron(np.round(ink * 255).astype(np.uint8), np.ones((10, 10), dtype=np.uint8))
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., :3] = gray[..., None]
    rgba[..., 3] = 255
    return rgba


@pytest.fixture
def pair_store(tmp_path, monkeypatch, make_app_manager):
    """A run store holding an untrained p = 0 model and, newer, its p = 0.5 twin (same
    settings but p): fast to make, and the probe's and Inside's work is the same."""
    make_app_manager()
    runs = RunStore(tmp_path / "runs")
    saved = {}
    for p in (0.0, 0.5):
        model = SimpleCNN(p, generator=torch.Generator().manual_seed(1))
        saved[p] = runs.save(BASE.replace(p=p), [], model, name=f"tiny p={p}")
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(runs.root))
    state.store.clear()
    draw._stored_model.clear()
    yield saved
    state.store.clear()
    draw._stored_model.clear()


def draw_app(monkeypatch, ink: np.ndarray) -> AppTest:
    image = canvas_with(ink)
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    at = AppTest.from_string(DRAW_SCRIPT, default_timeout=60)
    at.session_state["dropout_lab_owner"] = OWNER
    return at


def probe_readings(at: AppTest) -> list[str]:
    return [md.value for md in at.markdown if "the prediction" in md.value]


def test_draw_page_probe_shows_the_selected_model_beside_a_p0_model(pair_store, monkeypatch):
    at = draw_app(monkeypatch, probe_image("one")).run()
    assert not at.exception
    assert at.selectbox(key="draw_model").value == f"run:{pair_store[0.5].id}"
    assert any(h.proto.anchor == "probe" for h in at.subheader)
    source = at.selectbox(key="probe_source")
    assert source.value == "drawing"
    assert source.options[0] == "Your drawing" and len(source.options) == 5
    assert at.selectbox(key="probe_transform").value == "rotate"

    readings = probe_readings(at)
    assert len(readings) == 2
    assert "p = 0: every pass is the same network" not in readings[0]
    assert "p = 0: every pass is the same network" in readings[1]
    charts = {c.proto.id: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    probs = [spec for spec in charts.values() if "Top digits" in json.dumps(spec["layout"])]
    assert len(probs) == 2
    bands = [sum(t.get("fill") == "toself" for t in spec["data"]) for spec in probs]
    assert bands == [3, 0]  # the p = 0.5 model's ±std bands; the p = 0 model has none
    summaries = [c.value for c in at.caption if c.value.startswith("Rotate from 0° to 180°")]
    assert len(summaries) == 2
    assert len(at.get("plotly_chart")) == 3 + 4  # the page's three, the probe's two per model


def test_built_in_probe_and_another_transform(pair_store, monkeypatch):
    at = draw_app(monkeypatch, probe_image("one")).run()
    at.selectbox(key="probe_source").set_value("letter").run()
    at.selectbox(key="probe_transform").set_value("blur").run()
    assert not at.exception
    summaries = [c.value for c in at.caption if c.value.startswith("Blur from 0.0 px to 3.0 px")]
    assert len(summaries) == 2
    assert len(probe_readings(at)) == 2


def test_the_probe_is_there_before_anything_is_drawn(pair_store, monkeypatch):
    at = draw_app(monkeypatch, np.zeros((28, 28))).run()
    assert not at.exception
    assert any("Draw a digit" in i.value for i in at.info)
    source = at.selectbox(key="probe_source")
    assert "Your drawing" not in source.options  # nothing drawn: the built-in images only
    assert source.value != "drawing"
    assert len(probe_readings(at)) == 2  # the p = 0.5 model and its p = 0 twin
    assert len(at.get("plotly_chart")) == 4  # the probe's two per model, nothing else


def test_partner_and_default_pair_prefer_one_comparison():
    def choice(key, p, seed=0, size=512):
        return ModelChoice(key, key, p, BASE.replace(p=p, seed=seed, train_size=size))

    newest_zero = choice("z-other", 0.0, seed=9)
    twin_zero = choice("z-twin", 0.0)
    half = choice("half", 0.5)
    other = choice("p3", 0.3, seed=5)
    choices = [other, newest_zero, half, twin_zero]
    assert partner_for(choices, half) == twin_zero  # same settings but p beats the newer one
    assert partner_for(choices, other) == newest_zero  # no twin: the newest p = 0 model
    assert partner_for(choices, newest_zero) == half  # a p = 0 model gets a p = 0.5 one
    assert partner_for([half], half) is None
    assert default_pair(choices) == (3, 2)  # the twins p = 0 and p = 0.5
    assert default_pair([other, half]) == (0, 1)
    assert default_pair([half]) == (0, 0)


def test_inside_page_compares_p0_and_p05_features(pair_store, mnist):
    at = AppTest.from_string(INSIDE_SCRIPT, default_timeout=60)
    at.session_state["dropout_lab_owner"] = OWNER
    at.run()
    assert not at.exception
    assert at.selectbox(key="inside_model_a").value == f"run:{pair_store[0.0].id}"
    assert at.selectbox(key="inside_model_b").value == f"run:{pair_store[0.5].id}"
    labels = [m.label for m in at.metric]
    assert labels == ["Mean activation", "Zero activations", "Silent units"] * 2
    assert [m.value for m in at.markdown if m.value.startswith("**A: ")] == ["**A: p = 0**"]
    assert [m.value for m in at.markdown if m.value.startswith("**B: ")] == ["**B: p = 0.5**"]
    zeros = float(at.metric[1].value.rstrip("%"))
    assert 0.0 < zeros < 100.0
    assert len(at.get("plotly_chart")) == 4  # two filter grids, histogram, unit means
    assert sum("test images, mean fc1 activation" in c.value for c in at.caption) == 2


def test_inside_page_without_mnist_says_so_and_still_shows_filters(
    pair_store, tmp_path, monkeypatch
):
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    monkeypatch.setenv("DROPOUT_DEMO_DATA", str(empty))
    at = AppTest.from_string(INSIDE_SCRIPT, default_timeout=60)
    at.session_state["dropout_lab_owner"] = OWNER
    at.run()
    assert not at.exception
    assert any("MNIST" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 2  # the filters need no data
    assert len(at.metric) == 0


def test_inside_page_with_no_model_asks_for_one(tmp_path, monkeypatch, make_app_manager):
    make_app_manager()
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(tmp_path / "empty-store"))
    state.store.clear()
    at = AppTest.from_string(INSIDE_SCRIPT, default_timeout=60)
    at.session_state["dropout_lab_owner"] = OWNER
    at.run()
    assert not at.exception
    assert any("No finished model yet" in i.value for i in at.info)
    state.store.clear()
