"""Class mode in a real browser: a teacher starts a class, two students join through the link
(separate browsers, so separate identities), and one student's finished run appears on the
other's board. Chromium through Playwright against `streamlit run app.py`.

DROPOUT_DEMO_SCREENSHOTS=<dir> saves the teacher's page, a student's board and the presenter
view there.
"""

from __future__ import annotations

import os
import re

import pytest
from test_browser import app_env, launch_browser, require_browser, screenshot, streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

TIMEOUT_MS = 120_000  # a bound for what must happen, never a measured duration
TINY_BASE = "Tiny (test) (256 images · 3 epochs)"


def test_a_run_finished_by_one_student_appears_on_the_others_board(mnist_dir, tmp_path):
    chromium = require_browser()
    from playwright.sync_api import expect, sync_playwright

    shots = os.environ.get("DROPOUT_DEMO_SCREENSHOTS")
    env = app_env(tmp_path / "runs", mnist_dir)
    with (
        streamlit_server(env, tmp_path / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = launch_browser(pw, chromium)
        try:
            viewport = {"width": 1280, "height": 900}
            teacher = browser.new_context(viewport=viewport).new_page()
            errors: list[str] = []
            teacher.on("pageerror", lambda exc: errors.append(str(exc)))
            teacher.goto(f"{url}/class")
            teacher.get_by_text("Start a class (teacher)").wait_for(timeout=TIMEOUT_MS)
            teacher.get_by_text(TINY_BASE, exact=True).first.click()
            expect(teacher.get_by_text("= 30 runs (256 images, 3 epochs)").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            teacher.get_by_role("button", name="Start the class").click()
            heading = teacher.get_by_role("heading", name=re.compile(r"^Class [A-Z]{5}"))
            heading.wait_for(timeout=TIMEOUT_MS)
            code = re.search(r"class=([A-Z]{5})", teacher.url).group(1)
            assert heading.inner_text().strip().startswith(f"Class {code}")
            link = f"{url}/class?class={code}"
            expect(teacher.get_by_text(link).first).to_be_visible(timeout=TIMEOUT_MS)
            expect(teacher.get_by_role("img").first).to_be_visible(timeout=TIMEOUT_MS)  # QR

            students = []
            for _ in range(2):
                page = browser.new_context(viewport=viewport).new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(link)
                page.get_by_role("button", name="Run my cell").wait_for(timeout=TIMEOUT_MS)
                expect(page.get_by_text("0 of 30 runs finished").first).to_be_visible(
                    timeout=TIMEOUT_MS
                )
                students.append(page)
            first, second = students

            # Each student guesses before the results; the teacher's board counts both.
            second.get_by_text("p = 0.5", exact=True).first.click()
            first.get_by_text("p = 0.3", exact=True).first.click()
            expect(second.get_by_text("Your guess: p = 0.5").first).to_be_visible(
                timeout=TIMEOUT_MS
            )

            first.get_by_role("button", name="Run my cell").click()
            expect(first.get_by_text("Your cell: p = 0, seed 0").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            # The run finishes in the first student's browser and lands on the second's board.
            expect(second.get_by_text("1 of 30 runs finished").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            expect(second.get_by_text("Only p = 0 so far").first).to_be_visible(timeout=TIMEOUT_MS)
            # The second student's Start takes the next free cell, not the first one's.
            second.get_by_role("button", name="Run my cell").click()
            expect(second.get_by_text("Your cell: p = 0.1, seed 0").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            expect(first.get_by_text("2 of 30 runs finished").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            screenshot(second, "class_board", shots)

            teacher.goto(f"{link}&present=1")
            expect(teacher.get_by_text("2 of 30 runs finished").first).to_be_visible(
                timeout=TIMEOUT_MS
            )
            assert teacher.get_by_role("button", name="Run my cell").count() == 0
            bars = teacher.wait_for_function(
                """() => {
                  const plots = [...document.querySelectorAll('.js-plotly-plot')];
                  const bar = plots.map(p => p.data || []).flat().find(t => t.type === 'bar');
                  return bar && bar.y.reduce((a, b) => a + b, 0) === 2 ? bar.y : null;
                }""",
                timeout=TIMEOUT_MS,
            ).json_value()
            assert sorted(bars) == [0] * 8 + [1, 1]
            screenshot(teacher, "class_presenter", shots)
            assert not errors, errors
        finally:
            browser.close()
