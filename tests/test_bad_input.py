"""A bad-input sweep of the UI in Streamlit's AppTest: every Custom field of the Lab at its
extremes and with garbage, the Monte-Carlo T slider at and past its ends, and canvas images
that are blank, tiny, full, huge, transparent, of the wrong dtype or shape, or NaN.

Each case: no exception element on the page, a readable message (an error, a warning, an info
box, or the "Next run" line showing what will run), and nothing lost (the run already in the
Lab's table, the saved model in the Draw page's picker).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dropout_demo.config import TrainConfig
from dropout_demo.model import SimpleCNN
from dropout_demo.runs import RunStore
from dropout_demo.ui import draw, state

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DRAW_SCRIPT = "from dropout_demo.ui.draw import draw_view\ndraw_view()\n"
TIMEOUT = 60
SIZE = 280

# ------------------------------------------------------------------------------------ Lab
REFUSED = "refused"  # an error names the problem; nothing new is queued
# Streamlit refuses the value itself (a browser clamps it before sending): the field falls back
# to its lowest value (its min, else 0), and the page then says what that means: a readable
# refusal (0 images, 0 epochs) or the "Next run" line showing the value that stands.
FALLBACK = "fallback"
ACCEPTED = "accepted"  # a valid extreme: "Next run" says what would run

# (widget kind, key, value, expectation, words the error must contain)
LAB_CASES = [
    ("number_input", "lab_train_size", 0, REFUSED, "train_size"),
    ("number_input", "lab_train_size", -1, REFUSED, "train_size"),
    ("number_input", "lab_train_size", 10**9, REFUSED, "train_size"),
    ("number_input", "lab_train_size", 60_000, ACCEPTED, "60,000 imgs"),
    ("number_input", "lab_train_size", 2**70, REFUSED, "train_size"),
    ("number_input", "lab_epochs", 0, REFUSED, "epochs"),
    ("number_input", "lab_epochs", -3, REFUSED, "epochs"),
    ("number_input", "lab_epochs", 10**6, REFUSED, "epoch"),
    ("number_input", "lab_epochs", 2**70, REFUSED, "epochs"),
    ("text_input", "lab_lr", "abc", REFUSED, "learning rate"),
    ("text_input", "lab_lr", "", REFUSED, "learning rate"),
    ("text_input", "lab_lr", "nan", REFUSED, "lr"),
    ("text_input", "lab_lr", "inf", REFUSED, "lr"),
    ("text_input", "lab_lr", "-inf", REFUSED, "lr"),
    ("text_input", "lab_lr", "-1", REFUSED, "lr"),
    ("text_input", "lab_lr", "0", REFUSED, "lr"),
    ("text_input", "lab_lr", "1e309", REFUSED, "lr"),
    ("text_input", "lab_lr", "1e-400", REFUSED, "lr"),
    ("text_input", "lab_lr", "1" * 10_000, REFUSED, "lr"),
    ("text_input", "lab_lr", "0x10", REFUSED, "learning rate"),
    ("text_input", "lab_lr", " 0.01 ", ACCEPTED, "lr 0.01"),
    ("number_input", "lab_batch", 0, FALLBACK, "batch 1"),
    ("number_input", "lab_batch", 10**6, FALLBACK, "batch 1"),
    ("number_input", "lab_batch", 1_024, ACCEPTED, "batch 1024"),
    ("number_input", "lab_seed", -1, REFUSED, "seed"),
    ("number_input", "lab_seed", 10**12, ACCEPTED, "Next run"),
    ("number_input", "lab_seed", 2**53 - 1, ACCEPTED, "Next run"),  # the largest the widget takes
    ("number_input", "lab_seed", 2**70, FALLBACK, "Next run"),
]


def _case_id(case) -> str:
    _, key, value, expect, _ = case
    shown = repr(value) if len(repr(value)) < 20 else f"{repr(value)[:12]}…"
    return f"{key}={shown}-{expect}"


def wait_until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def run_rows(at: AppTest) -> list[str]:
    """The keys of the runs table's per-run Stop/Remove buttons: one per run shown."""
    return sorted(
        b.key for b in at.button if b.key and b.key.startswith(("lab_remove_", "lab_stop_"))
    )


