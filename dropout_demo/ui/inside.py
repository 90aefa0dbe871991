"""Inside — what dropout does to the features: fc1's activations and conv1's filters of two
finished models side by side (by default p = 0 against p = 0.5 of one comparison)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ..data import DataError, get_mnist
from ..feature_charts import (
    activation_histogram_figure,
    features_text_summary,
    filters_figure,
    filters_summary,
    histogram_summary,
    unit_means_figure,
    unit_means_summary,
)
from ..features import (
    FeatureSummary,
    fc1_activations,
    first_layer_filters,
    summarise,
    test_batch,
)
from .draw import FIG_CONFIG, ModelChoice, load_model, model_choices
from .probe_panel import partner_for, same_but_p
from .state import session_id

N_IMAGES = 1_000
_K_A = "inside_model_a"
_K_B = "inside_model_b"


def default_pair(choices: list[ModelChoice]) -> tuple[int, int]:
    """Indices of the two models shown first: a p = 0 model and its p = 0.5 partner (same
    settings but p) when there is such a pair, else the newest model and its partner (see
    :func:`partner_for`), else the two newest."""
    pairs = [(z, partner_for(choices, z)) for z in choices if z.p == 0]
    pairs = [(z, b) for z, b in pairs if b is not None]
    same = [(z, b) for z, b in pairs if same_but_p(z, b)]
    best = (same or pairs or [None])[0]
    if best is None and choices:
        partner = partner_for(choices, choices[0])
        best = (choices[0], partner) if partner is not None else None
    if best is None:
        return 0, min(1, len(choices) - 1)
    keys = [c.key for c in choices]
    return keys.index(best[0].key), keys.index(best[1].key)


@st.cache_data(max_entries=32, show_spinner=False)
def _summary(model_key: str, n: int, _model, _images) -> FeatureSummary:
    # A finished model's weights never change: its key and n name the result.
    return summarise(fc1_activations(_model, _images).astype(np.float32))


def _test_images(n: int):
    """n normalised test images, or None after saying why there are none."""
    try:
        data = get_mnist()  # loaded once per process
    except DataError as exc:
        st.warning(f"The activations need the MNIST test images, which are not here. {exc}")
        return None
    return test_batch(data.test_images, data.test_labels, n)


def _picker(choices: list[ModelChoice], key: str, label: str, default: int) -> str:
    keys = [c.key for c in choices]
    if st.session_state.get(key) not in keys:
        st.session_state[key] = keys[default]
    labels = {c.key: c.label for c in choices}
    return st.selectbox(label, keys, format_func=labels.__getitem__, key=key)


def _short(choice: ModelChoice, letter: str) -> str:
    return f"{letter}: p = {choice.p:g}"


def inside_view() -> None:
    owner = session_id()
    st.title("Inside — what dropout does to the features")
    st.caption(
        "With dropout, hidden units cannot count on each other being there, so each has to "
        "learn something useful on its own; in Srivastava et al. (2014) the features come out "
        "cleaner and the activations sparser, with no sparsity penalty. Compare two finished "
        "models here: fc1's 128 activations over the same test images, and conv1's 32 filters."
    )
    choices = model_choices(owner)
    if not choices:
        st.info(
            "No finished model yet. Train a pair in the Lab (a preset with Compare with p = 0), "
            "or open the Draw page, which trains a starter model."
        )
        return
    a, b = default_pair(choices)
    left, right = st.columns(2)
    with left:
        key_a = _picker(choices, _K_A, "Model A", a)
    with right:
        key_b = _picker(choices, _K_B, "Model B", b) if len(choices) > 1 else None
    by_key = {c.key: c for c in choices}
    picked = []
    for key in dict.fromkeys(k for k in (key_a, key_b) if k is not None):
        model = load_model(key, owner)
        if model is None:
            st.warning("That model is no longer available; pick another one.")
            continue
        picked.append((by_key[key], model))
    if not picked:
        return
    if len(choices) == 1:
        st.caption("Only one finished model so far: train a second one to compare.")

    st.subheader("First-layer filters", anchor="filters")
    st.caption(
        "conv1's 32 filters of 3×3 weights, each scaled by its own largest weight: white is "
        "positive, black negative, mid-grey zero."
    )
    columns = st.columns(len(picked))
    for slot, ((choice, model), col) in enumerate(zip(picked, columns, strict=True)):
        with col:
            title = f"{_short(choice, 'AB'[slot])} · {choice.label.split(' · ', 1)[-1]}"
            filters = first_layer_filters(model)
            st.plotly_chart(
                filters_figure(filters, title),
                config=FIG_CONFIG,
                key=f"inside_filters_{slot}",
                alt=filters_summary(filters, title),
            )

    st.subheader("fc1 activations over test images", anchor="activations")
    images = _test_images(N_IMAGES)
    if images is None:
        return
    named = [
        (_short(choice, letter), _summary(choice.key, N_IMAGES, model, images))
        for letter, (choice, model) in zip("AB", picked, strict=False)
    ]
    columns = st.columns(len(named))
    for (name, s), col in zip(named, columns, strict=True):
        col.markdown(f"**{name}**")
        c1, c2, c3 = col.columns(3)
        c1.metric("Mean activation", f"{s.mean:.3f}", help="Over all units and images.")
        c2.metric(
            "Zero activations",
            f"{s.zero_fraction:.1%}",
            help="Share of (image, unit) pairs where fc1's ReLU outputs exactly 0.",
        )
        c3.metric("Silent units", f"{s.dead_units}", help="Units that are 0 on every image.")
    c_hist, c_units = st.columns(2)
    c_hist.plotly_chart(
        activation_histogram_figure(named),
        config=FIG_CONFIG,
        key="inside_histogram",
        alt=histogram_summary(named),
    )
    c_units.plotly_chart(
        unit_means_figure(named),
        config=FIG_CONFIG,
        key="inside_unit_means",
        alt=unit_means_summary(named),
    )
    for name, s in named:
        st.caption(features_text_summary(name, s))
    st.caption(
        f"The same {N_IMAGES:,} test images for every model, dropout off (eval mode): the "
        "activations a trained model actually uses. In this network dropout sits right "
        "after fc1, so these are the units it drops during training."
    )
