"""Accessibility in a real browser: axe-core on every page, and every control by keyboard.

axe-core comes from the npm registry, pinned in tests/a11y/package.json and package-lock.json
(`npm ci --prefix tests/a11y`; `make test` and `.ci/run` do it), and Playwright injects it into
each page. The pages are checked in the states a class sees: the Lab with two finished runs
(runs table, download buttons, charts), Sweep with finished cells, Draw with a digit drawn (the
predictions and the uncertainty probe), Learn, Inside with two models, and the Class page:
the landing page, a class's board and the presenter view.

Passing means, on every one of them:
- axe (all its rules, WCAG 2.x A/AA and best practices) finds no serious or critical violation;
- every chart has an accessible name that states its numbers (``st.plotly_chart(alt=...)``);
- Tab reaches every control: each button, link, input, slider, select and radio group.
  Left out of that walk, each with its function in reach of the keyboard:
  - parts that a widget keeps out of the tab order by design (WAI-ARIA's combobox and
    spinbutton patterns): a select box's "Open" arrow (the focused box opens with Alt+Down or
    Down) and a number input's −/+ buttons (the focused input steps with Up and Down);
  - Plotly's mode bar (zoom, pan, PNG: pointer gestures on the chart, rendered by Plotly as
    links without href that no key can focus); the chart's numbers are in its accessible name;
  - the drawing canvas itself: drawing is a pointer act; the uncertainty probe's built-in
    images (a letter, a scribble, noise) are picked by keyboard.

Moderate and minor axe findings are printed (pytest -s), not failed on. DROPOUT_DEMO_A11Y_REPORT
=<file> writes every finding per page as JSON.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from test_browser import (
    DIGIT_SEVEN,
    REPO,
    app_env,
    draw_strokes,
    launch_browser,
    nav,
    require_browser,
    start_run,
    streamlit_server,
    wait_for_runs,
)

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

AXE_DIR = REPO / "tests" / "a11y"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
AXE_HINT = "npm ci --prefix tests/a11y"
TIMEOUT_MS = 180_000  # a bound for what must happen, never a measured duration
FAIL_IMPACTS = ("serious", "critical")
TINY_RUN = "p=0.50 · 256 imgs · 3 ep"
TINY_BASE = "Tiny (test) (256 images · 3 epochs)"

# axe's findings, trimmed to what a report needs.
JS_AXE = """async () => {
  const r = await axe.run(document, {resultTypes: ['violations']});
  return r.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
    nodes: v.nodes.slice(0, 5).map(n => ({target: n.target, html: n.html.slice(0, 160),
                                          summary: n.failureSummary}))}));
}"""

# Every control a keyboard user must reach (through open shadow roots), as a key per control:
# a radio group counts once (Tab enters it, arrow keys move inside). Each gets a data-kb id.
JS_CONTROLS = """() => {
  const WIDGET_PARTS = '[data-testid=stNumberInputStepDown], [data-testid=stNumberInputStepUp], '
    + '[data-testid=stSelectbox] [aria-label=Open], [data-testid=stMultiSelect] [aria-label=Open]';
  const SEL = 'a[href], button, input:not([type=hidden]), select, textarea, [role=button], '
    + '[role=slider], [role=radio], [role=checkbox], [role=switch], [role=combobox], '
    + '[role=tab], [role=link], [role=menuitem], summary';
  const out = {};
  let next = 0;
  const untag = root => {
    for (const el of root.querySelectorAll('[data-kb]')) delete el.dataset.kb;
    for (const el of root.querySelectorAll('*')) if (el.shadowRoot) untag(el.shadowRoot);
  };
  untag(document);  // elements kept from the previous page must not keep its numbers
  const visible = el => {
    const s = getComputedStyle(el);
    if (s.visibility === 'hidden' || s.display === 'none') return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const walk = root => {
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) walk(el.shadowRoot);
      if (!el.matches(SEL)) continue;
      if (el.closest('.modebar')) continue;             // Plotly's mode bar: see the docstring
      if (el.matches('canvas')) continue;
      if (el.matches(WIDGET_PARTS)) continue;             // their widget's input takes the keys
      if (el.disabled || el.getAttribute('aria-disabled') === 'true') continue;
      if (el.closest('[aria-hidden=true], [inert]')) continue;
      if (!visible(el)) continue;
      el.dataset.kb = String(next++);
      const group = el.closest('[role=radiogroup]');
      const isRadio = el.matches('[role=radio], input[type=radio]');
      const key = isRadio && group ? 'group:' + (group.getAttribute('aria-label')
        || group.getAttribute('aria-labelledby') || group.id || el.name) : 'kb:' + el.dataset.kb;
      const label = (el.getAttribute('aria-label') || el.innerText || el.value || el.name
        || el.outerHTML).trim().replace(/\\s+/g, ' ').slice(0, 80);
      out[key] = out[key] || label;
    }
  };
  walk(document);
  return out;
}"""

# The key (see JS_CONTROLS) of the control that has the keyboard focus now, or null.
JS_FOCUSED = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  if (!el || el === document.body) return null;
  const group = el.closest('[role=radiogroup]');
  if (el.matches('[role=radio], input[type=radio]') && group)
    return 'group:' + (group.getAttribute('aria-label') || group.getAttribute('aria-labelledby')
      || group.id || el.name);
  for (let n = el; n; n = n.parentElement)
    if (n.dataset && n.dataset.kb) return 'kb:' + n.dataset.kb;
  return 'other:' + el.tagName;
}"""

