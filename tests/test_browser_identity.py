"""A visitor's runs survive a reload and a reopened link; another visitor never sees them.

Real browser (Chromium through Playwright) against `streamlit run app.py`, as a student would.
"""

from __future__ import annotations

import os

import pytest
from test_browser import require_browser, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

TIMEOUT_MS = 120_000  # a bound for what must happen, never a measured duration
ROW = "p=0.50 · 256 imgs · 3 ep"
ROW_DETAILS = "lr 0.001 · batch 64 · seed 0"  # under the run's name, only in the runs table


def open_lab(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("button", name="Start run").wait_for(timeout=TIMEOUT_MS)


def test_identity_survives_reload_and_a_reopened_link(mnist_dir, tmp_path):
    chromium = require_browser()
    from playwright.sync_api import expect, sync_playwright

    env = {
        **os.environ,
        "DROPOUT_DEMO_DATA": str(mnist_dir),
        "DROPOUT_DEMO_RUNS": str(tmp_path / "runs"),
        "DROPOUT_DEMO_TEST_PRESETS": "1",
    }
    with (
        streamlit_server(env, tmp_path / "server.log") as url,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            student = browser.new_context(viewport={"width": 1280, "height": 900})
            page = student.new_page()
            open_lab(page, url)
            page.get_by_text("Tiny (test)", exact=True).click()
            expect(page.get_by_text("Next run: " + ROW, exact=False)).to_be_visible(
                timeout=TIMEOUT_MS
            )
            page.get_by_role("button", name="Start run").click()
            expect(page.get_by_text(ROW_DETAILS).first).to_be_visible(timeout=TIMEOUT_MS)
            cookie = next(c for c in student.cookies() if c["name"] == "dropout_lab_id")
            assert len(cookie["value"]) == 32

            page.reload()  # a full reload is a new Streamlit session
            open_lab(page, url)
            expect(page.get_by_text(ROW_DETAILS).first).to_be_visible(timeout=TIMEOUT_MS)

            again = student.new_page()  # the link opened again in another tab
            open_lab(again, url)
            expect(again.get_by_text(ROW_DETAILS).first).to_be_visible(timeout=TIMEOUT_MS)

            stranger = browser.new_context().new_page()  # another student's browser
            open_lab(stranger, url)
            expect(stranger.get_by_text("No runs yet", exact=False)).to_be_visible(
                timeout=TIMEOUT_MS
            )
            expect(stranger.get_by_text(ROW_DETAILS)).to_have_count(0)
        finally:
            browser.close()
