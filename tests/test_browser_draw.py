"""The Draw page's canvas in a real browser: every stroke counts, by mouse and by finger.

- A stroke may start anywhere on the canvas, corners included: the canvas component's toolbar
  used to float, transparent until hovered, over the top-right corner and swallow the start
  of a stroke there (the top of a 1 or a 7), on a touch screen every time.
- The canvas stays put while the starter model trains and when it arrives.
- On a phone (390 px wide, touch only) a finger draws a digit and gets a prediction, the page
  does not scroll under the finger, and nothing is wider than the screen.

Chromium through Playwright against `streamlit run app.py`; touches are Chromium's own touch
emulation (CDP ``Input.dispatchTouchEvent``). No fixed sleeps: every step waits for what it
needs to see, with bounds generous enough for a loaded 2-core machine.
"""

from __future__ import annotations

import itertools

import pytest
from test_browser import (
    DIGIT_SEVEN,
    JS_CANVAS_READY,
    JS_PLOTS_SETTLED,
    app_env,
    launch_browser,
    predicted_digit,
    require_browser,
    streamlit_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.mnist]

TIMEOUT_MS = 240_000  # a bound for what must happen (a loaded machine), never a measured duration
STARTER_TIMEOUT_MS = 600_000  # the observable starter below, on a machine under heavy load
CANVAS = 280
EDGE = 2  # px from the canvas's edges where the corner strokes start
# Each corner's stroke: starts EDGE px from both edges, then heads 60 px towards the centre.
CORNERS = {
    "top-left": (EDGE, EDGE, 1, 1),
    "top-right": (CANVAS - EDGE, EDGE, -1, 1),
    "bottom-left": (EDGE, CANVAS - EDGE, 1, -1),
    "bottom-right": (CANVAS - EDGE, CANVAS - EDGE, -1, -1),
}
# Small enough to be ready in a test, long enough to be seen training while the page is drawn.
OBSERVABLE_STARTER = "train_size=4096,epochs=12,eval_size=1000"
PHONE = {"width": 390, "height": 844}

UPPER = "canvas.dc-canvas.upper-canvas"  # takes the pointer; Playwright's CSS pierces the shadow
LOWER = "canvas.dc-canvas.lower-canvas"  # holds the finished strokes
# Brightness (red channel) of the lower canvas at a point in CSS px of the canvas.
JS_PIXEL = """(c, [x, y]) => {
  const s = c.width / c.getBoundingClientRect().width;
  const px = Math.min(c.width - 1, Math.floor(x * s));
  const py = Math.min(c.height - 1, Math.floor(y * s));
  return c.getContext('2d').getImageData(px, py, 1, 1).data[0];
}"""
# The element a pointer at a point of the canvas (CSS px) lands on, inside the component's shadow.
JS_HIT = """(c, [x, y]) => {
  const r = c.getBoundingClientRect();
  const hit = c.getRootNode().elementFromPoint(r.left + x, r.top + y);
  return hit === c ? 'canvas' : (hit ? hit.className || hit.tagName : 'nothing');
}"""
# From now on, every animation frame: where the canvas is relative to the page's title, and
# whether the starter's progress bar is on the page. Distinct observations collect in
# window.__canvasSpots as "training|dx|dy".
JS_FIND_CANVAS = """(kind) => {
  const host = [...document.querySelectorAll('*')].find(
    e => e.shadowRoot && e.shadowRoot.querySelector('canvas.upper-canvas'));
  return host ? host.shadowRoot.querySelector(`canvas.${kind}-canvas`) : null;
}"""
JS_WATCH_CANVAS = f"""() => {{
  window.__canvasSpots = {{}};
  const find = {JS_FIND_CANVAS};
  let canvas = null;
  const look = () => {{
    if (!canvas || !canvas.isConnected) canvas = find('upper');
    const title = document.querySelector('h1');
    if (canvas && title) {{
      const c = canvas.getBoundingClientRect();
      const t = title.getBoundingClientRect();
      const training = !!document.querySelector('[data-testid="stProgress"]');
      const dx = (c.left - t.left).toFixed(1), dy = (c.top - t.top).toFixed(1);
      const spot = `${{training}}|${{dx}}|${{dy}}`;
      window.__canvasSpots[spot] = (window.__canvasSpots[spot] || 0) + 1;
    }}
    requestAnimationFrame(look);
  }};
  requestAnimationFrame(look);
}}"""
# True once the canvas on the page now has no ink at a point (e.g. a fresh one after Clear).
JS_BLANK_AT = f"""([x, y]) => {{
  const c = ({JS_FIND_CANVAS})('lower');
  return !!c && ({JS_PIXEL})(c, [x, y]) < 128;
}}"""
JS_FITS = "() => document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth"
# What sticks out past the right edge of the screen (for the failure message).
JS_TOO_WIDE = """() => {
  const se = document.scrollingElement, out = [];
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.right > se.clientWidth + 1) out.push(`${e.tagName}[${e.dataset.testid || e.className}]`
      + ` right=${Math.round(r.right)}`);
  }
  return {scrollWidth: se.scrollWidth, clientWidth: se.clientWidth, wide: out.slice(0, 10)};
}"""