# Focus the first element of the page (Streamlit's "Skip to main content" link).
JS_FOCUS_FIRST = """() => {
  window.scrollTo(0, 0);
  const first = document.querySelector('a[href], button, input, [tabindex="0"]');
  first.focus();
}"""

# Each chart's accessible name (st.plotly_chart's alt lands on its container as aria-label).
JS_CHART_NAMES = """() => [...document.querySelectorAll('[data-testid=stPlotlyChart]')].map(
  c => c.getAttribute('aria-label') || '')"""


def require_axe() -> Path:
    if AXE_JS.is_file():
        return AXE_JS
    message = f"axe-core is not installed: {AXE_HINT}"
    strict = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get(
        "DROPOUT_DEMO_REQUIRE_BROWSER"
    ) in ("1", "true")
    if strict:
        pytest.fail(message)
    pytest.skip(message)


def axe(page) -> list[dict]:
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE_JS))
    return page.evaluate(JS_AXE)


def keyboard_misses(page, limit: int = 400, trail: list | None = None) -> dict[str, str]:
    """The controls Tab never reaches: Tab from the top of the page until focus comes round
    again (or ``limit`` presses); ``trail`` gets each focused key."""
    controls = page.evaluate(JS_CONTROLS)
    page.evaluate(JS_FOCUS_FIRST)  # Tab from the top of the page
    first = page.evaluate(JS_FOCUSED)
    reached: list[str | None] = [first]
    for _ in range(min(limit, 3 * len(controls) + 20)):
        page.keyboard.press("Tab")
        key = page.evaluate(JS_FOCUSED)
        if key == first:
            break  # round the page once
        reached.append(key)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    if trail is not None:
        trail.extend((k, controls.get(k or "", "")) for k in reached)
    return {k: label for k, label in controls.items() if k not in set(reached)}


def charts_without_numbers(page) -> list[str]:
    names = page.evaluate(JS_CHART_NAMES)
    return [n or "(no accessible name)" for n in names if not re.search(r"\d", n)]


def check(page, name: str, report: dict, settle) -> None:
    """axe, the charts' names and the keyboard walk on the page as it is now."""
    settle()
    violations = axe(page)
    trail: list = []
    misses = keyboard_misses(page, trail=trail)
    unnamed = charts_without_numbers(page)
    report[name] = {
        "violations": violations,
        "keyboard_misses": misses,
        "tab_order": trail,
        "charts": len(page.evaluate(JS_CHART_NAMES)),
        "charts_without_numbers": unnamed,
    }
    worst = [f"{v['impact']} {v['id']} ×{v['count']}" for v in violations]
    print(f"{name}: axe {worst or 'no violations'}; keyboard misses {list(misses.values())}")


