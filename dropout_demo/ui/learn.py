"""Learn — what dropout does, correctly: a short page with one interactive figure.

Sections carry anchors (``SECTIONS``) so the Lab and Draw views can link to them with
:func:`learn_page_link`; the link opens the Learn page inside the app (same session, runs kept)
with ``?section=<anchor>`` and the page scrolls there.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ..charts import NEUTRAL, PALETTE

SECTIONS = {
    "what-it-does": "What dropout does",
    "why-it-helps": "Why it fights overfitting",
    "inverted-dropout": "Inverted dropout: scaled in training, identity at evaluation",
    "p-convention": "Which p? PyTorch's drop probability vs the paper's keep probability",
    "when-it-helps": "When dropout does not help",
    "mc-dropout": "Dropout at test time: Monte-Carlo dropout",
    "canvas": "How a drawing becomes an MNIST digit",
}

UNITS = 16
FIG_CONFIG = {"displayModeBar": False}
_K_P = "learn_p"
_K_MASK = "learn_mask_seed"

_SCROLL_JS = """
export default function ({ data }) {
  const id = data && data.anchor;
  if (!id) return;
  let tries = 0;
  const go = () => {
    const el = document.getElementById(id);
    if (el) el.scrollIntoView({ block: "start" });
    else if (tries++ < 50) setTimeout(go, 100);
  };
  go();
}
"""
_scroll = st.components.v2.component("dropout_demo.scroll_to_section", js=_SCROLL_JS)


def _learn_url_path() -> str | None:
    """The url path the app's navigation gave the Learn page, or None (no such page)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return None
    for info in ctx.pages_manager.get_pages().values():
        path = info.get("url_pathname")
        if path is not None and (info.get("page_name", "").lower() == "learn" or path == "learn"):
            return path
    return None


def learn_page_link(section: str, label: str) -> None:
    """An in-app link to one section of the Learn page; nothing when the app has no Learn page."""
    if section not in SECTIONS:
        raise ValueError(f"unknown Learn section {section!r}; known: {', '.join(SECTIONS)}")
    path = _learn_url_path()
    if path is None:
        return
    page = st.Page(learn_view, title="Learn", url_path=path or None, default=path == "")
    st.page_link(page, label=label, icon=":material/school:", query_params={"section": section})


# ---------------------------------------------------------------- the interactive figure
def layer_activations(units: int = UNITS, seed: int = 7) -> np.ndarray:
    """A fixed, plausible ReLU layer output: some zeros, some large values."""
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(0.6, 0.8, units), 0.0).round(2)


def dropout_mask(units: int, p: float, seed: int) -> np.ndarray:
    """Bool mask, True = kept, each unit independently with probability 1 - p."""
    return np.random.default_rng(seed).random(units) >= p


def apply_inverted_dropout(a: np.ndarray, kept: np.ndarray, p: float) -> np.ndarray:
    """What nn.Dropout(p) outputs in training: kept units × 1/(1-p), dropped units 0."""
    return np.where(kept, a / (1.0 - p), 0.0)


def expected_output(a: np.ndarray, p: float, masks: int = 20_000, seed: int = 0) -> np.ndarray:
    """Average of the dropout output over many random masks (per unit): it comes out at ``a``."""
    kept = np.random.default_rng(seed).random((masks, a.size)) >= p
    return np.where(kept, a / (1.0 - p), 0.0).mean(axis=0)


def mask_figure(a: np.ndarray, out: np.ndarray, kept: np.ndarray, p: float) -> go.Figure:
    x = [f"u{i}" for i in range(a.size)]
    fig = go.Figure()
    # Before: grey; after: hatched blue; a dropped unit also says "dropped" (not colour alone).
    fig.add_bar(x=x, y=a.tolist(), name="before dropout", marker_color=NEUTRAL)
    fig.add_bar(
        x=x,
        y=out.tolist(),
        name=f"after (kept × {1 / (1 - p):.2f})",
        marker={"color": np.where(kept, PALETTE[0], PALETTE[1]).tolist(), "pattern_shape": "/"},
        text=np.where(kept, "", "dropped").tolist(),
        textposition="outside",
        textfont={"size": 11, "color": PALETTE[1]},
    )
    fig.add_hline(y=float(a.mean()), line_dash="dot", line_color=NEUTRAL)
    fig.update_layout(
        barmode="group",
        height=300,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.12},
        yaxis_title="activation",
    )
    return fig


