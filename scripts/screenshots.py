"""Screenshots of the three views for the README: docs/screenshots/{lab,draw,learn}.png.

Runs the real app (`streamlit run app.py`) in headless Chromium, trains the Overfitting lab at
p = 0.5 next to p = 0 (about a minute on two cores), draws a digit, compares the two models and
runs one stochastic pass. Needs Chromium and the MNIST files:

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python scripts/screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_browser as flow  # noqa: E402  (the browser test's helpers: server, drawing, nav)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the two runs")
    args = parser.parse_args()
    chromium = next(filter(None, map(flow.shutil.which, flow.CHROMIUM_CANDIDATES)), None)
    if chromium is None:
        sys.exit(f"Chromium not found: {flow.INSTALL_HINT}")
    data = os.environ.get("DROPOUT_DEMO_DATA")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        # The README shows the presets a visitor sees (no "Tiny (test)").
        env = flow.app_env(
            Path(tmp) / "runs", Path(data) if data else None, DROPOUT_DEMO_TEST_PRESETS="0"
        )
        with (
            flow.streamlit_server(env, Path(tmp) / "streamlit.log") as url,
            sync_playwright() as pw,
        ):
            browser = flow.launch_browser(pw, chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)

            started = time.monotonic()
            overfit = "p=0.50 · 1,000 imgs · 30 ep"
            flow.start_run(page, "Overfitting lab", overfit, compare=True)  # p = 0.5 and p = 0
            flow.wait_for_runs(page, 2, 30, timeout_s=args.timeout)
            print(f"two Overfitting-lab runs done in {time.monotonic() - started:.0f} s")
            page.wait_for_timeout(2500)  # the fragment's last redraw
            flow.screenshot(page, "lab", args.out, height=1500)

            flow.nav(page, "Draw")
            page.get_by_text("Draw — see what the network sees").wait_for(timeout=30_000)
            flow.draw_strokes(page, flow.DIGIT_TWO)
            print("predicted:", flow.predicted_digit(page))
            page.get_by_text("Compare with a second model").click()
            page.get_by_text("Compare with", exact=True).wait_for(timeout=30_000)
            page.get_by_role("button", name="Run one pass").click()
            page.get_by_text("Prediction of this pass").first.wait_for(timeout=30_000)
            flow.screenshot(page, "draw", args.out, height=2650)

            flow.nav(page, "Learn")
            page.get_by_text("Inverted dropout: scaled in training").wait_for(timeout=30_000)
            flow.screenshot(page, "learn", args.out, height=1500)
            browser.close()
    print("saved", ", ".join(f"{args.out}/{n}.png" for n in ("lab", "draw", "learn")))


if __name__ == "__main__":
    main()
