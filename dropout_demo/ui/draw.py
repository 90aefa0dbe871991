"""Draw — see what the network sees: canvas, the 28x28 input, dropout off and on (MC)."""

from __future__ import annotations

import functools
import io
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from .. import links
from ..canvas import EMPTY_MESSAGE, CanvasResult, preprocess
from ..charts import PALETTE
from ..config import TrainConfig
from ..inference import MAX_SAMPLES, MCResult, PassResult, mc_predict, predict, stochastic_pass
from ..model import HIDDEN_UNITS, make_checkpoint
from ..runs import RunStore, RunStoreError
from ..starter import STARTER_TAG, ensure_default_model
from .state import manager, session_id, store

log = logging.getLogger(__name__)

CANVAS_SIZE = 280
STROKE_WIDTH = 20
MASK_SHAPE = (8, 16)  # fc1's 128 units drawn as 8 rows x 16 columns
LN10 = float(np.log(10.0))  # the largest possible entropy over 10 classes, nats

KEEP_COLOUR = PALETTE[0]
DROP_COLOUR = "#262730"
BAR_COLOUR = PALETTE[6]  # Okabe–Ito sky blue; the top digit's bar: blue, hatched, labelled
TOP_COLOUR = PALETTE[0]
FIG_CONFIG = {"displayModeBar": False}

_K_CANVAS = "draw_canvas_generation"
_K_MODEL = "draw_model"
_K_COMPARE = "draw_compare"
_K_OTHER = "draw_model_other"
_K_SAMPLES = "draw_samples"
_K_SEED = "draw_mc_seed"
_K_PASS = "draw_pass"
_K_LINKED = "draw_loaded_query"  # the URL models the pickers were last filled from
SAMPLES_MAX = min(200, MAX_SAMPLES)  # the slider's end; the package refuses more than MAX_SAMPLES


@dataclass(frozen=True)
class ModelChoice:
    """One model the picker offers: a finished run of this session or a stored run."""

    key: str  # "job:<job id>" or "run:<run id>"
    label: str
    p: float
    config: TrainConfig | None = None


# ---------------------------------------------------------------- figures (pure)
def _bar_colours(values: np.ndarray) -> list[str]:
    top = int(np.argmax(values))
    return [TOP_COLOUR if i == top else BAR_COLOUR for i in range(len(values))]


def _top_bar(values: np.ndarray, text: str) -> dict:
    """The top digit's bar told apart by more than colour: hatched, its value written on it."""
    top = int(np.argmax(values))
    return {
        "marker_pattern_shape": ["/" if i == top else "" for i in range(len(values))],
        "text": [text if i == top else "" for i in range(len(values))],
        "textposition": "outside",
        "cliponaxis": False,
    }


def bars_summary(values: np.ndarray, what: str, fmt: str = ".1%", count: int = 3) -> str:
    """A digit bar chart in words, its largest bars first (the chart's text for screen readers)."""
    order = np.argsort(-np.asarray(values), kind="stable")[:count]
    bars = ", ".join(f"{int(i)}: {format(values[i], fmt)}" for i in order)
    return f"{what}, largest first: {bars}."


def _digit_axes(fig: go.Figure, title: str, y_title: str, y_range=None) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=230,
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        showlegend=False,
        bargap=0.25,
    )
    fig.update_xaxes(tickmode="array", tickvals=list(range(10)), title_text="digit")
    fig.update_yaxes(title_text=y_title, range=y_range)
    return fig


def probability_figure(probs: np.ndarray, title: str = "Eval-mode probabilities") -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(range(10)),
            y=probs,
            marker_color=_bar_colours(probs),
            **_top_bar(probs, f"{float(np.max(probs)):.0%}"),
            hovertemplate="digit %{x}: %{y:.1%}<extra></extra>",
        )
    )
    return _digit_axes(fig, title, "probability", [0, 1])


def mc_mean_figure(mc: MCResult) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(range(10)),
            y=mc.mean,
            error_y={"type": "data", "array": mc.std, "visible": True, "thickness": 1.5},
            marker_color=_bar_colours(mc.mean),
            **_top_bar(mc.mean, f"{float(np.max(mc.mean)):.0%}"),
            hovertemplate="digit %{x}: %{y:.1%} ± %{error_y.array:.1%}<extra></extra>",
        )
    )
    return _digit_axes(fig, f"Mean probability ± 1 std over T = {mc.T}", "probability", [0, 1])


