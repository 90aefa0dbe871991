"""The Lab as a person uses it, timed in a real browser: `streamlit run app.py` + Chromium.

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/app_latency.py [--log FILE]

Run from the repository root (any directory works when DROPOUT_DEMO_DATA is absolute). It
starts its own headless server on a free 127.0.0.1 port (runs go to a temporary
DROPOUT_DEMO_RUNS), stops it by PID at the end, and prints figures; it asserts nothing. All on
the Overfitting lab preset (1,000 images, 30 epochs, p = 0.5), each step in a new browser
session so that its charts hold only its own runs:

1. Start run -> first curve point in the loss chart (DOM polled every 50 ms), on the fresh
   server (cold: the click pays for loading MNIST into the process), then in a second session
   on the same server (warm). Each run is stopped once its point shows, to free the cores.
2. Compare with p = 0 in a third session (p = 0.5 and p = 0 start together) -> first points of
   both, then both at epoch 30; and the final test loss / accuracy the charts show.
3. While that pair trains, the server time of each live-panel tick: the fragment logs
   ``lab live panel: <n> runs, <ms> ms`` at DEBUG on the ``dropout_demo.ui.lab`` logger
   (the 2-run lines from the Compare click to both at epoch 30: the ticks, about one a
   second, plus the one full-page rerun of the click itself).

Streamlit's ``--logger.level=debug`` only sets Streamlit's own loggers, so it does not reach
that line; the server gets a ``sitecustomize.py`` (on PYTHONPATH, in the temp dir) that sends
the ``dropout_demo.ui.lab`` logger's DEBUG records, with their time, to the captured log.
Chromium: /usr/bin/chromium (Debian: `apt-get install -y chromium`). About a minute on 2 cores;
every wait is bounded (the whole script gives up after about 4 minutes).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/...` from anywhere

from tests.test_browser import (  # noqa: E402  (helpers shared with the browser test)
    CHROMIUM_CANDIDATES,
    app_env,
    launch_browser,
    streamlit_server,
)

PRESET = "Overfitting lab"
NEXT_RUN = "Next run: p=0.50 · 1,000 imgs · 30 ep"  # the caption under the buttons
EPOCHS = 30
POLL_MS = 50
BUDGET_S = 230.0  # the whole script, server start to last wait

# Number of runs of the Lab's loss chart with at least `epochs` points (train and test traces).
JS_LOSS_RUNS_AT = """([runs, epochs]) => {
  const plot = document.querySelector('.st-key-lab_loss_chart .js-plotly-plot');
  if (!plot || !plot._fullData) return false;
  return plot._fullData.filter(t => (t._length || 0) >= epochs).length >= 2 * runs;
}"""
# The last point of every trace of one chart: [[name, y], ...].
JS_LAST_POINTS = """key => {
  const plot = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  if (!plot || !plot.data) return [];
  return plot.data.map(t => [t.name, t.y && t.y.length ? t.y[t.y.length - 1] : null]);
}"""
SITECUSTOMIZE = '''"""bench/app_latency.py: the Lab's DEBUG records, with their time, to stderr."""
import logging
import sys

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("BENCH %(created).3f %(name)s: %(message)s"))
_log = logging.getLogger("dropout_demo.ui.lab")
_log.setLevel(logging.DEBUG)
_log.addHandler(_handler)
'''
TICK_LINE = re.compile(r"^BENCH (\d+\.\d+) \S+: lab live panel: (\d+) runs, ([\d.]+) ms", re.M)


class Budget:
    """The time left for the whole script; each wait takes min(its own cap, what is left)."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def ms(self, cap_s: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 1:
            raise TimeoutError(f"the benchmark ran past its {BUDGET_S:.0f} s budget")
        return min(cap_s, left) * 1e3


@dataclass
class Figures:
    server_start_s: float = 0.0
    page_load_s: list[float] = field(default_factory=list)  # goto -> Start run button, per step
    cold_first_s: float | None = None
    warm_first_s: float | None = None
    pair_first_s: float | None = None
    pair_done_s: float | None = None
    pair_window: tuple[float, float] | None = None  # Unix times: Compare click .. both at 30
    finals: dict[str, list] = field(default_factory=dict)
    page_errors: list[str] = field(default_factory=list)


def chromium_path() -> str:
    found = next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    if not found:
        sys.exit("Chromium not found (Debian/Ubuntu: apt-get install -y chromium)")
    return found


def open_lab(browser, url: str, budget: Budget, figures: Figures):
    """A new browser session on the Lab, Overfitting lab preset picked; returns its page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda exc: figures.page_errors.append(str(exc)))
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("button", name="Start run").first.wait_for(timeout=budget.ms(60))
    figures.page_load_s.append(time.perf_counter() - started)
    page.get_by_text(PRESET, exact=True).first.click()  # the default; a no-op unless changed
    page.get_by_text(NEXT_RUN).first.wait_for(timeout=budget.ms(30))
    return page


def click_until(page, label: str, runs: int, epochs: int, budget: Budget, cap_s: float) -> float:
    """Seconds from clicking ``label`` until the loss chart shows ``runs`` runs at ``epochs``."""
    button = page.get_by_role("button", name=label).first
    button.wait_for(timeout=budget.ms(30))
    started = time.perf_counter()
    button.click()
    wait_runs(page, runs, epochs, budget, cap_s)
    return time.perf_counter() - started


def wait_runs(page, runs: int, epochs: int, budget: Budget, cap_s: float) -> None:
    page.wait_for_function(
        JS_LOSS_RUNS_AT, arg=[runs, epochs], polling=POLL_MS, timeout=budget.ms(cap_s)
    )


def stop_runs(page, budget: Budget) -> None:
    """Press Stop on this session's run and wait until the table offers Remove instead."""
    page.get_by_role("button", name="Stop").first.click()
    page.get_by_role("button", name="Remove").first.wait_for(timeout=budget.ms(30))
    page.context.close()


def measure(url: str, budget: Budget, figures: Figures) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_browser(pw, chromium_path())
        try:
            page = open_lab(browser, url, budget, figures)
            figures.cold_first_s = click_until(page, "Start run", 1, 1, budget, 90)
            stop_runs(page, budget)

            page = open_lab(browser, url, budget, figures)
            figures.warm_first_s = click_until(page, "Start run", 1, 1, budget, 60)
            stop_runs(page, budget)

            page = open_lab(browser, url, budget, figures)
            clicked = time.time()
            figures.pair_first_s = click_until(page, "Compare with p = 0", 2, 1, budget, 60)
            wait_runs(page, 2, EPOCHS, budget, 150)
            figures.pair_done_s = time.time() - clicked
            figures.pair_window = (clicked, time.time())
            for key in ("lab_loss_chart", "lab_acc_chart"):
                figures.finals[key] = page.evaluate(JS_LAST_POINTS, key)
        finally:
            browser.close()


# ---------------------------------------------------------------------------- report
def stats_ms(values: list[float]) -> str:
    if not values:
        return "n = 0"
    p90 = statistics.quantiles(values, n=10, method="inclusive")[-1] if values[1:] else values[0]
    return (
        f"n = {len(values):3d}   median {statistics.median(values):6.1f}   "
        f"p90 {p90:6.1f}   max {max(values):6.1f}   mean {statistics.fmean(values):6.1f}"
    )


def ticks(log_text: str) -> list[tuple[float, int, float]]:
    """(Unix time, runs, ms) of every live-panel line in the server log."""
    return [(float(t), int(n), float(ms)) for t, n, ms in TICK_LINE.findall(log_text)]


def report(figures: Figures, log_text: str) -> None:
    def secs(value: float | None) -> str:
        return f"{value:7.2f} s" if value is not None else "      —"

    lines = ticks(log_text)
    window = figures.pair_window
    pair = [(t, ms) for t, n, ms in lines if n == 2 and window and window[0] <= t <= window[1]]
    single = [ms for _, n, ms in lines if n == 1]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(pair)]

    print("\nDropout Lab in the browser: Overfitting lab (1,000 images, 30 epochs, p = 0.5)")
    print(f"  server start (process -> /_stcore/health OK)   {secs(figures.server_start_s)}")
    loads = ", ".join(f"{s:.2f}" for s in figures.page_load_s)
    print(f"  page load (goto -> Start run shown), per step  {loads} s")
    print(f"  Start run -> first point, cold (loads MNIST)   {secs(figures.cold_first_s)}")
    print(f"  Start run -> first point, warm (same server)   {secs(figures.warm_first_s)}")
    print(f"  Compare with p = 0 -> first points of both     {secs(figures.pair_first_s)}")
    print(f"  Compare with p = 0 -> both at epoch {EPOCHS}         {secs(figures.pair_done_s)}")
    print("\nLive-panel server time per tick, ms (from the server's DEBUG log)")
    print(f"  2 runs, while the pair trains   {stats_ms([ms for _, ms in pair])}")
    if gaps:
        print(f"  2 runs, seconds between ticks   median {statistics.median(gaps):.2f}")
    print(f"  1 run (cold/warm steps)         {stats_ms(single)}")
    if figures.finals:
        print("\nFinal points shown in the charts")
        for key, title, fmt in (
            ("lab_loss_chart", "loss", ".4f"),
            ("lab_acc_chart", "acc.", ".2%"),
        ):
            for name, value in figures.finals.get(key, []):
                shown = "—" if value is None else format(value, fmt)
                print(f"  {title:5s} {name:30s} {shown}")
    if figures.page_errors:
        print("\nPage errors in the browser:")
        for error in figures.page_errors:
            print(f"  {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--log", type=Path, help="also keep the server's log here")
    args = parser.parse_args()
    data = os.environ.get("DROPOUT_DEMO_DATA")
    if not data or not Path(data).is_dir():
        sys.exit("Set DROPOUT_DEMO_DATA to the MNIST directory (e.g. ../shared/mnist)")

    budget = Budget(BUDGET_S)
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="app_latency_") as tmp:
        tmp = Path(tmp)
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = app_env(
            tmp / "runs",
            Path(data).resolve(),
            DROPOUT_DEMO_TEST_PRESETS="0",  # the preset list a person sees
            PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]),
        )
        log_path = tmp / "streamlit.log"
        started = time.perf_counter()
        try:
            # Stops the server by its PID on the way out, whatever happens inside.
            with streamlit_server(env, log_path) as url:
                figures.server_start_s = time.perf_counter() - started
                measure(url, budget, figures)
        finally:
            log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
            if args.log:
                args.log.write_text(log_text)
            report(figures, log_text)


if __name__ == "__main__":
    main()
