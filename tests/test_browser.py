"""End to end in a real browser: `streamlit run app.py`, a tiny Lab run, then a drawn digit.

Needs Chromium (Debian: `apt-get install -y chromium`) and the MNIST files (DROPOUT_DEMO_DATA).
In CI (CI=true or DROPOUT_DEMO_REQUIRE_BROWSER=1) a missing browser is a failure.
DROPOUT_DEMO_SCREENSHOTS=<dir> saves a screenshot of each view as the test goes.

No fixed sleeps: every step waits for what it needs to see (Playwright's auto-waiting, `expect`
and `wait_for_function`), with timeouts generous enough for a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
INSTALL_HINT = "apt-get install -y chromium"
WAIT_MS = 120_000  # for anything the page must show; reached only when something is wrong

# A "2": top arc, diagonal, base line, in canvas pixels of the 280x280 canvas.
DIGIT_TWO = [
    [(85, 85), (110, 55), (150, 45), (185, 65), (190, 100), (170, 140), (85, 225), (205, 225)]
]
# A "7": top bar, then the long stroke down.
DIGIT_SEVEN = [[(70, 60), (210, 60), (160, 150), (125, 235)]]

# Max number of epochs any trace of the first Plotly chart on the page shows.
JS_MAX_EPOCHS = """() => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot._fullData) return 0;
  return Math.max(0, ...plot._fullData.map(t => t._length || 0));
}"""
# True when the first chart has at least `runs` runs (train + test trace each), all at `epochs`.
JS_RUNS_AT = """([runs, epochs]) => {
  const plot = document.querySelector('.js-plotly-plot');
  if (!plot || !plot._fullData || plot._fullData.length < 2 * runs) return false;
  return plot._fullData.every(t => (t._length || 0) >= epochs);
}"""
# True once Fabric has painted the canvas's black background: it takes pointer events from then on.
JS_CANVAS_READY = """c => {
  const d = c.getContext('2d').getImageData(0, 0, 1, 1).data;
  return d[3] === 255;
}"""
# True when every Plotly chart on the page is laid out at its container's current width.
JS_PLOTS_SETTLED = """() => [...document.querySelectorAll('.js-plotly-plot')].every(
  p => p._fullLayout && Math.abs(p._fullLayout.width - p.clientWidth) <= 2)"""
# Share of the drawing canvas's pixels that are ink (bright).
JS_INK = """c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 128) ink++;
  return ink / (d.length / 4);
}"""


def require_browser() -> str:
    """Chromium's path; otherwise fail (CI) or skip with how to install it."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        found, message = None, "Playwright is not installed: pip install -r requirements.txt"
    else:
        found = next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
        message = f"Chromium is not installed; install it with `{INSTALL_HINT}` (Debian/Ubuntu)"
    if found:
        return found
    strict = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get(
        "DROPOUT_DEMO_REQUIRE_BROWSER"
    ) in ("1", "true")
    if strict:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log_path: Path, timeout: float = 120.0) -> Iterator[str]:
    """`streamlit run app.py` on a free loopback port; yields its URL, stops it by PID."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy in {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def app_env(runs_dir: Path, data_dir: Path | None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DROPOUT_DEMO_EARLY_WORKER", None)  # a real server starts its worker early
    env.update(
        DROPOUT_DEMO_TEST_PRESETS="1",
        DROPOUT_DEMO_RUNS=str(runs_dir),
        # Should the Draw page ever need the starter model here, it takes seconds.
        DROPOUT_DEMO_STARTER="train_size=256,epochs=1,eval_size=500",
        PYTHONPATH=str(REPO),
    )
    if data_dir is not None:
        env["DROPOUT_DEMO_DATA"] = str(data_dir)
    env.update(extra)
    return env


def launch_browser(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])


def nav(page, title: str) -> None:
    """Switch page inside the app (same session, so this session's runs stay visible)."""
    page.get_by_role("link", name=title, exact=True).first.click(timeout=WAIT_MS)


def start_run(page, preset: str, next_run: str, compare: bool = False) -> None:
    """Pick a preset (at the default p = 0.5) and press Start run, or Compare with p = 0.

    ``next_run`` is the settings line the page shows once the preset has been taken in.
    """
    from playwright.sync_api import expect

    page.get_by_role("button", name="Start run").first.wait_for(timeout=WAIT_MS)
    page.get_by_text(preset, exact=True).first.click()
    expect(page.get_by_text(f"Next run: {next_run}").first).to_be_visible(timeout=WAIT_MS)
    label = "Compare with p = 0" if compare else "Start run"
    button = page.get_by_role("button", name=label).first
    expect(button).to_be_enabled(timeout=WAIT_MS)
    button.click()


def wait_for_epochs(page, epochs: int, timeout_s: float) -> int:
    page.wait_for_function(f"() => ({JS_MAX_EPOCHS})() >= {epochs}", timeout=timeout_s * 1000)
    return page.evaluate(JS_MAX_EPOCHS)


def wait_for_runs(page, runs: int, epochs: int, timeout_s: float) -> None:
    page.wait_for_function(JS_RUNS_AT, arg=[runs, epochs], timeout=timeout_s * 1000)


def ink(page) -> float:
    return page.locator("canvas.dc-canvas.lower-canvas").first.evaluate(JS_INK)


def wait_canvas_ready(page) -> None:
    lower = page.locator("canvas.dc-canvas.lower-canvas").first
    lower.wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        f"c => ({JS_CANVAS_READY})(c)", arg=lower.element_handle(), timeout=WAIT_MS
    )