def mask_summary(a: np.ndarray, out: np.ndarray, kept: np.ndarray, p: float) -> str:
    """The mask figure in words (its text for screen readers)."""
    dropped = [f"u{i}" for i in np.flatnonzero(~kept)]
    return (
        f"Bars of {a.size} units before and after dropout with p = {p:.2f}: {int(kept.sum())} "
        f"kept and scaled by {1 / (1 - p):.2f}, {len(dropped)} dropped"
        + (f" ({', '.join(dropped)})" if dropped else "")
        + f". Mean before {a.mean():.3f}, after this mask {out.mean():.3f}."
    )


def inverted_dropout_demo() -> dict[str, float]:
    """Slider p, one random mask, before/after bars and the expected values. Returns the numbers."""
    p = st.slider("Dropout rate p (probability of dropping a unit)", 0.0, 0.9, 0.5, 0.05, key=_K_P)
    seed = st.session_state.setdefault(_K_MASK, 0)
    if st.button("New random mask", key="learn_new_mask"):
        seed = st.session_state[_K_MASK] = seed + 1
    a = layer_activations()
    kept = dropout_mask(a.size, p, seed)
    out = apply_inverted_dropout(a, kept, p)
    expected = expected_output(a, p)
    numbers = {
        "p": p,
        "mean_before": float(a.mean()),
        "mean_this_mask": float(out.mean()),
        "mean_expected": float(expected.mean()),
        "mean_unscaled": float((1 - p) * a.mean()),
        "kept": int(kept.sum()),
    }
    st.plotly_chart(
        mask_figure(a, out, kept, p),
        config=FIG_CONFIG,
        key="learn_mask_fig",
        alt=mask_summary(a, out, kept, p),
    )
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Mean before", f"{numbers['mean_before']:.3f}")
    c2.metric(
        "Mean after, this mask",
        f"{numbers['mean_this_mask']:.3f}",
        help=f"{numbers['kept']} of {a.size} units kept",
    )
    c3.metric(
        "E[output], 20,000 masks",
        f"{numbers['mean_expected']:.3f}",
        help="Average over many masks: equal to the input, unit by unit, thanks to 1/(1-p).",
    )
    c4.metric(
        "E[output] without scaling",
        f"{numbers['mean_unscaled']:.3f}",
        help="(1-p) × mean: what the next layer would get if kept units were not scaled up.",
    )
    st.caption(
        "Grey: the layer's output. Blue, hatched: kept units, scaled by 1/(1−p). Marked "
        '"dropped": dropped. One mask '
        "moves the mean around; averaged over masks it equals the input (dotted line) — so at "
        "evaluation, with nothing dropped, the layer can pass its input through unchanged."
    )
    return numbers


# ---------------------------------------------------------------- the page
def _scroll_to_requested_section() -> None:
    section = st.query_params.get("section")
    if section in SECTIONS:
        _scroll(data={"anchor": section}, key=f"learn_scroll_{section}")
        del st.query_params["section"]  # scroll once, not again on every slider move


def _header(section: str) -> None:
    st.header(SECTIONS[section], anchor=section)


