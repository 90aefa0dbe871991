"""The app's frame: page config and navigation between the app's views (``PAGES``)."""

from __future__ import annotations

import importlib
import os
import sys

import streamlit as st

# url path -> (module in dropout_demo.ui, view function, title, icon)
PAGES = {
    "lab": ("lab", "lab_view", "Lab", ":material/science:"),
    "draw": ("draw", "draw_view", "Draw", ":material/draw:"),
    "learn": ("learn", "learn_view", "Learn", ":material/school:"),
    "inside": ("inside", "inside_view", "Inside", ":material/neurology:"),
    "sweep": ("sweep", "sweep_view", "Sweep", ":material/stacked_line_chart:"),
    "class": ("classroom", "class_view", "Class", ":material/groups:"),
}
DEFAULT_PAGE = "lab"

# Training threads release the GIL inside every torch op and must take it back after each one;
# with a class's script runs busy in Python, CPython's default 5 ms switch interval can make
# each of those re-acquisitions wait up to 5 ms (bench/classroom_load.py measures it).
SWITCH_INTERVAL_ENV = "DROPOUT_DEMO_SWITCH_INTERVAL"
DEFAULT_SWITCH_INTERVAL = 0.001  # seconds


def tune_interpreter() -> float:
    """Set the interpreter's thread switch interval for a server shared by training threads."""
    try:
        interval = float(os.environ.get(SWITCH_INTERVAL_ENV, DEFAULT_SWITCH_INTERVAL))
    except ValueError:
        interval = DEFAULT_SWITCH_INTERVAL
    interval = min(max(interval, 1e-4), 0.05)
    if sys.getswitchinterval() != interval:
        sys.setswitchinterval(interval)
    return interval


def _view(url_path: str):
    module_name, function_name, _, _ = PAGES[url_path]

    def run_view() -> None:
        # Imported when the page is shown, so one view's heavy imports never slow the others.
        module = importlib.import_module(f"{__package__}.{module_name}")
        getattr(module, function_name)()

    run_view.__name__ = run_view.__qualname__ = f"{module_name}_page"
    return run_view


def page(url_path: str) -> st.Page:
    """The navigation page for ``url_path`` ("lab", "draw", "learn"), e.g. for st.page_link."""
    _, _, title, icon = PAGES[url_path]
    return st.Page(
        _view(url_path),
        title=title,
        icon=icon,
        url_path=url_path,
        default=url_path == DEFAULT_PAGE,
    )


def main() -> None:
    tune_interpreter()
    st.set_page_config(page_title="Dropout Lab", page_icon=":material/blur_on:", layout="wide")
    st.navigation([page(name) for name in PAGES], position="top").run()