def wait_canvas_ready(page):
    """The canvas, once Fabric has painted its background (it takes pointers from then on),
    scrolled to the middle of the viewport (clear of Streamlit's fixed header)."""
    upper = page.locator(UPPER).first
    upper.wait_for(timeout=TIMEOUT_MS)
    lower = page.locator(LOWER).first
    page.wait_for_function(
        f"c => ({JS_CANVAS_READY})(c)", arg=lower.element_handle(), timeout=TIMEOUT_MS
    )
    upper.evaluate("c => c.scrollIntoView({block: 'center'})")
    return upper


def stroke_path(x0: float, y0: float, dx: int, dy: int) -> list[tuple[float, float]]:
    return [(x0 + dx * step, y0 + dy * step) for step in range(0, 61, 6)]


def mouse_stroke(page, points) -> None:
    box = page.locator(UPPER).first.bounding_box()
    x, y = points[0]
    page.mouse.move(box["x"] + x, box["y"] + y)  # arrives and presses at once: no hover first
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=2)
    page.mouse.up()


def densify(stroke, steps: int = 8) -> list[tuple[float, float]]:
    """A polyline as the many small moves a finger makes."""
    points = [
        (x0 + (x1 - x0) * t / steps, y0 + (y1 - y0) * t / steps)
        for (x0, y0), (x1, y1) in itertools.pairwise(stroke)
        for t in range(steps)
    ]
    return [*points, stroke[-1]]


