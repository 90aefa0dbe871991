"""AppTest checks of the Draw view (injected canvas images) and the Learn page."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import torch
from apptest_helpers import wait_until
from streamlit.testing.v1 import AppTest

from dropout_demo.canvas import preprocess
from dropout_demo.config import TrainConfig
from dropout_demo.inference import predict
from dropout_demo.model import model_from_checkpoint
from dropout_demo.runs import RunStore
from dropout_demo.training import fit
from dropout_demo.ui import draw, state
from dropout_demo.ui.learn import SECTIONS, apply_inverted_dropout, expected_output

DRAW_SCRIPT = "from dropout_demo.ui.draw import draw_view\ndraw_view()\n"
LEARN_SCRIPT = "from dropout_demo.ui.learn import learn_view\nlearn_view()\n"
OWNER = "test-draw-owner"
TINY = TrainConfig(p=0.5, epochs=1, train_size=512, eval_size=500, seed=0)


def canvas_with(digit: np.ndarray) -> np.ndarray:
    """A 280x280 RGBA canvas image holding a 28x28 MNIST digit scaled up 10x (white on black)."""
    gray = np.kron(digit.astype(np.uint8), np.ones((10, 10), dtype=np.uint8))
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., :3] = gray[..., None]
    rgba[..., 3] = 255
    return rgba


def empty_canvas() -> np.ndarray:
    rgba = np.zeros((280, 280, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    return rgba


@pytest.fixture(scope="module")
def tiny_run(mnist, tmp_path_factory):
    """A tiny trained model saved in its own run store: (store root, record, model)."""
    result = fit(TINY, mnist)
    root = tmp_path_factory.mktemp("draw_runs")
    record = RunStore(root).save(TINY, result.metrics, result.model, name="tiny for tests")
    return root, record, result.model


@pytest.fixture
def app(tiny_run, monkeypatch):
    """The Draw view with the tiny run in the store and a fixed session owner."""
    root, _, _ = tiny_run
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(root))
    state.store.clear()  # the cached store would still point at another test's directory
    at = AppTest.from_string(DRAW_SCRIPT, default_timeout=30)
    at.session_state["dropout_lab_owner"] = OWNER
    yield at
    state.store.clear()


def big_digits(at: AppTest) -> list[int]:
    """The large predicted digits the eval panels show."""
    found = []
    for md in at.markdown:
        if "font-size:4.5rem" in md.value:
            found.append(int(md.value.split(">", 1)[1][0]))
    return found


def test_drawn_digit_gets_prediction_and_mc_panel(app, tiny_run, mnist, monkeypatch):
    _, _, model = tiny_run
    image = canvas_with(mnist.test_images[0].numpy())
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    app.run()
    assert not app.exception

    expected = int(predict(model, preprocess(image).tensor)[0].argmax())
    assert big_digits(app) == [expected]
    slider = app.slider(key="draw_samples")
    assert (slider.value, slider.min, slider.max) == (50, 1, 200)
    assert [m.label for m in app.metric] == ["Predictive entropy", "Mutual information"]
    entropy = float(app.metric[0].value.split()[0])
    assert 0.0 <= entropy <= np.log(10) + 1e-3
    assert any("of 50 passes agree" in md.value for md in app.markdown)
    # Eval bars, MC mean ± std, votes (the uncertainty probe below has charts of its own).
    assert [c.key for c in app.get("plotly_chart") if not c.key.startswith("probe_")] == [
        "draw_eval_0",
        "draw_mc_mean_0",
        "draw_mc_votes_0",
    ]

    slider.set_value(7).run()
    assert any("of 7 passes agree" in md.value for md in app.markdown)
    assert not app.exception


def test_empty_canvas_prompts_to_draw(app, monkeypatch):
    for image in (None, empty_canvas()):
        monkeypatch.setattr(draw, "canvas_image", lambda key, image=image: image)
        app.run()
        assert not app.exception
        assert not app.error
        assert any("Draw a digit" in info.value for info in app.info)
        assert big_digits(app) == []
        assert len(app.metric) == 0


def test_one_stochastic_pass_shows_mask_and_scale(app, mnist, monkeypatch):
    image = canvas_with(mnist.test_images[1].numpy())
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    app.run()
    assert not any("Prediction of this pass" in md.value for md in app.markdown)
    app.button(key="draw_one_pass").click().run()
    assert not app.exception
    line = next(md.value for md in app.markdown if "Prediction of this pass" in md.value)
    assert "×2.00" in line  # p = 0.5: kept units are doubled
    chart = next(c for c in app.get("plotly_chart") if c.key == "draw_mask_pass_0")
    mask = json.loads(chart.proto.spec)["data"][0]
    z = np.array(mask["z"])
    assert z.shape == (8, 16)
    dropped = int((z == 0).sum())
    assert f"{dropped} of 128 fc1 units dropped" in line
    assert 20 < dropped < 108  # about half of 128 at p = 0.5


def test_session_run_is_offered_and_compared_with_stored_run(app, mnist, monkeypatch):
    from dropout_demo.jobs import get_manager

    manager = get_manager()
    job = manager.submit(TINY.replace(p=0.0, seed=1), OWNER)
    deadline = time.monotonic() + 60
    while not manager.get(job, OWNER).is_terminal:
        assert time.monotonic() < deadline, "tiny session run did not finish in 60 s"
        time.sleep(0.1)
    assert manager.get(job, OWNER).status == "done"

    image = canvas_with(mnist.test_images[2].numpy())
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    app.run()
    picker = app.selectbox(key="draw_model")
    assert picker.value == f"job:{job}"  # this session's newest run comes first
    assert len(picker.options) == 2
    assert "This session" in picker.options[0] and "Saved" in picker.options[1]

    app.toggle(key="draw_compare").set_value(True).run()
    assert not app.exception
    other = app.selectbox(key="draw_model_other")
    assert other.value.startswith("run:")  # the p = 0.5 run, next to the p = 0 one
    assert len(big_digits(app)) == 2
    assert [m.label for m in app.metric].count("Mutual information") == 2
    # The p = 0 model's passes never disagree: zero mutual information.
    assert app.metric[1].value == "0.000 nats"
    manager.remove(job, OWNER)


def test_starter_model_is_trained_when_nothing_else_exists(mnist, tmp_path, monkeypatch):
    from dropout_demo import starter
    from dropout_demo.jobs import get_manager

    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(tmp_path))
    monkeypatch.setenv(starter.CONFIG_ENV, "train_size=256,epochs=1,eval_size=500")
    starter._reset_for_tests()
    state.store.clear()
    image = canvas_with(mnist.test_images[3].numpy())
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    at = AppTest.from_string(DRAW_SCRIPT, default_timeout=30)
    at.session_state["dropout_lab_owner"] = "test-starter-owner"
    try:
        at.run()
        assert not at.exception
        assert any("starter model" in info.value for info in at.info)
        assert big_digits(at) == []
        deadline = time.monotonic() + 90
        while not starter.ensure_default_model(state.store(), get_manager()).ready:
            assert time.monotonic() < deadline, "the starter model was not ready in 90 s"
            time.sleep(0.2)
        at.run()
        assert not at.exception
        picker = at.selectbox(key="draw_model")
        assert picker.value.startswith("run:") and "Starter model" in picker.options[0]
        assert len(big_digits(at)) == 1
    finally:
        starter._reset_for_tests()
        state.store.clear()


def test_learn_page_runs_and_figure_follows_the_slider():
    at = AppTest.from_string(LEARN_SCRIPT, default_timeout=30).run()
    assert not at.exception
    assert [h.proto.anchor for h in at.header] == list(SECTIONS)

    def numbers():
        return {m.label: float(m.value) for m in at.metric}

    def after_trace():
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        return spec["data"][1]["y"]

    seen = {}
    for p in (0.2, 0.8):
        at.slider(key="learn_p").set_value(p).run()
        assert not at.exception
        n = numbers()
        before = n["Mean before"]
        assert n["E[output], 20,000 masks"] == pytest.approx(before, abs=0.03)
        assert n["E[output] without scaling"] == pytest.approx((1 - p) * before, abs=1e-3)
        seen[p] = after_trace()
    assert seen[0.2] != seen[0.8]
    kept_values = [v for v in seen[0.8] if v > 0]
    assert kept_values and max(kept_values) > max(seen[0.2])  # ×5 at p = 0.8 vs ×1.25

    at.button(key="learn_new_mask").click().run()
    assert after_trace() != seen[0.8]


def test_inverted_dropout_keeps_the_expectation():
    a = np.array([0.0, 0.5, 1.0, 2.0])
    kept = np.array([True, False, True, True])
    assert apply_inverted_dropout(a, kept, 0.5).tolist() == [0.0, 0.0, 2.0, 4.0]
    assert expected_output(a, 0.75, masks=200_000) == pytest.approx(a, abs=0.05)


@pytest.fixture
def two_run_store(tiny_run, tmp_path, monkeypatch):
    """A store of this test's own with two copies of the tiny run (the newest is picked)."""
    _, record, model = tiny_run
    runs = RunStore(tmp_path / "runs")
    older = runs.save(record.config, record.metrics, model, name="older copy")
    newer = runs.save(record.config.replace(seed=1), record.metrics, model, name="newer copy")
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(runs.root))
    state.store.clear()
    draw._stored_model.clear()
    yield runs, older, newer
    state.store.clear()
    draw._stored_model.clear()


