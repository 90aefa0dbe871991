"""Shareable links, without streamlit: the Lab's settings and Draw's model choice to query
parameters and back; bad values give readable problems and defaults, never an exception."""

from __future__ import annotations

import pytest

from dropout_demo import links
from dropout_demo.config import PRESETS
from dropout_demo.links import LabSettings, lab_from_query, lab_settings

CUSTOM = PRESETS["Overfitting lab"].replace(
    p=0.15, train_size=2_500, epochs=12, lr=0.00123456789, batch_size=100, seed=7
)


@pytest.mark.parametrize(
    "settings",
    [
        LabSettings(),
        lab_settings("seed", 0.0),
        lab_settings("overfit", 0.15),  # the slider's 0.15000000000000002, rounded
        lab_settings("tiny", 0.9),
        lab_settings("custom", 0.15, CUSTOM),
        # the Custom fields start from the Overfitting lab (links.CUSTOM_BASE), whose
        # per-epoch subset a link does not need to carry
        lab_settings(
            "custom", 0.05, links.CUSTOM_BASE.replace(lr=0.1, train_size=60_000, batch_size=1_024)
        ),
    ],
)
def test_lab_settings_round_trip_through_a_link(settings):
    query = settings.to_query()
    assert all(isinstance(v, str) for v in query.values())
    assert lab_from_query(query) == (settings, [])


def test_a_lab_link_is_short_and_readable():
    assert lab_settings("seed", 0.5).to_query() == {"preset": "seed", "p": "0.5"}
    assert lab_settings("custom", 0.15, CUSTOM).to_query() == {
        "preset": "custom",
        "p": "0.15",
        "train_size": "2500",
        "epochs": "12",
        "lr": "0.00123456789",
        "batch_size": "100",
        "seed": "7",
    }


def test_missing_values_take_the_labs_defaults_and_other_keys_are_ignored():
    assert lab_from_query({}) == (LabSettings(), [])
    assert LabSettings().config == PRESETS["Overfitting lab"].replace(p=0.5)
    settings, problems = lab_from_query({"class": "ABCDE", "present": "1", "p": "0.2"})
    assert (settings, problems) == (lab_settings("overfit", 0.2), [])
    # Custom fields alone mean Custom; the rest keep the Custom base's values.
    settings, problems = lab_from_query({"epochs": "12"})
    assert problems == []
    assert settings == LabSettings("custom", PRESETS["Overfitting lab"].replace(epochs=12))
    # A repeated key: the last value counts, as st.query_params.get gives it.
    assert lab_from_query({"p": ["0.1", "0.3"]})[0].config.p == 0.3
    assert lab_from_query({"preset": " Seed "})[0].preset == "seed"


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"p": "banana"}, "p: 'banana' is not a number"),
        ({"p": ""}, "p: '' is not a number"),
        ({"p": "nan"}, "is not on the slider"),
        ({"p": "inf"}, "is not on the slider"),
        ({"p": "0.95"}, "p: '0.95' is not on the slider (0 to 0.9 in steps of 0.05)"),
        ({"p": "0.33"}, "is not on the slider"),
        ({"p": "-0.05"}, "is not on the slider"),
        ({"preset": "turbo"}, "preset: 'turbo' is not one of overfit, seed, tiny, custom"),
        ({"preset": "custom", "epochs": "0"}, "epochs must be an integer >= 1, got 0"),
        ({"preset": "custom", "epochs": "2.5"}, "epochs: '2.5' is not a whole number"),
        ({"preset": "custom", "train_size": "1e3"}, "train_size: '1e3' is not a whole number"),
        ({"preset": "custom", "train_size": "70000"}, "train_size must be an integer in 1..60000"),
        ({"preset": "custom", "lr": "fast"}, "lr: 'fast' is not a number"),
        ({"preset": "custom", "lr": "-1"}, "lr must be a finite number > 0"),
        ({"preset": "custom", "lr": "inf"}, "lr must be a finite number > 0"),
        ({"preset": "custom", "batch_size": "5000"}, "more than the Lab's 1,024"),
        ({"preset": "custom", "seed": "-3"}, "seed must be an integer >= 0"),
        ({"preset": "seed", "epochs": "3"}, "epochs: only preset=custom takes its own fields"),
    ],
)
def test_a_bad_value_is_named_and_replaced_by_its_default(query, says):
    settings, problems = lab_from_query(query)
    assert len(problems) == 1 and says in problems[0], problems
    default = LabSettings()
    if query.get("preset") == "seed":
        default = lab_settings("seed", 0.5)
    elif query.get("preset") == "custom":
        default = LabSettings("custom", default.config)
    assert settings == default


def test_good_values_survive_beside_bad_ones():
    settings, problems = lab_from_query(
        {"preset": "custom", "p": "0.3", "epochs": "zero", "lr": "0.01", "seed": "-1"}
    )
    assert [p.split(":")[0] for p in problems] == ["epochs", "seed must be an integer >= 0, got -1"]
    assert settings == LabSettings("custom", PRESETS["Overfitting lab"].replace(p=0.3, lr=0.01))


def test_a_long_garbage_value_is_quoted_short():
    settings, problems = lab_from_query({"p": "x" * 5_000, "preset": "<script>" * 100})
    assert settings == LabSettings()
    assert len(problems) == 2
    assert all(len(p) < 200 for p in problems)
    assert "…" in problems[0]


# ---------------------------------------------------------------------------- Draw
KEYS = ["job:j1", "job:j2", "run:20250101-000000-000001-aaaa", "run:r2"]
SAVED = {"j1": "20250102-000000-000001-bbbb"}  # this session's job j1 was saved under that id


@pytest.mark.parametrize("key", KEYS)
def test_a_draw_link_names_the_picked_model_and_finds_it_again(key):
    param = links.model_param(key, SAVED)
    assert links.choice_for(param, KEYS, SAVED) == key


def test_a_draw_link_prefers_the_stored_run_id_that_others_can_open():
    assert links.model_param("job:j1", SAVED) == "20250102-000000-000001-bbbb"
    assert links.model_param("job:j2", SAVED) == "job:j2"  # never saved: this session only
    assert links.model_param("run:r2", SAVED) == "r2"
    # Another visitor opening the link has the stored run, not the job.
    assert links.choice_for("20250102-000000-000001-bbbb", ["run:20250102-000000-000001-bbbb"], {})
    assert links.choice_for("job:j2", ["run:r2"], {}) is None


@pytest.mark.parametrize("param", ["", "   ", "nope", "job:", "run:r2", "job:zz", ["x", "nope"]])
def test_a_draw_link_to_an_unknown_model_finds_nothing(param):
    assert links.choice_for(param, KEYS, SAVED) is None


def test_a_missing_model_message_quotes_the_link_short():
    text = links.missing_model("z" * 1_000)
    assert "isn't here" in text and "Showing another model" in text
    assert len(text) < 300