def touch_stroke(page, cdp, points) -> None:
    box = page.locator(UPPER).first.bounding_box()
    at = [{"x": box["x"] + x, "y": box["y"] + y, "id": 1} for x, y in points]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": at[:1]})
    for point in at[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def wait_for_ink(page, x: float, y: float) -> None:
    page.wait_for_function(
        f"([c, p]) => ({JS_PIXEL})(c, p) > 128",
        arg=[page.locator(LOWER).first.element_handle(), [x, y]],
        timeout=TIMEOUT_MS,
    )


def ink_at(page, x: float, y: float) -> int:
    return page.locator(LOWER).first.evaluate(JS_PIXEL, [x, y])


def hit(page, x: float, y: float) -> str:
    return page.locator(UPPER).first.evaluate(JS_HIT, [x, y])


def assert_fits_the_screen(page) -> None:
    """No horizontal overflow once the charts have been laid out at the page's width."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(JS_PLOTS_SETTLED, timeout=TIMEOUT_MS)
    try:
        page.wait_for_function(JS_FITS, timeout=TIMEOUT_MS)
    except PlaywrightTimeout:
        pytest.fail(f"the page is wider than the screen: {page.evaluate(JS_TOO_WIDE)}")


def draw_in_every_corner(page, stroke) -> None:
    """A stroke from each corner, each seen on the canvas from its very first point."""
    for corner, (x, y, dx, dy) in CORNERS.items():
        assert hit(page, x, y) == "canvas", f"{corner}: a pointer there misses the canvas"
        stroke(stroke_path(x, y, dx, dy))
        wait_for_ink(page, x, y)
        assert ink_at(page, x + dx * 30, y + dy * 30) > 128, corner


def test_mouse_strokes_from_every_corner_register_and_the_canvas_stays_put(mnist_dir, tmp_path):
    """Drawn with the mouse while the starter model trains: each corner's stroke is on the
    canvas, the page reads the drawing once the model is ready, and the canvas never moved."""
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    env = app_env(tmp_path / "runs", mnist_dir, DROPOUT_DEMO_STARTER=OBSERVABLE_STARTER)
    with (
        streamlit_server(env, tmp_path / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = launch_browser(pw, chromium)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/draw")
            page.get_by_test_id("stProgress").first.wait_for(timeout=TIMEOUT_MS)
            wait_canvas_ready(page)
            page.evaluate(JS_WATCH_CANVAS)
            page.wait_for_function(
                "() => Object.keys(window.__canvasSpots).some(s => s.startsWith('true|'))",
                timeout=TIMEOUT_MS,
            )

            draw_in_every_corner(page, lambda points: mouse_stroke(page, points))
            # The model arrives; the page reruns and reads the drawing it still has.
            digit = predicted_digit_when_ready(page)
            assert 0 <= digit <= 9
            for corner, (x, y, _, _) in CORNERS.items():
                assert ink_at(page, x, y) > 128, f"{corner}: the stroke is gone after the rerun"

            # The starter's progress bar leaves the page when the rerun that shows the answer
            # finishes, which on a loaded machine can be after the answer is on screen.
            page.wait_for_function(
                "() => Object.keys(window.__canvasSpots).some(s => s.startsWith('false|'))",
                timeout=TIMEOUT_MS,
            )
            spots = page.evaluate("() => window.__canvasSpots")
            assert any(s.startswith("true|") for s in spots), spots  # seen while training
            assert any(s.startswith("false|") for s in spots), spots  # and once ready
            where = {s.split("|", 1)[1] for s in spots}
            assert len(where) == 1, f"the canvas moved: {spots}"
            assert not errors, errors
        finally:
            browser.close()


def predicted_digit_when_ready(page) -> int:
    page.get_by_text("MC prediction").first.wait_for(timeout=STARTER_TIMEOUT_MS)
    return predicted_digit(page)


def test_finger_draws_on_a_phone_from_every_corner_and_gets_a_prediction(mnist_dir, tmp_path):
    """A 390-px touch screen: strokes from every corner by touch, then a 7 that is read; the
    page does not scroll under the finger, and nothing is wider than the screen."""
    chromium = require_browser()
    from playwright.sync_api import expect, sync_playwright

    env = app_env(tmp_path / "runs", mnist_dir)
    with (
        streamlit_server(env, tmp_path / "streamlit.log") as url,
        sync_playwright() as pw,
    ):
        browser = launch_browser(pw, chromium)
        try:
            phone = browser.new_context(viewport=PHONE, has_touch=True, is_mobile=True)
            page = phone.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            cdp = phone.new_cdp_session(page)
            page.goto(f"{url}/draw")
            upper = wait_canvas_ready(page)
            assert_fits_the_screen(page)
            box = upper.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], box
            assert upper.evaluate("c => getComputedStyle(c).touchAction") == "none"

            draw_in_every_corner(page, lambda points: touch_stroke(page, cdp, points))
            # A long vertical swipe on the canvas draws; it does not scroll the page.
            touch_stroke(page, cdp, [(140, 20 + 12 * i) for i in range(21)])
            wait_for_ink(page, 140, 260)
            assert upper.bounding_box()["y"] == pytest.approx(box["y"], abs=0.5)

            prompt = page.get_by_text("Draw a digit on the black canvas")
            expect(prompt).to_be_hidden(timeout=TIMEOUT_MS)  # the page has read the drawing
            page.get_by_role("button", name="Clear").click()
            page.wait_for_function(JS_BLANK_AT, arg=[EDGE, EDGE], timeout=TIMEOUT_MS)
            expect(prompt).to_be_visible(timeout=TIMEOUT_MS)
            wait_canvas_ready(page)
            for stroke in DIGIT_SEVEN:
                touch_stroke(page, cdp, densify(stroke))
            digit = predicted_digit_when_ready(page)
            assert 0 <= digit <= 9
            page.get_by_text("Mutual information").first.wait_for(timeout=TIMEOUT_MS)

            assert_fits_the_screen(page)
            assert not errors, errors
        finally:
            browser.close()
