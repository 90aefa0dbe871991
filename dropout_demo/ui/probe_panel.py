"""Draw page: the uncertainty probe — transform a digit step by step and chart the answers.

The selected model's sweep is shown beside a p = 0 model's (or, when the selected model has
p = 0, beside a dropout model's) whenever the visitor has one: the p = 0 panel is the control
that shows no spread at all.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from ..canvas import CanvasResult
from ..probe_charts import (
    probe_probability_figure,
    probe_probability_summary,
    probe_text_summary,
    probe_uncertainty_figure,
    probe_uncertainty_summary,
)
from ..probes import PROBES, TRANSFORMS, Sweep, probe_image, reading, strip, sweep
from .draw import FIG_CONFIG, ModelChoice, load_model, model_choices, upscale

STEPS = 30
SAMPLES = 100
THUMBS = 7
DROPOUT_P = 0.5  # the partner preferred for a p = 0 model: the seed recipe's rate

_K_SOURCE = "probe_source"
_K_TRANSFORM = "probe_transform"
_K_SEED = "draw_mc_seed"  # the Draw page's "New masks" button draws new masks here too
DRAWING = "drawing"


# ---------------------------------------------------------------- pure helpers
def same_but_p(a: ModelChoice, b: ModelChoice) -> bool:
    return a.config is not None and b.config is not None and a.config.replace(p=b.p) == b.config


def partner_for(choices: list[ModelChoice], first: ModelChoice) -> ModelChoice | None:
    """The model to show beside ``first``: for a dropout model a p = 0 one, for a p = 0 model
    a dropout one (p = 0.5 first); one from the same comparison (same settings but p) first,
    else the newest. None when there is none."""
    others = [c for c in choices if c.key != first.key]
    if first.p > 0:
        candidates = [c for c in others if c.p == 0]
    else:
        dropout = [c for c in others if c.p > 0]
        candidates = [c for c in dropout if c.p == DROPOUT_P] or dropout
    same = [c for c in candidates if same_but_p(c, first)]
    return (same or candidates or [None])[0]


def source_options(drawing_ok: bool) -> list[str]:
    return ([DRAWING] if drawing_ok else []) + list(PROBES)


def source_label(key: str) -> str:
    return "Your drawing" if key == DRAWING else PROBES[key].label


# ---------------------------------------------------------------- computing
@st.cache_data(max_entries=64, show_spinner=False)
def _cached_sweep(
    model_key: str, image_digest: str, transform: str, seed: int, _model, _image
) -> Sweep:
    # A finished model's weights never change, so its key, the image and the settings
    # identify the sweep; the model and image themselves are left out of the hash.
    return sweep(_model, _image, transform, steps=STEPS, samples=SAMPLES, seed=seed)


def run_sweep(choice: ModelChoice, model, image: np.ndarray, transform: str, seed: int) -> Sweep:
    image = np.ascontiguousarray(image, dtype=np.float32)
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    return _cached_sweep(choice.key, digest, transform, seed, model, image)


# ---------------------------------------------------------------- the panel
def _short(label: str) -> str:
    return label.split(" · ", 1)[-1]


def _sweep_column(choice: ModelChoice, s: Sweep, slot: int) -> None:
    st.markdown(f"**{_short(choice.label)}** (p = {s.p:g})")
    st.markdown(f"_{reading(s)}_")
    st.plotly_chart(
        probe_probability_figure(s),
        config=FIG_CONFIG,
        key=f"probe_probs_{slot}",
        alt=probe_probability_summary(s),
    )
    st.plotly_chart(
        probe_uncertainty_figure(s),
        config=FIG_CONFIG,
        key=f"probe_uncertainty_{slot}",
        alt=probe_uncertainty_summary(s),
    )
    st.caption(probe_text_summary(s))


def probe_panel(owner: str, picked: list, drawing: CanvasResult | None) -> list[Sweep]:
    """The probe under the Draw page; returns the sweeps it showed (for tests)."""
    if not picked:
        return []
    st.subheader("Uncertainty probe: change the digit step by step", anchor="probe")
    st.caption(
        f"The image is transformed in {STEPS} steps; at each, the model answers with dropout "
        f"off and with {SAMPLES} Monte-Carlo passes (the same {SAMPLES} masks at every step, so "
        "the curves move only because the image does). Where the image stops looking like "
        "anything the model was trained on, a dropout model's passes start to disagree — even "
        "while the eval-mode answer stays confident (Gal & Ghahramani, 2016, Figure 4)."
    )
    drawing_ok = drawing is not None and drawing.ok and drawing.preview is not None
    options = source_options(drawing_ok)
    if st.session_state.get(_K_SOURCE) not in options:
        st.session_state[_K_SOURCE] = options[0]
    c_src, c_tr = st.columns(2)
    source = c_src.selectbox("Probe image", options, format_func=source_label, key=_K_SOURCE)
    name = c_tr.selectbox(
        "Transform",
        list(TRANSFORMS),
        format_func=lambda t: TRANSFORMS[t].label,
        key=_K_TRANSFORM,
    )
    image = drawing.preview / 255.0 if source == DRAWING else probe_image(source)
    transform = TRANSFORMS[name]
    seed = int(st.session_state.get(_K_SEED, 0))

    first_choice, first_model = picked[0]
    pairs = [(first_choice, first_model)]
    if len(picked) > 1:
        pairs.append(picked[1])
    else:
        partner = partner_for(model_choices(owner), first_choice)
        model = load_model(partner.key, owner) if partner is not None else None
        if model is not None:
            pairs.append((partner, model))
        elif first_choice.p > 0:
            st.caption(
                "Train a p = 0 model in the Lab (e.g. Compare with p = 0) to see it here side "
                "by side: it has no spread to show."
            )

    sweeps = [run_sweep(c, m, image, name, seed) for c, m in pairs]
    row, idx = strip(sweeps[0].images, THUMBS)
    amounts = [transform.fmt(sweeps[0].amounts[i]) for i in idx]
    st.image(
        upscale(row, 3),
        clamp=True,
        caption=" · ".join(amounts),
        alt=f"The probe image at {', '.join(amounts)} ({transform.axis})",
    )
    columns = st.columns(len(pairs), border=len(pairs) > 1)
    for slot, ((choice, _), s, col) in enumerate(zip(pairs, sweeps, columns, strict=True)):
        with col:
            _sweep_column(choice, s, slot)
    return sweeps
