"""Helpers shared by the AppTest modules (not a test module itself)."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest


def owner_of(at: AppTest) -> str:
    """The visitor id the app gave this AppTest session."""
    return at.session_state["dropout_lab_owner"]


def wait_until(predicate, timeout: float = 120.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; fails the test after ``timeout`` seconds (a bound
    for what must happen, never a measured duration)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(interval)