def settled(page, *texts: str, charts: int = 0):
    """A waiter: the given texts visible, at least ``charts`` charts drawn, no element stale
    (Streamlit marks the old elements of a rerun with data-stale until it finishes)."""
    from playwright.sync_api import expect

    def wait() -> None:
        for text in texts:
            expect(page.get_by_text(text).first).to_be_visible(timeout=TIMEOUT_MS)
        page.wait_for_function(
            """n => document.querySelectorAll('.js-plotly-plot').length >= n
              && !document.querySelector('[data-stale=true]')
              && !document.querySelector('[data-testid=stSkeleton]')""",
            arg=charts,
            timeout=TIMEOUT_MS,
        )

    return wait


def test_every_page_passes_axe_and_takes_the_keyboard(mnist_dir, tmp_path):
    chromium = require_browser()
    require_axe()
    from playwright.sync_api import expect, sync_playwright

    report: dict[str, dict] = {}
    env = app_env(tmp_path / "runs", mnist_dir)
    with (
        streamlit_server(env, tmp_path / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = launch_browser(pw, chromium)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)

            # Lab: two finished Tiny runs (p = 0.5 and p = 0): table, downloads, three charts.
            start_run(page, "Tiny (test)", TINY_RUN, compare=True)
            wait_for_runs(page, 2, 3, TIMEOUT_MS / 1000)
            page.wait_for_function(
                "() => document.querySelectorAll('tr[data-status=done]').length === 2",
                timeout=TIMEOUT_MS,
            )
            expect(page.get_by_role("button", name="Weights").nth(1)).to_be_visible()
            check(page, "Lab", report, settled(page, "Loss per epoch", charts=3))

            nav(page, "Learn")
            check(page, "Learn", report, settled(page, "Learn — what dropout does", charts=1))

            nav(page, "Inside")
            check(
                page,
                "Inside",
                report,
                settled(page, "fc1 activations over test images", "Zero activations", charts=4),
            )

            nav(page, "Draw")
            draw_strokes(page, DIGIT_SEVEN)
            check(
                page,
                "Draw",
                report,
                settled(page, "MC prediction:", "Uncertainty probe", charts=5),
            )

            # Sweep: the Lab's two runs are this grid's cells, so its charts have data at once.
            page.goto(f"{url}/sweep?preset=tiny&p=0,0.5&seeds=0")
            check(page, "Sweep", report, settled(page, "2 of 2 cells finished", charts=3))

            nav(page, "Class")
            check(page, "Class (landing)", report, settled(page, "Start a class (teacher)"))
            page.get_by_text(TINY_BASE, exact=True).first.click()
            expect(page.get_by_text("= 30 runs (256 images, 3 epochs)").first).to_be_visible()
            page.get_by_role("button", name="Start the class").click()
            page.get_by_role("heading", name=re.compile(r"^Class [A-Z]{5}")).wait_for()
            code = re.search(r"class=([A-Z]{5})", page.url).group(1)
            check(page, "Class board", report, settled(page, "Class board", charts=3))
            page.goto(f"{url}/class?class={code}&present=1")
            check(page, "Class presenter view", report, settled(page, "runs finished", charts=3))
        finally:
            browser.close()
            out = os.environ.get("DROPOUT_DEMO_A11Y_REPORT")
            if out:
                Path(out).write_text(json.dumps(report, indent=1, ensure_ascii=False))

    problems = []
    for name, found in report.items():
        for v in found["violations"]:
            if v["impact"] in FAIL_IMPACTS:
                where = "; ".join(f"{n['target']}: {n['summary']}" for n in v["nodes"])
                problems.append(f"{name}: {v['impact']} {v['id']} ({v['help']}): {where}")
        for label in found["keyboard_misses"].values():
            problems.append(f"{name}: Tab never reaches {label!r}")
        for chart in found["charts_without_numbers"]:
            problems.append(f"{name}: a chart's accessible name has no numbers: {chart!r}")
    assert len(report) == 8, sorted(report)
    assert not problems, "\n".join(problems)
