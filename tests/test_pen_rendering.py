"""bench/canvas_accuracy.py's pen rendering: MNIST test digits thinned to their centre lines
and redrawn with a round pen, as people draw on the canvas."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from line_helpers import one_pixel_wide

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.canvas_accuracy import (  # noqa: E402
    CANVAS,
    PEN_SIZES,
    PEN_WIDTHS,
    centre_line,
    draw_pen,
    pen_canvas,
    pen_render,
    skeletonize,
)
from dropout_demo.canvas import preprocess  # noqa: E402
from dropout_demo.training import thin  # noqa: E402


def ink_box(plane: np.ndarray, level: int = 128) -> tuple[int, int, int, int]:
    rows = np.flatnonzero((plane >= level).any(1))
    cols = np.flatnonzero((plane >= level).any(0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


@pytest.mark.parametrize("thickness", [3, 6, 11])
def test_a_thick_bar_thins_to_one_pixel_per_column(thickness):
    mask = np.zeros((40, 60), bool)
    mask[10 : 10 + thickness, 5:55] = True
    line = skeletonize(mask)
    assert (line[:, 12:48].sum(0) == 1).all()
    assert not (line & ~mask).any()


def test_digit_centre_lines_are_one_pixel_wide_and_keep_loops(mnist):
    for digit in mnist.test_images[:40].numpy():
        line = centre_line(digit)
        assert line.shape == (112, 112) and line.any()
        assert one_pixel_wide(line)
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(yy - 30, xx - 30)
    ring = skeletonize((r >= 12) & (r <= 22))
    assert not ring[30, 30] and ring[30, :30].any() and ring[30, 30:].any()
    assert one_pixel_wide(ring)


def test_the_bench_thinning_matches_the_training_thinning(mnist):
    # two implementations of the same parallel thinning (numpy here, torch in training)
    for digit in mnist.test_images[:20].numpy():
        mask = digit >= 128
        expected = thin(torch.from_numpy(mask).view(1, 1, 28, 28))[0, 0].numpy()
        assert np.array_equal(skeletonize(mask), expected)


@pytest.mark.parametrize("width", [14, 19, 24])
def test_the_pen_is_as_wide_as_asked(width):
    points = np.stack([np.full(100, 140.0), np.linspace(60, 220, 100)], axis=1)  # (y, x)
    plane = draw_pen(points, width)
    across = (plane[:, 100:180] >= 128).sum(0)  # inked rows per column, mid-line
    assert np.all(np.abs(across - width) <= 1), across
    top, bottom, left, right = ink_box(plane)
    assert right - left == pytest.approx(160 + width, abs=1)  # round caps: +width/2 each end
    assert bottom - top == pytest.approx(width, abs=1)


def test_digits_are_drawn_at_the_asked_size_anywhere_on_the_canvas(mnist):
    rng = np.random.default_rng(0)
    centres, widths, sizes = [], [], []
    for digit in mnist.test_images[:40].numpy():
        plane, width, size = pen_render(digit, rng)
        assert plane.shape == (CANVAS, CANVAS) and plane.dtype == np.uint8
        assert PEN_WIDTHS[0] <= width <= PEN_WIDTHS[1]
        assert PEN_SIZES[0] <= size <= PEN_SIZES[1]
        top, bottom, left, right = ink_box(plane)
        assert max(bottom - top, right - left) == pytest.approx(size, abs=2)
        centres.append(((top + bottom) / 2, (left + right) / 2))
        widths.append(width)
        sizes.append(size)
    centres = np.array(centres)
    assert centres.std(0).min() > 15  # off centre, not all in the middle
    assert np.ptp(widths) > 5 and np.ptp(sizes) > 60


def test_a_fixed_pen_and_size_and_the_canvas_image(mnist):
    digit = mnist.test_images[0].numpy()  # a 7
    plane, width, size = pen_render(digit, np.random.default_rng(1), width=16, size=200)
    assert (width, size) == (16, 200)
    top, bottom, left, right = ink_box(plane)
    assert max(bottom - top, right - left) == pytest.approx(200, abs=2)
    same = pen_render(digit, np.random.default_rng(1), width=16, size=200)[0]
    assert np.array_equal(plane, same)  # seeded

    rgba, style, _ = pen_canvas(digit, np.random.default_rng(2))
    assert rgba.shape == (CANVAS, CANVAS, 4) and rgba.dtype == np.uint8
    assert style in ("transparent", "white_on_black")
    result = preprocess(rgba, background="black")  # as the Draw page calls it
    assert result.ok and result.preview.max() == 255