@pytest.fixture
def deferred_downloads(monkeypatch):
    """The callables behind download buttons, as Streamlit registers them (by button key)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    found = {}
    real = MediaFileManager.add_deferred

    def add_deferred(self, callable_, mimetype, coordinates, *args, **kwargs):
        found[kwargs.get("file_name")] = callable_
        return real(self, callable_, mimetype, coordinates, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return found


def test_weights_download_of_a_run_pruned_after_the_page_was_drawn(
    two_run_store, deferred_downloads, mnist, monkeypatch
):
    runs, older, newer = two_run_store
    image = canvas_with(mnist.test_images[4].numpy())
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    at = AppTest.from_string(DRAW_SCRIPT, default_timeout=30)
    at.session_state["dropout_lab_owner"] = OWNER
    at.run()
    assert not at.exception
    assert at.selectbox(key="draw_model").value == f"run:{newer.id}"
    assert len(at.get("download_button")) == 1
    (name,) = deferred_downloads
    assert name.endswith(".pt") and "seed1" in name
    build = deferred_downloads[name]
    assert build() == runs.weights_bytes(newer.id)  # while it exists: the stored file itself

    expected = predict(runs.load_model(newer.id), preprocess(image).tensor)
    assert runs.delete(newer.id)  # pruned by another visitor's save, before the click
    data = build()  # the click: no exception, and still this model's weights
    ckpt = torch.load(io.BytesIO(data), weights_only=True)
    model, config = model_from_checkpoint(ckpt)
    assert config == newer.config
    assert torch.equal(predict(model, preprocess(image).tensor), expected)

    at.run()  # the next rerun: the picker moves on and says why; nothing breaks
    assert not at.exception
    assert at.selectbox(key="draw_model").value == f"run:{older.id}"
    assert any("has left the run store" in i.value for i in at.info)
    assert len(big_digits(at)) == 1


# ---------------------------------------------------------------- links
def open_draw(query: dict[str, str] | None = None, owner: str = OWNER) -> AppTest:
    at = AppTest.from_string(DRAW_SCRIPT, default_timeout=30)
    at.session_state["dropout_lab_owner"] = owner
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def url(at: AppTest) -> dict[str, str]:
    return {k: (v[-1] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def test_a_draw_link_restores_the_picked_models_and_picks_go_back_into_the_url(
    two_run_store, monkeypatch
):
    _, older, newer = two_run_store
    monkeypatch.setattr(draw, "canvas_image", lambda key: None)
    plain = open_draw()
    assert plain.selectbox(key="draw_model").value == f"run:{newer.id}"
    assert url(plain) == {"model": newer.id}  # a plain visit gets a link too

    at = open_draw({"model": older.id, "class": "ABCDE"})
    assert not at.warning
    assert at.selectbox(key="draw_model").value == f"run:{older.id}"
    assert not at.toggle(key="draw_compare").value
    assert url(at) == {"model": older.id, "class": "ABCDE"}  # the class code stays

    at.toggle(key="draw_compare").set_value(True).run()
    assert url(at) == {"model": older.id, "compare": newer.id, "class": "ABCDE"}
    at.selectbox(key="draw_model").set_value(f"run:{newer.id}").run()
    assert url(at)["model"] == newer.id and url(at)["compare"] == older.id

    again = open_draw(url(at), owner="another-visitor")
    assert again.toggle(key="draw_compare").value
    assert again.selectbox(key="draw_model").value == f"run:{newer.id}"
    assert again.selectbox(key="draw_model_other").value == f"run:{older.id}"


@pytest.mark.parametrize("query", [{"model": "nope"}, {"model": "job:x" * 500, "compare": ""}])
def test_a_draw_link_to_a_model_not_here_gives_a_message_and_the_default(
    two_run_store, monkeypatch, query
):
    _, _, newer = two_run_store
    monkeypatch.setattr(draw, "canvas_image", lambda key: None)
    at = open_draw({**query, "present": "1"})
    assert at.warning and all("isn't here" in w.value for w in at.warning)
    assert all(len(w.value) < 300 for w in at.warning)
    assert at.selectbox(key="draw_model").value == f"run:{newer.id}"
    assert url(at) == {"model": newer.id, "present": "1"}  # the URL now names what is shown
    at.run()
    assert not at.warning  # said once


def test_a_draw_link_to_a_sessions_run_names_its_stored_copy(
    two_run_store, make_app_manager, mnist, monkeypatch
):
    runs, _, _ = two_run_store
    manager = make_app_manager(data_provider=lambda: mnist, store=RunStore(runs.root))
    job = manager.submit(TINY.replace(p=0.0, seed=3), OWNER)
    wait_until(lambda: manager.get(job, OWNER).saved_run_id is not None)
    saved = manager.get(job, OWNER).saved_run_id
    monkeypatch.setattr(draw, "canvas_image", lambda key: None)
    at = open_draw()
    assert at.selectbox(key="draw_model").value == f"job:{job}"  # this session's own run
    assert url(at) == {"model": saved}  # ...linked by the id anyone can open
    other = open_draw(url(at), owner="another-visitor")
    assert not other.warning
    assert other.selectbox(key="draw_model").value == f"run:{saved}"
    back = open_draw(url(at))  # the owner opening her own link gets her run again
    assert back.selectbox(key="draw_model").value == f"job:{job}"
