"""Shareable links: the Lab's settings and Draw's model choice as URL query parameters, and
back. Pure functions (no streamlit), so a page's link can be tested without a browser.

Lab: ``?preset=overfit&p=0.3``; the Custom preset adds its fields, e.g.
``?preset=custom&p=0.5&train_size=2000&epochs=20&lr=0.002&batch_size=64&seed=1``.
Draw: ``?model=<run id>``, and ``&compare=<run id>`` for a second model side by side.

Reading a link never raises: each bad value is named in a readable problem and replaced by its
default, so a mangled link still opens the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import PRESETS, ConfigError, TrainConfig

# Lab presets by their short name in links (the Sweep page uses the same names).
LAB_PRESETS = {
    "overfit": "Overfitting lab",
    "seed": "Seed recipe",
    "tiny": "Tiny (test)",
    "custom": "Custom",
}
CUSTOM = "custom"
CUSTOM_BASE = PRESETS["Overfitting lab"]  # what the Lab's Custom fields start from
CUSTOM_FIELDS = ("train_size", "epochs", "lr", "batch_size", "seed")
LAB_KEYS = ("preset", "p", *CUSTOM_FIELDS)
# The Lab's dropout slider: a link may only ask for a value the slider can show.
P_MIN, P_MAX, P_STEP = 0.0, 0.9, 0.05
BATCH_MAX = 1_024  # the Lab's batch-size field
DRAW_KEYS = ("model", "compare")
_SHOWN = 40  # characters of a bad value quoted back in a message


def _show(raw: Any) -> str:
    text = str(raw)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def fmt_number(value: float) -> str:
    """A number as a link writes it: short, and read back exactly."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _last(value: Any) -> Any:
    return value[-1] if isinstance(value, list) and value else value


# ---------------------------------------------------------------------------- Lab
@dataclass(frozen=True)
class LabSettings:
    """What the Lab's settings panel shows: a preset (short name) and the run it would start
    (the preset's config with the slider's p, or the Custom fields)."""

    preset: str = "overfit"
    config: TrainConfig = field(default_factory=lambda: CUSTOM_BASE)

    def to_query(self) -> dict[str, str]:
        q = {"preset": self.preset, "p": fmt_number(self.config.p)}
        if self.preset == CUSTOM:
            for name in CUSTOM_FIELDS:
                value = getattr(self.config, name)
                q[name] = fmt_number(value) if isinstance(value, float) else str(value)
        return q


def lab_settings(preset: str, p: float, custom: TrainConfig | None = None) -> LabSettings:
    """The settings of a preset at ``p``; ``custom``: the Custom fields' config."""
    if preset == CUSTOM:
        return LabSettings(CUSTOM, (custom or CUSTOM_BASE).replace(p=p))
    return LabSettings(preset, PRESETS[LAB_PRESETS[preset]].replace(p=p))


def _parse_p(raw: Any, problems: list[str]) -> float | None:
    try:
        p = float(str(raw).strip())
    except ValueError:
        problems.append(f"p: {_show(raw)} is not a number")
        return None
    steps = (p - P_MIN) / P_STEP if math.isfinite(p) else -1.0
    if not P_MIN <= p <= P_MAX or abs(steps - round(steps)) > 1e-6:
        problems.append(
            f"p: {_show(raw)} is not on the slider ({P_MIN:g} to {P_MAX:g} in steps of {P_STEP:g})"
        )
        return None
    return round(P_MIN + round(steps) * P_STEP, 2)


def _parse_field(name: str, raw: Any, problems: list[str]) -> int | float | None:
    text = str(raw).strip()
    kind, what = (float, "a number") if name == "lr" else (int, "a whole number")
    try:
        value = kind(text)
    except ValueError:
        problems.append(f"{name}: {_show(raw)} is not {what}")
        return None
    if name == "batch_size" and value > BATCH_MAX:
        problems.append(f"batch_size: {value} is more than the Lab's {BATCH_MAX:,}")
        return None
    return value


def lab_from_query(query: Mapping[str, Any]) -> tuple[LabSettings, list[str]]:
    """The Lab settings a link describes, and the problems with it (each bad value is replaced
    by its default). Keys that are not the Lab's are ignored; no ``preset`` means ``overfit``
    (``custom`` when the link has Custom fields), no ``p`` means 0.5."""
    q = {k: _last(v) for k, v in query.items() if k in LAB_KEYS}
    problems: list[str] = []
    given = [name for name in CUSTOM_FIELDS if name in q]
    preset = CUSTOM if given else "overfit"
    if "preset" in q:
        preset = str(q["preset"]).strip().lower()
        if preset not in LAB_PRESETS:
            problems.append(f"preset: {_show(q['preset'])} is not one of {', '.join(LAB_PRESETS)}")
            preset = "overfit"
    p = _parse_p(q["p"], problems) if "p" in q else None
    p = CUSTOM_BASE.p if p is None else p
    if preset != CUSTOM:
        if given:
            problems.append(f"{', '.join(given)}: only preset=custom takes its own fields")
        return lab_settings(preset, p), problems
    config = CUSTOM_BASE.replace(p=p)
    for name in given:
        value = _parse_field(name, q[name], problems)
        if value is None:
            continue
        try:
            config = config.replace(**{name: value})
        except ConfigError as exc:
            problems.extend(exc.problems)
    return LabSettings(CUSTOM, config), problems


# ---------------------------------------------------------------------------- Draw
def model_param(choice_key: str, saved: Mapping[str, str]) -> str:
    """A Draw link's value for a picker key (``run:<id>`` or ``job:<id>``): the stored run's
    id, which anyone can open; for this session's run, the id it was saved under (``saved``:
    job id -> run id). A run never saved keeps its ``job:`` key: only its own session has it."""
    kind, _, ident = choice_key.partition(":")
    if kind == "job":
        return saved.get(ident) or choice_key
    return ident


def choice_for(param: Any, keys: Sequence[str], saved: Mapping[str, str]) -> str | None:
    """The picker key (one of ``keys``) a Draw link's value names, or None."""
    value = str(_last(param) or "").strip()
    if not value:
        return None
    if value.startswith("job:"):
        return value if value in keys else None
    if f"run:{value}" in keys:
        return f"run:{value}"
    for job, run in saved.items():
        if run == value and f"job:{job}" in keys:
            return f"job:{job}"
    return None


def missing_model(param: Any) -> str:
    """What to say when a Draw link names a model this server does not have."""
    return (
        f"The model in this link ({_show(_last(param))}) isn't here: the run store keeps the "
        "newest runs, and a run that was never saved lives only in the session that trained "
        "it. Showing another model."
    )