def draw_strokes(page, strokes) -> None:
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=WAIT_MS)
    canvas.scroll_into_view_if_needed()
    wait_canvas_ready(page)  # Fabric takes pointer events once it has painted its background
    box = canvas.bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=10)
        page.mouse.up()


def predicted_digit(page) -> int:
    """The large digit the eval panel shows, after "MC prediction" has appeared."""
    page.get_by_text("MC prediction").first.wait_for(timeout=WAIT_MS)
    text = page.get_by_text("predicted digit ·").first.locator("xpath=..").inner_text()
    return int(text.strip()[0])


def screenshot(page, name: str, directory: str | None, height: int = 1800) -> None:
    if not directory:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    # Streamlit scrolls inside its own container, so a tall viewport shows the whole view.
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    page.mouse.move(0, height - 1)  # no hover tooltips in the picture
    page.evaluate("document.querySelector('[data-testid=\"stMain\"]')?.scrollTo(0, 0)")
    page.wait_for_function(JS_PLOTS_SETTLED, timeout=WAIT_MS)  # redrawn at the new size
    page.screenshot(path=str(Path(directory) / f"{name}.png"))
    page.set_viewport_size(size)


@pytest.mark.browser
def test_lab_run_then_drawn_digit(mnist_dir, tmp_path):
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
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)

            tiny = "p=0.50 · 256 imgs · 3 ep"
            start_run(page, "Tiny (test)", tiny)
            epochs = wait_for_epochs(page, 2, timeout_s=WAIT_MS / 1000)
            assert epochs >= 2
            start_run(page, "Tiny (test)", tiny, compare=True)  # adds the p = 0 run
            wait_for_runs(page, 2, 3, timeout_s=WAIT_MS / 1000)
            screenshot(page, "lab", shots)

            nav(page, "Draw")
            page.get_by_text("Draw — see what the network sees").wait_for(timeout=WAIT_MS)
            draw_strokes(page, DIGIT_TWO)
            digit = predicted_digit(page)
            assert 0 <= digit <= 9
            page.get_by_text("Mutual information").first.wait_for(timeout=WAIT_MS)
            page.get_by_text("Predictive entropy").first.wait_for(timeout=WAIT_MS)
            screenshot(page, "draw", shots)
            picked = page.get_by_test_id("stSelectbox").first.evaluate(
                "el => el.innerText + ' ' + [...el.querySelectorAll('input')].map(i => i.value)"
            )
            assert "This session" in picked, picked  # the Lab run is the model in use
            drawn = ink(page)
            assert drawn > 0.02

            # Comparing adds a picker above the canvas; the drawing must survive it.
            page.get_by_text("Compare with a second model").click()
            page.get_by_text("Compare with", exact=True).wait_for(timeout=WAIT_MS)
            page.wait_for_function(
                "() => document.body.innerText.split('predicted digit ·').length === 3",
                timeout=WAIT_MS,
            )
            assert ink(page) == pytest.approx(drawn, abs=0.005)
            page.get_by_role("button", name="Run one pass").click()
            page.get_by_text("Prediction of this pass").first.wait_for(timeout=WAIT_MS)

            # The Draw page's link opens the Learn page in the same session, at its section.
            page.get_by_role("link", name="What Monte-Carlo dropout measures").click()
            section = page.locator("#mc-dropout")
            section.wait_for(timeout=WAIT_MS)
            expect(section).to_be_in_viewport(timeout=WAIT_MS)
            assert page.url.split("?")[0].endswith("/learn")
            screenshot(page, "learn", shots)
            # Back on Draw: still this session (its runs are offered), and the page agrees with
            # the canvas (a fresh canvas after leaving the page: the prompt, no stale answer).
            nav(page, "Draw")
            page.get_by_text("Draw — see what the network sees").wait_for(timeout=WAIT_MS)
            wait_canvas_ready(page)
            # The page has settled on the canvas it shows: an answer or the prompt to draw.
            page.wait_for_function(
                "() => /MC prediction|Draw a digit on the black canvas/"
                ".test(document.body.innerText)",
                timeout=WAIT_MS,
            )
            picked = page.get_by_test_id("stSelectbox").first.evaluate(
                "el => [...el.querySelectorAll('input')].map(i => i.value).join(' ')"
            )
            assert "This session" in picked, picked
            shows_answer = page.get_by_text("MC prediction").count() > 0
            assert shows_answer == (ink(page) > 0.02)
            assert not errors, errors
        finally:
            browser.close()
