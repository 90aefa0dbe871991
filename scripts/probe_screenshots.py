"""Screenshots of the uncertainty probe and the Inside page: docs/screenshots/{probe,inside}.png.

Trains two models that differ only in p (0 and 0.5; 10,000 images, 3 epochs, seed 0: about a
minute and a half on two cores), saves them in a temporary run store, runs the real app
(`streamlit run app.py`) in headless Chromium, draws a "1", and shoots the rotation probe (p = 0.5
beside p = 0) and the Inside page. Needs Chromium and the MNIST files:

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python scripts/probe_screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import test_browser as flow  # noqa: E402  (the browser test's helpers: server, drawing, nav)

from dropout_demo.config import TrainConfig  # noqa: E402
from dropout_demo.data import get_mnist  # noqa: E402
from dropout_demo.runs import RunStore  # noqa: E402
from dropout_demo.training import fit  # noqa: E402

WIDTH = 1280
ONE = [[(150, 50), (145, 140), (140, 235)]]  # a "1" on the 280x280 canvas


def train_pair(runs: RunStore) -> None:
    data = get_mnist()
    for p in (0.0, 0.5):  # p = 0.5 saved last: the newest, so the Draw page picks it
        config = TrainConfig(p=p, epochs=3, train_size=10_000, eval_size=1_000, seed=0)
        result = fit(config, data)
        runs.save(config, result.metrics, result.model, name="3-epoch model")


def settle(page, height: int) -> None:
    page.set_viewport_size({"width": WIDTH, "height": height})
    page.mouse.move(0, height - 1)  # no hover tooltips in the picture
    page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollTo(0, 0)")
    time.sleep(1.0)
    page.wait_for_function(flow.JS_PLOTS_SETTLED, timeout=flow.WAIT_MS)


def bottom_of(locator) -> float:
    box = locator.bounding_box()
    return box["y"] + box["height"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = parser.parse_args()
    chromium = next(filter(None, map(flow.shutil.which, flow.CHROMIUM_CANDIDATES)), None)
    if chromium is None:
        sys.exit(f"Chromium not found: {flow.INSTALL_HINT}")
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = RunStore(Path(tmp) / "runs")
        train_pair(runs)
        env = flow.app_env(runs.root, None)
        with (
            flow.streamlit_server(env, Path(tmp) / "streamlit.log") as url,
            sync_playwright() as pw,
        ):
            browser = flow.launch_browser(pw, chromium)
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.goto(url + "/draw")
            flow.draw_strokes(page, ONE)
            page.get_by_text("every pass is the same network").first.wait_for(timeout=flow.WAIT_MS)
            settle(page, 4200)
            top = page.get_by_text("Uncertainty probe").first.bounding_box()["y"] - 10
            bottom = bottom_of(page.get_by_text("Rotate from 0°").last) + 20
            page.screenshot(
                path=str(out / "probe.png"),
                clip={"x": 0, "y": top, "width": WIDTH, "height": bottom - top},
            )

            page.set_viewport_size({"width": WIDTH, "height": 900})
            flow.nav(page, "Inside")
            page.get_by_text("Zero activations").first.wait_for(timeout=flow.WAIT_MS)
            settle(page, 2000)
            bottom = bottom_of(page.get_by_text("The same 1,000 test images").first) + 20
            page.screenshot(
                path=str(out / "inside.png"),
                clip={"x": 0, "y": 0, "width": WIDTH, "height": bottom},
            )
            browser.close()
    print(f"wrote {out / 'probe.png'} and {out / 'inside.png'}")


if __name__ == "__main__":
    main()