def learn_view() -> None:
    st.title("Learn — what dropout does")
    st.caption("A short, correct account, to read beside the Lab and the Draw page.")
    _scroll_to_requested_section()

    _header("what-it-does")
    st.markdown(
        "During **training**, a dropout layer sets each unit of its input to zero with "
        "probability **p**, independently, with a fresh random mask for every example and "
        "every step. In this app's network (the seed tutorial's `SimpleCNN`), dropout sits "
        "between the 128-unit fully connected layer `fc1` and the output layer `fc2`, so on "
        "each step the classifier has to work with a random subset of those 128 features. "
        "During **evaluation** (`model.eval()`) dropout does nothing: every unit is kept."
    )

    _header("why-it-helps")
    st.markdown(
        "- **No co-adaptation.** A unit cannot rely on particular other units being there, "
        "so it has to learn features that are useful on their own, not fragile combinations "
        "that only fit the training set.\n"
        "- **An implicit ensemble.** Each mask picks a *thinned* network; with 128 units "
        "there are 2¹²⁸ of them, all sharing weights. Training with dropout trains this huge "
        "ensemble at once, and the full network at evaluation approximates the average of "
        "its predictions — averaging many models is a classic cure for overfitting.\n"
        "- **Noise as regularisation.** The random masks make it hard to memorise individual "
        "training images; the training loss goes down more slowly, the test loss stays lower."
    )

    _header("inverted-dropout")
    st.markdown(
        "PyTorch's `nn.Dropout` is **inverted dropout**: during training the *kept* units are "
        "multiplied by **1/(1−p)**, so the expected value of each unit is unchanged "
        "(kept with probability 1−p, times 1/(1−p)). At evaluation the layer is the "
        "**identity** — no mask and **no scaling**.\n\n"
        "A common description — the seed tutorial says it too — is that at evaluation the "
        "outputs are *scaled according to the dropout rate*. That is the original 2014 "
        "formulation (train unscaled, multiply the weights by the keep probability at test "
        "time), not what PyTorch does. Both keep training and evaluation on the same scale; "
        "PyTorch does the work during training, so the trained model needs nothing special at "
        "evaluation. Try it: move p and draw new masks."
    )
    inverted_dropout_demo()

    _header("p-convention")
    st.markdown(
        "In PyTorch, `nn.Dropout(p=0.2)` **drops** 20% of the units: **p is the drop "
        "probability**. In Srivastava et al. (2014), *Dropout: A Simple Way to Prevent Neural "
        "Networks from Overfitting*, **p is the probability of keeping** a unit (they "
        "recommend p = 0.5 for hidden units and about 0.8 for inputs). So the paper's p = 0.8 "
        "is PyTorch's p = 0.2. This app always uses PyTorch's meaning: the slider says how "
        "much is dropped."
    )

    _header("when-it-helps")
    st.markdown(
        "Dropout is a regulariser; it helps when the network would otherwise overfit.\n\n"
        "- **Full MNIST, 5 epochs (the seed recipe):** no visible benefit. 60,000 images are "
        "plenty for this small network in so few epochs; p = 0 and p = 0.5 both reach about "
        "99% test accuracy, and the test loss never turns upward.\n"
        "- **1,000 images, 30 epochs (the Overfitting lab):** a clear benefit. With p = 0 "
        "the test loss bottoms out around epoch 14 and then *rises* while the training loss "
        "keeps falling — memorisation. With p = 0.5 it keeps falling: about 0.14 against "
        "0.20 at the end, and about 96.2% against 95.3% accuracy.\n"
        "- Too much dropout (p close to 1) underfits: the network cannot learn anything "
        "stable from the few units left. And dropout slows training down — on a short run "
        "the p = 0.5 curve can look *worse* simply because it has not converged yet.\n\n"
        "Run both presets in the Lab with **Compare with p = 0** to see it live."
    )

    _header("mc-dropout")
    st.markdown(
        "Keeping dropout **on at test time** and running the same input T times gives T "
        "different thinned networks' answers (Gal & Ghahramani, 2016). Their **mean** is a "
        "prediction; their **spread** says how unsure the model is:\n\n"
        "- **Predictive entropy** of the mean prediction (0 = certain; ln 10 ≈ 2.30 nats = "
        "all ten digits equally likely) is high when the answer is spread over several "
        "digits — for example an ambiguous drawing.\n"
        "- **Mutual information** (entropy of the mean minus the passes' mean entropy) is "
        "high when the passes *disagree*: the model's own uncertainty about its weights, the "
        "part that more training data would reduce. A p = 0 model has none to show: every "
        "pass is identical.\n\n"
        "The Draw page shows both, with the per-class spread as error bars and the votes "
        "of the T passes."
    )

    _header("canvas")
    st.markdown(
        "MNIST digits are white on black, scaled to fit a 20×20 box (keeping their aspect "
        "ratio, anti-aliased) and placed in a 28×28 image so that their centre of mass is at "
        "the centre. The Draw page does the same with your drawing — crop to the ink, fit "
        "20×20, centre of mass, then the same normalisation as in training — and shows the "
        "28×28 result, because that, not the big canvas, is what the network sees."
    )