def messages(at: AppTest) -> str:
    parts = [e.value for e in (*at.error, *at.warning, *at.info, *at.caption)]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def lab_owner(mnist, tmp_path_factory):
    """A session owner with one finished Tiny run in its table (trained through the page)."""
    saved = {k: os.environ.get(k) for k in ("DROPOUT_DEMO_TEST_PRESETS", "DROPOUT_DEMO_RUNS")}
    os.environ["DROPOUT_DEMO_TEST_PRESETS"] = "1"
    os.environ["DROPOUT_DEMO_RUNS"] = str(tmp_path_factory.mktemp("bad_input_runs"))
    state.store.clear()
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        assert not at.exception, at.exception
        at.radio(key="lab_preset").set_value("Tiny (test)").run()
        at.button(key="lab_start").click().run()
        assert not at.exception, at.exception
        owner = at.session_state["dropout_lab_owner"]

        def finished() -> bool:
            at.run()
            return bool(run_rows(at)) and all(k.startswith("lab_remove_") for k in run_rows(at))

        wait_until(finished, timeout=180)
        yield owner, run_rows(at)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        state.store.clear()


def open_lab_as(owner: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["dropout_lab_owner"] = owner
    return at.run()


@pytest.mark.parametrize("case", LAB_CASES, ids=[_case_id(c) for c in LAB_CASES])
def test_lab_custom_field_extremes_and_garbage(lab_owner, case):
    owner, rows_before = lab_owner
    kind, key, value, expect, words = case
    at = open_lab_as(owner)
    assert not at.exception, at.exception
    assert run_rows(at) == rows_before  # the finished run is in the table
    at.radio(key="lab_preset").set_value("Custom").run()
    widget = getattr(at, kind)(key=key)
    (widget.input(value) if kind == "text_input" else widget.set_value(value)).run()
    assert not at.exception, at.exception
    start = at.button(key="lab_start")

    if expect == REFUSED:
        if not start.disabled:  # the settings passed the form: the server must refuse them
            start.click().run()
            assert not at.exception, at.exception
        errors = "\n".join(e.value for e in at.error)
        assert words in errors, f"no readable refusal mentioning {words!r}: {messages(at)!r}"
    else:
        assert not at.error, [e.value for e in at.error]
        assert words in messages(at), messages(at)
        assert not start.disabled
    assert run_rows(at) == rows_before  # nothing lost, nothing new queued


# ------------------------------------------------------------------------------------ Draw
def canvas_of(ink: np.ndarray) -> np.ndarray:
    """A white-on-black opaque RGBA canvas with ``ink`` (0..255, SIZE x SIZE) drawn on it."""
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = ink[..., None]
    rgba[..., 3] = 255
    return rgba


def seven() -> np.ndarray:
    ink = np.zeros((SIZE, SIZE), np.uint8)
    ink[60:80, 70:210] = 255  # the bar
    for y in range(80, 230):  # the stroke down and to the left
        x = int(190 - (y - 80) * 0.5)
        ink[y, x - 10 : x + 10] = 255
    return ink


def one_pixel() -> np.ndarray:
    ink = np.zeros((SIZE, SIZE), np.uint8)
    ink[140, 140] = 255
    return ink


def broadcast(shape, value=0, dtype=np.uint8) -> np.ndarray:
    return np.broadcast_to(np.array(value, dtype=dtype), shape)


DIGIT = canvas_of(seven())
CANVAS_CASES = {
    "nothing drawn yet (None)": None,
    "blank": canvas_of(np.zeros((SIZE, SIZE), np.uint8)),
    "one pixel": canvas_of(one_pixel()),
    "full": canvas_of(np.full((SIZE, SIZE), 255, np.uint8)),
    "transparent": np.zeros((SIZE, SIZE, 4), np.uint8),
    "transparent ink": np.dstack([DIGIT[..., :3], np.zeros((SIZE, SIZE), np.uint8)]),
    "huge 10000x10000": broadcast((10_000, 10_000, 4), 255),
    "huge 10000x10000 blank": broadcast((10_000, 10_000, 4), 0),
    "1x1 image": np.full((1, 1, 4), 255, np.uint8),
    "0x0 image": np.zeros((0, 0, 4), np.uint8),
    "float 0..1": DIGIT.astype(np.float32) / 255,
    "float 0..255": DIGIT.astype(np.float64),
    "float out of range": DIGIT.astype(np.float32) * 10,
    "int64": DIGIT.astype(np.int64),
    "int64 negative": -DIGIT.astype(np.int64),
    "bool": DIGIT > 0,
    "NaN": np.where(DIGIT > 0, np.nan, 0.0),
    "all NaN": np.full((SIZE, SIZE, 4), np.nan),
    "inf": np.full((SIZE, SIZE, 4), np.inf, np.float32),
    "RGB (3 channels)": DIGIT[..., :3],
    "grey (2-D)": DIGIT[..., 0],
    "grey + alpha (2 channels)": DIGIT[..., [0, 3]],
    "5 channels": np.zeros((SIZE, SIZE, 5), np.uint8),
    "channels first": np.moveaxis(DIGIT, -1, 0),
    "1-D": DIGIT.ravel(),
    "4-D batch": DIGIT[None],
    "a scalar": np.uint8(255),
    "complex": DIGIT.astype(np.complex64),
    "strings": np.full((SIZE, SIZE), "ink"),
    "a list of lists": DIGIT[..., 0].tolist(),
    "a ragged list": [[0, 255], [255]],
}


@pytest.fixture
def draw_app(tmp_path, monkeypatch):
    """The Draw view with one saved (untrained) model in its own store."""
    store = RunStore(tmp_path / "runs")
    config = TrainConfig(p=0.5, train_size=256, epochs=1, eval_size=500)
    record = store.save(config, [], SimpleCNN(p=0.5).eval(), name="fuzz model")
    monkeypatch.setenv("DROPOUT_DEMO_RUNS", str(store.root))
    state.store.clear()
    draw._stored_model.clear()
    at = AppTest.from_string(DRAW_SCRIPT, default_timeout=TIMEOUT)
    at.session_state["dropout_lab_owner"] = "test-bad-input-draw"
    yield at, record
    state.store.clear()
    draw._stored_model.clear()


def shows_answer(at: AppTest) -> bool:
    return any("predicted digit" in md.value for md in at.markdown)


def assert_draw_page_sound(at: AppTest, record) -> None:
    assert not at.exception, at.exception
    picker = at.selectbox(key="draw_model")
    assert picker.value == f"run:{record.id}"  # the saved model is still offered and picked


@pytest.mark.parametrize("name", list(CANVAS_CASES))
def test_draw_canvas_images(draw_app, monkeypatch, name):
    at, record = draw_app
    image = CANVAS_CASES[name]
    monkeypatch.setattr(draw, "canvas_image", lambda key: image)
    at.run()
    assert_draw_page_sound(at, record)
    if not shows_answer(at):
        text = "\n".join(x.value for x in (*at.info, *at.warning, *at.error))
        assert text.strip(), "neither an answer nor a message"
        assert "Traceback" not in text


@pytest.mark.parametrize("samples", [1, 200, 0, 201, -1, 10**7])
def test_draw_mc_samples_slider_at_and_past_its_ends(draw_app, monkeypatch, samples):
    """1 and 200 are the ends; past them is what a scripted client could send."""
    at, record = draw_app
    monkeypatch.setattr(draw, "canvas_image", lambda key: DIGIT)
    at.run()
    assert_draw_page_sound(at, record)
    at.slider(key="draw_samples").set_value(samples).run()
    assert_draw_page_sound(at, record)
    value = at.slider(key="draw_samples").value
    assert 1 <= value <= 200
    assert value == samples or not 1 <= samples <= 200
    assert any(f"of {value} passes agree" in md.value for md in at.markdown)