def votes_figure(mc: MCResult) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(range(10)),
            y=mc.votes,
            marker_color=_bar_colours(mc.votes),
            **_top_bar(mc.votes, str(int(np.max(mc.votes)))),
            hovertemplate="digit %{x}: %{y} of " + str(mc.T) + " passes<extra></extra>",
        )
    )
    return _digit_axes(fig, "Votes: each pass's top digit", "passes", [0, mc.T])


def mask_figure(result: PassResult) -> go.Figure:
    """fc1's 128 units as a 8x16 grid: kept units coloured, dropped units dark."""
    kept = (~result.dropped).astype(float).reshape(MASK_SHAPE)
    units = np.arange(HIDDEN_UNITS).reshape(MASK_SHAPE)
    text = np.where(
        result.dropped.reshape(MASK_SHAPE), "dropped", f"kept, × {result.scale:.2f}"
    ).astype(object)
    fig = go.Figure(
        go.Heatmap(
            z=kept.tolist(),  # plain lists: readable in the page's JSON (tests, browser)
            customdata=units.tolist(),
            text=text.tolist(),
            zmin=0,
            zmax=1,
            colorscale=[[0, DROP_COLOUR], [1, KEEP_COLOUR]],
            showscale=False,
            xgap=2,
            ygap=2,
            hovertemplate="unit %{customdata}: %{text}<extra></extra>",
        )
    )
    fig.update_layout(height=170, margin={"l": 0, "r": 0, "t": 0, "b": 0})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    return fig


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so each of the 28x28 pixels stays a visible square."""
    return np.kron(image, np.ones((factor, factor), dtype=image.dtype))


# ---------------------------------------------------------------- models
def _accuracy(metrics) -> str:
    return f" · test acc {metrics[-1].test_acc:.1%}" if metrics else ""


def model_choices(owner: str) -> list[ModelChoice]:
    """This session's finished runs (newest first), then the run store's (newest first)."""
    choices = []
    for snap in reversed(manager().snapshot(owner)):
        if snap.has_model and snap.is_terminal:
            status = "" if snap.status == "done" else f" ({snap.status})"
            label = f"This session · {snap.name}{_accuracy(snap.metrics)}{status}"
            choices.append(ModelChoice(f"job:{snap.id}", label, snap.config.p, snap.config))
    saved = {snap.saved_run_id for snap in manager().snapshot(owner) if snap.saved_run_id}
    for record in store().list():
        if record.id in saved:
            continue  # already offered as this session's run
        name = "Starter model" if STARTER_TAG in record.tags else record.name
        label = f"Saved · {name} · {record.config.label()}{_accuracy(record.metrics)}"
        choices.append(ModelChoice(f"run:{record.id}", label, record.config.p, record.config))
    return choices


@st.cache_resource(max_entries=16, show_spinner=False)
def _stored_model(root: str, run_id: str):
    # Weights of a stored run never change, so one copy serves every session.
    return RunStore(root).load_model(run_id)


def load_model(key: str, owner: str):
    """The model behind a picker key, or None when it is gone (removed, deleted)."""
    kind, _, ident = key.partition(":")
    try:
        if kind == "job":
            return manager().model(ident, owner)
        return _stored_model(str(store().root), ident)
    except Exception:  # a run removed or deleted since the picker was drawn
        return None


def weights_file(choice: ModelChoice, model, runs: RunStore) -> Callable[[], bytes]:
    """The Weights download's contents, built when clicked (maybe long after the page was drawn).

    A stored run's own file when it is still there; when it was pruned or deleted meanwhile
    (or the run is this session's), a checkpoint of the model the page shows. Never raises for
    a vanished run: a failed download would only say "Failed to generate file".
    """

    def build() -> bytes:
        kind, _, ident = choice.key.partition(":")
        if kind == "run":
            try:
                return runs.weights_bytes(ident)
            except (RunStoreError, OSError) as exc:
                log.info(
                    "stored run %s gone since the page was drawn (%s); using the model", ident, exc
                )
        buffer = io.BytesIO()
        config = choice.config if choice.config is not None else TrainConfig(p=choice.p)
        torch.save(make_checkpoint(model, config, name=choice.label), buffer)
        return buffer.getvalue()

    return build


def weights_file_name(choice: ModelChoice) -> str:
    c = choice.config
    if c is None:
        return f"dropout-p{choice.p:.2f}.pt"
    return f"dropout-p{c.p:.2f}-{c.train_size}img-{c.epochs}ep-seed{c.seed}.pt"


# ---------------------------------------------------------------- canvas seam
CANVAS_COMPONENT = "streamlit-drawable-canvas.streamlit_drawable_canvas"
CANVAS_HTML = '<div class="canvas-root"></div>'  # the root element the component's script needs
# The component floats its toolbar (send, undo, redo, edit, reset) over the canvas's top-right
# corner, transparent until hovered, and there the toolbar takes the pointer-down of a stroke
# that starts under it (the top of a 1 or a 7): about 140x32 px before a hover, every time on a
# touch screen. The component's styles live in a shadow root, out of reach of the page's CSS, so
# these rules go into its own stylesheet: the toolbar sits under the canvas, always visible, with
# undo and redo only (Clear is ours, every stroke is sent by itself, and an edit mode would leave
# a finger that cannot draw).
CANVAS_CSS = """
.dc-toolbar { position: static; opacity: 1; padding: 0.25rem 0 0; justify-content: flex-end; }
.dc-toolbar-card { box-shadow: none; border: 1px solid var(--st-border-color, lightgrey); }
.dc-toolbar-separator,
.dc-toolbar-contextual,
.dc-icon-button[aria-label="Update the app with this drawing"],
.dc-icon-button[aria-label="Edit"],
.dc-icon-button[aria-label="Reset canvas & history"] { display: none !important; }
"""


class _OwnCanvasStyles(logging.Filter):
    """Drops Streamlit's "already registered" warning for our restyling of the canvas only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (args[:1] == (CANVAS_COMPONENT,) and "already registered" in str(record.msg))


_OWN_CANVAS_STYLES = _OwnCanvasStyles()


@functools.cache
def _canvas_css() -> str:
    import streamlit_drawable_canvas

    build = Path(streamlit_drawable_canvas.__file__).parent / "frontend" / "build"
    (sheet,) = build.glob("index-*.css")
    return sheet.read_text(encoding="utf-8") + CANVAS_CSS


def style_canvas_component() -> None:
    """Register the canvas component again, same script, its stylesheet plus CANVAS_CSS.

    Idempotent (an identical definition is stored silently); called before every mount, so the
    runtime that mounts the canvas always has it.
    """
    logging.getLogger("streamlit.components.v2.component_registry").addFilter(_OWN_CANVAS_STYLES)
    st.components.v2.component(
        CANVAS_COMPONENT, html=CANVAS_HTML, js="index-*.js", css=_canvas_css(), isolate_styles=True
    )


def canvas_image(key: str) -> np.ndarray | None:
    """Show the drawing canvas and return its RGBA pixels (None before the first stroke).

    Tests replace this function to inject a drawing.
    """
    from streamlit_drawable_canvas import st_canvas

    style_canvas_component()  # after the import, whose own registration it replaces
    # The key names the canvas's generation (Clear starts a new one). The component keeps its
    # Fabric canvas per page element and, when Streamlit reuses the element for the new key,
    # only an initial drawing that differs makes it start over: it drops its pending stroke
    # (sent 200 ms after the pointer lifts) instead of sending the old drawing as the new
    # canvas's value, and sends the empty canvas. Without this, Clear on a busy server could
    # leave the old digit's prediction beside a blank canvas. The extra field is only stored.
    result = st_canvas(
        initial_drawing={"objects": [], "dropoutLabCanvas": key},
        stroke_width=STROKE_WIDTH,
        stroke_color="#FFFFFF",
        background_color="#000000",
        height=CANVAS_SIZE,
        width=CANVAS_SIZE,
        drawing_mode="freedraw",
        return_image_data=True,
        key=key,
    )
    return result.image_data


def _clear_canvas() -> None:
    st.session_state[_K_CANVAS] = st.session_state.get(_K_CANVAS, 0) + 1
    st.session_state.pop(_K_PASS, None)


def _new_mc_seed() -> None:
    st.session_state[_K_SEED] = secrets.randbits(31)


# ---------------------------------------------------------------- panels
def learn_link(section: str, label: str) -> None:
    """A link to a section of the Learn page, when the app has one (it may run alone in tests)."""
    from .learn import learn_page_link

    learn_page_link(section, label)


def starter_panel() -> None:
    """Report the default model's training; rerun the whole page once it is ready."""

    @st.fragment(run_every=1.0)
    def _progress() -> None:
        status = ensure_default_model(store(), manager())
        if status.ready:
            st.rerun(scope="app")
        elif status.state == "failed":
            st.error(status.describe())
            if st.button("Try again", key="draw_starter_retry"):
                ensure_default_model(store(), manager(), retry=True)
                st.rerun(scope="app")
        else:
            st.info(
                "No trained model here yet, so a starter model (p = 0.5) is being trained "
                "once in the background. You can draw meanwhile, or train your own in the Lab."
            )
            done = (status.epoch + status.progress) / max(status.epochs, 1)
            st.progress(min(done, 1.0), text=status.describe())

    _progress()


def eval_panel(model, x: torch.Tensor, slot: int = 0) -> None:
    probs = predict(model, x)[0].numpy()
    digit = int(probs.argmax())
    st.markdown("**Dropout off** (eval mode: every unit kept, nothing rescaled)")
    st.markdown(
        f"<div style='font-size:4.5rem;font-weight:700;line-height:1'>{digit}</div>"
        f"<div style='color:gray'>predicted digit · {probs[digit]:.1%} sure</div>",
        unsafe_allow_html=True,
    )
    st.plotly_chart(
        probability_figure(probs),
        config=FIG_CONFIG,
        key=f"draw_eval_{slot}",
        alt=bars_summary(probs, "Eval-mode probability of each digit"),
    )


def mc_panel(model, x: torch.Tensor, samples: int, seed: int, slot: int = 0) -> MCResult:
    mc = mc_predict(model, x, samples=samples, seed=seed)
    st.markdown(f"**Dropout on** (Monte-Carlo: {mc.T} passes, a new random mask in each)")
    if model.p == 0:
        st.caption(
            "This model was trained with p = 0: its dropout layer drops nothing, so every pass "
            "is the same — no spread, and zero mutual information."
        )
    agree = int(mc.votes[mc.prediction])
    st.markdown(f"MC prediction: **{mc.prediction}** · {agree} of {mc.T} passes agree")
    st.plotly_chart(
        mc_mean_figure(mc),
        config=FIG_CONFIG,
        key=f"draw_mc_mean_{slot}",
        alt=bars_summary(mc.mean, f"Mean probability of each digit over T = {mc.T} passes"),
    )
    st.plotly_chart(
        votes_figure(mc),
        config=FIG_CONFIG,
        key=f"draw_mc_votes_{slot}",
        alt=bars_summary(mc.votes, f"Passes (of {mc.T}) whose top digit each is", "d"),
    )
    c1, c2 = st.columns(2)
    c1.metric(
        "Predictive entropy",
        f"{mc.entropy:.3f} nats",
        help=f"Entropy of the mean prediction; 0 = certain, {LN10:.2f} = all 10 digits equal.",
    )
    c2.metric(
        "Mutual information",
        f"{mc.mutual_info:.3f} nats",
        help="Predictive entropy minus the passes' mean entropy: how much the passes disagree.",
    )
    st.caption(
        "High entropy: the averaged answer is spread over several digits (an ambiguous "
        "drawing). High mutual information: the thinned networks disagree with each other — "
        "the model's own uncertainty, the part more training data would reduce."
    )
    return mc


def pass_panel(model, x: torch.Tensor, seed: int | None, slot: str) -> None:
    if seed is None:
        st.caption("Press the button to run one pass with a fresh random mask.")
        return
    gen = torch.Generator().manual_seed(seed)
    result = stochastic_pass(model, x, gen)
    dropped = int(result.dropped.sum())
    st.markdown(
        f"Prediction of this pass: **{result.prediction}** ({result.probs[result.prediction]:.0%})"
        f" · {dropped} of {HIDDEN_UNITS} fc1 units dropped (dark) · kept units × "
        f"1/(1−{result.p:.2f}) = **×{result.scale:.2f}**"
    )
    st.plotly_chart(
        mask_figure(result),
        config=FIG_CONFIG,
        key=f"draw_mask_{slot}",
        alt=f"fc1's {HIDDEN_UNITS} units in a grid: {dropped} dropped (dark), the others kept.",
    )


# ---------------------------------------------------------------- the view
def _picker(choices: list[ModelChoice], key: str, label: str, default: int = 0) -> str:
    keys = [c.key for c in choices]
    labels = {c.key: c.label for c in choices}
    if st.session_state.get(key) not in keys:
        st.session_state[key] = keys[min(default, len(keys) - 1)]
    return st.selectbox(label, keys, format_func=labels.__getitem__, key=key)


def _other_default(choices: list[ModelChoice], first: str) -> int:
    """Index among the choices other than ``first``: one with a different p when there is one
    (p = 0 against p = 0.5, say)."""
    others = [c for c in choices if c.key != first]
    p_first = next(c.p for c in choices if c.key == first)
    return next((i for i, c in enumerate(others) if c.p != p_first), 0)


def _saved_runs(owner: str) -> dict[str, str]:
    """This session's jobs that were saved: job id -> stored run id."""
    return {s.id: s.saved_run_id for s in manager().snapshot(owner) if s.saved_run_id}


def _url_models() -> dict[str, str]:
    return {k: st.query_params.get(k) for k in links.DRAW_KEYS if k in st.query_params}


def _load_link(choices: list[ModelChoice], saved: dict[str, str]) -> None:
    """When the URL names models (a link opened), put them into the pickers; a model this
    server does not have gets a message, and the picker its default."""
    current = _url_models()
    if not current or st.session_state.get(_K_LINKED) == current:
        return
    st.session_state[_K_LINKED] = current
    keys = [c.key for c in choices]
    st.session_state[_K_COMPARE] = False  # a link without compare= shows one model
    for name, state_key in (("model", _K_MODEL), ("compare", _K_OTHER)):
        if name not in current:
            continue
        key = links.choice_for(current[name], keys, saved)
        if key is None:
            st.warning(links.missing_model(current[name]))
            continue
        st.session_state[state_key] = key
        if name == "compare":
            st.session_state[_K_COMPARE] = len(choices) > 1


def _sync_url(keys: list[str], saved: dict[str, str]) -> None:
    """Write the picked model(s) into the URL (other parameters stay)."""
    names = links.DRAW_KEYS[: len(keys)]
    wanted = {name: links.model_param(key, saved) for name, key in zip(names, keys, strict=True)}
    current = _url_models()
    if current != wanted:
        for k in current:
            del st.query_params[k]
        st.query_params.update(wanted)
    st.session_state[_K_LINKED] = wanted


def waiting_picker() -> None:
    """The picker row as it looks once the starter model is ready (one model: a picker and its
    Weights button), disabled meanwhile, so the canvas under it stays put when the model comes."""
    left, _ = st.columns([3, 2])
    with left:
        st.selectbox("Model", ["Starter model · training…"], disabled=True, key="draw_model_wait")
        st.button("Weights", disabled=True, key="draw_weights_wait", icon=":material/download:")


def model_section(owner: str) -> list[tuple[ModelChoice, object]] | None:
    """The model picker(s); None when there is no model yet (the starter model is on its way);
    the picked models live in the URL (``?model=<run id>&compare=<run id>``)."""
    choices = model_choices(owner)
    if not choices:
        waiting_picker()
        return None
    saved = _saved_runs(owner)
    _load_link(choices, saved)
    gone = st.session_state.get(_K_MODEL)
    if isinstance(gone, str) and gone.startswith("run:") and gone not in {c.key for c in choices}:
        st.info(
            "The saved model you had picked has left the run store (it keeps the newest runs); "
            "showing another one."
        )
    left, right = st.columns([3, 2])
    with left:
        first = _picker(choices, _K_MODEL, "Model")
    keys = [first]
    with right:
        compare = len(choices) > 1 and st.toggle(
            "Compare with a second model",
            key=_K_COMPARE,
            help="Side by side, e.g. a p = 0 run against a p = 0.5 run.",
        )
        if compare:
            others = [c for c in choices if c.key != first]
            keys.append(_picker(others, _K_OTHER, "Compare with", _other_default(choices, first)))
    _sync_url(keys, saved)
    by_key = {c.key: c for c in choices}
    picked = []
    for key in keys:
        model = load_model(key, owner)
        if model is None:
            st.warning("That model is no longer available; pick another one.")
            continue
        picked.append((by_key[key], model))
    if picked:
        runs = store()
        for slot, (col, (choice, model)) in enumerate(zip((left, right), picked, strict=False)):
            col.download_button(
                "Weights",
                data=weights_file(choice, model, runs),  # built only when clicked
                file_name=weights_file_name(choice),
                mime="application/octet-stream",
                key=f"draw_weights_{slot}",
                on_click="ignore",
                icon=":material/download:",
                help="This model as a PyTorch checkpoint (config + state_dict): "
                "torch.load(path, weights_only=True)",
            )
    return picked


def read_drawing(rgba) -> CanvasResult | None:
    """The canvas's pixels as the model's input, or None before the first stroke.

    Never raises: an image the canvas module can't read comes back as status "invalid" with a
    message, and anything unexpected is logged and reported the same way.
    """
    if rgba is None:
        return None
    try:
        # The canvas is set up white-on-black; saying so lets a fully painted one read "full".
        return preprocess(rgba, background="black")
    except Exception:
        log.exception("canvas image could not be preprocessed")
        return CanvasResult(
            "invalid", "This drawing can't be read. Clear the canvas and draw again.", None, None
        )


def draw_view() -> None:
    owner = session_id()
    st.title("Draw — see what the network sees")
    st.caption(
        "Draw a digit. The model sees only the small 28×28 image beside the canvas (under it on "
        "a phone), made the way MNIST was made: cropped to the ink, fitted in 20×20, centred by "
        "its centre of mass."
    )

    # Everything above the canvas lives in one container, so the canvas keeps its place in the
    # page whatever shows up there; a moved canvas would be remounted, its strokes wiped.
    with st.container():
        picked = model_section(owner)

    generation = st.session_state.get(_K_CANVAS, 0)
    left, right = st.columns([3, 2])
    with left:
        rgba = canvas_image(f"draw_canvas_{generation}")
        st.button("Clear", on_click=_clear_canvas, key="draw_clear", icon=":material/delete:")
        if picked is None:
            starter_panel()  # under the canvas: its progress must not push the canvas around
            picked = []
    drawing = read_drawing(rgba)
    with right:
        st.markdown("**What the model receives** (28×28)")
        if drawing is not None and drawing.preview is not None:
            st.image(
                upscale(drawing.preview, 7),
                clamp=True,
                width=196,
                alt="The drawing as the model receives it: 28×28 pixels, white on black",
            )
        else:
            st.image(
                np.zeros((196, 196), dtype=np.uint8),
                width=196,
                alt="The model's 28×28 input: empty until you draw",
            )
        learn_link("canvas", "How a drawing becomes MNIST-like")

    if drawing is None or drawing.message == EMPTY_MESSAGE:
        st.info("Draw a digit on the black canvas (one digit, 0–9, filling most of the box).")
    elif drawing.status == "empty":
        st.info(drawing.message)
    elif not drawing.ok:
        st.warning(drawing.message)
    elif picked:
        drawing_panels(picked, drawing)
    if picked:
        # The probe works on built-in images too, so it is there before anything is drawn.
        from .probe_panel import probe_panel  # imported here: it imports this module

        probe_panel(owner, picked, drawing)


def drawing_panels(picked: list, drawing: CanvasResult) -> None:
    """Eval, Monte-Carlo and one-pass panels for a drawing that reads as a digit."""
    x = drawing.tensor

    samples = st.slider(
        "Monte-Carlo samples T",
        1,
        SAMPLES_MAX,
        50,
        key=_K_SAMPLES,
        help="How many stochastic passes (each with its own dropout mask) are averaged.",
    )
    c_seed, c_link = st.columns([1, 3])
    c_seed.button("New masks", on_click=_new_mc_seed, key="draw_resample")
    with c_link:
        learn_link("mc-dropout", "What Monte-Carlo dropout measures")
    seed = st.session_state.get(_K_SEED, 0)

    columns = st.columns(len(picked), border=len(picked) > 1)
    for slot, ((choice, model), col) in enumerate(zip(picked, columns, strict=True)):
        with col:
            if len(picked) > 1:
                st.subheader(choice.label.split(" · ", 1)[-1])
            off, on = (col, col) if len(picked) > 1 else st.columns(2)
            with off:
                eval_panel(model, x, slot)
            with on:
                mc_panel(model, x, samples, seed, slot)

    st.subheader("One stochastic pass", anchor="one-pass")
    st.caption(
        "Training sees one pass like this per step: a fresh random mask over fc1's 128 units, "
        "the kept ones scaled up by 1/(1−p) so the layer's expected output stays the same."
    )
    c_btn, c_link = st.columns([1, 3])
    if c_btn.button("Run one pass", key="draw_one_pass", type="primary"):
        st.session_state[_K_PASS] = secrets.randbits(31)
    with c_link:
        learn_link("inverted-dropout", "Why kept units are scaled by 1/(1−p)")
    pass_seed = st.session_state.get(_K_PASS)
    columns = st.columns(len(picked))
    for i, ((choice, model), col) in enumerate(zip(picked, columns, strict=True)):
        with col:
            if len(picked) > 1:
                st.markdown(f"**{choice.label.split(' · ', 1)[-1]}**")
            pass_panel(model, x, None if pass_seed is None else pass_seed + i, f"pass_{i}")
