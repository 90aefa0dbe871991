"""End to end in a real browser: `streamlit run app.py`, a tiny Lab run, then a drawn digit.

Needs Chromium (Debian: `apt-get install -y chromium`) and the MNIST files (DROPOUT_DEMO_DATA).
In CI (CI=true or DROPOUT_DEMO_REQUIRE_BROWSER=1) a missing browser is a failure.
DROPOUT_DEMO_SCREENSHOTS=<dir> saves a screenshot of each view as the test goes.
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
def streamlit_server(env: dict[str, str], log_path: Path, timeout: float = 60.0) -> Iterator[str]:
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
    page.get_by_role("link", name=title, exact=True).first.click()


def start_run(page, preset: str, p: float | None = None, compare: bool = False) -> None:
    page.get_by_role("button", name="Start run").first.wait_for(timeout=60_000)
    page.get_by_text(preset, exact=True).first.click()
    if p is not None:
        set_slider(page, "Dropout rate p", p)
    page.wait_for_timeout(500)
    label = "Compare with p = 0" if compare else "Start run"
    page.get_by_role("button", name=label).first.click()


def set_slider(page, label: str, value: float) -> None:
    """Move a Streamlit slider with the keyboard until its thumb shows ``value``."""
    thumb = page.get_by_role("slider", name=label).first
    thumb.click()
    for _ in range(40):
        now = float(thumb.get_attribute("aria-valuenow"))
        if abs(now - value) < 1e-6:
            return
        thumb.press("ArrowRight" if now < value else "ArrowLeft")
        page.wait_for_timeout(50)
    raise AssertionError(f"could not set slider {label!r} to {value}")


def wait_for_epochs(page, epochs: int, timeout_s: float) -> int:
    page.wait_for_function(f"() => ({JS_MAX_EPOCHS})() >= {epochs}", timeout=timeout_s * 1000)
    return page.evaluate(JS_MAX_EPOCHS)


def draw_strokes(page, strokes) -> None:
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=30_000)
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # let Fabric finish mounting before the first pointer event
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
    page.get_by_text("MC prediction").first.wait_for(timeout=60_000)
    text = page.get_by_text("predicted digit ·").first.locator("xpath=..").inner_text()
    return int(text.strip()[0])


def screenshot(page, name: str, directory: str | None, height: int = 1800) -> None:
    if not directory:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    # Streamlit scrolls inside its own container, so a tall viewport shows the whole view.
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_timeout(1200)
    page.screenshot(path=str(Path(directory) / f"{name}.png"))
    page.set_viewport_size(size)


@pytest.mark.browser
def test_lab_run_then_drawn_digit(mnist_dir, tmp_path):
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("DROPOUT_DEMO_SCREENSHOTS")
    env = app_env(tmp_path / "runs", mnist_dir)
    started = time.monotonic()
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

            start_run(page, "Tiny (test)")
            epochs = wait_for_epochs(page, 2, timeout_s=90)
            assert epochs >= 2
            screenshot(page, "lab", shots)

            nav(page, "Draw")
            page.get_by_text("Draw — see what the network sees").wait_for(timeout=30_000)
            draw_strokes(page, DIGIT_TWO)
            digit = predicted_digit(page)
            assert 0 <= digit <= 9
            page.get_by_text("Mutual information").first.wait_for(timeout=10_000)
            page.get_by_text("Predictive entropy").first.wait_for(timeout=10_000)
            screenshot(page, "draw", shots)
            picked = page.get_by_test_id("stSelectbox").first.evaluate(
                "el => el.innerText + ' ' + [...el.querySelectorAll('input')].map(i => i.value)"
            )
            assert "This session" in picked, picked  # the Lab run is the model in use

            nav(page, "Learn")
            page.get_by_text("Inverted dropout: scaled in training").wait_for(timeout=30_000)
            screenshot(page, "learn", shots)
            assert not errors, errors
        finally:
            browser.close()
    assert time.monotonic() - started < 170
