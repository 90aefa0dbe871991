"""Canvas preprocessing: drawings become centred, size-normalised MNIST-like digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dropout_demo import canvas
from dropout_demo.canvas import preprocess
from dropout_demo.data import MEAN, STD

SIZE = 280
WHITE, BLACK, CLEAR = (255, 255, 255, 255), (0, 0, 0, 255), (0, 0, 0, 0)


def draw(strokes, ink=WHITE, background=CLEAR, size=SIZE, width=18) -> np.ndarray:
    """RGBA uint8 canvas with polyline strokes / ellipses, like the drawable canvas returns."""
    image = Image.new("RGBA", (size, size), background)
    pen = ImageDraw.Draw(image)
    for kind, points in strokes:
        if kind == "line":
            pen.line(points, fill=ink, width=width, joint="curve")
        else:
            pen.ellipse(points, outline=ink, width=width)
    return np.asarray(image)  # read-only, as np.asarray(PIL image) is in the canvas widget


def shifted(strokes, dx: int, dy: int):
    out = []
    for kind, points in strokes:
        xy = np.asarray(points, dtype=float).reshape(-1, 2) + np.array([dx, dy])
        out.append((kind, [tuple(p) for p in xy.tolist()]))
    return out


SEVEN = [("line", [(90, 70), (190, 70), (120, 220)])]
ZERO = [("ellipse", [(95, 60), (185, 220)])]
FOUR = [("line", [(170, 220), (170, 60), (80, 170), (200, 170)])]
DIGITS = {"seven": SEVEN, "zero": ZERO, "four": FOUR}


def aligned_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference, minimised over whole-pixel shifts of up to 1 px.

    Centring moves a digit by a whole number of pixels (as MNIST did), so the same strokes
    drawn elsewhere or at another size may land one pixel apart: that is the same digit.
    """
    a, b = a.astype(int), np.pad(b.astype(int), 1)
    return min(
        float(np.abs(a - b[1 + dy : 29 + dy, 1 + dx : 29 + dx]).mean())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def centre_of_mass(img: np.ndarray) -> tuple[float, float]:
    img = img.astype(np.float64)
    m = img.sum()
    return (img.sum(1) @ np.arange(28)) / m, (img.sum(0) @ np.arange(28)) / m


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_stroke_drawing_becomes_centred_mnist_digit(name):
    result = preprocess(draw(DIGITS[name]))
    assert result.ok and result.status == "ok" and result.message == ""
    assert result.tensor.shape == (1, 1, 28, 28) and result.tensor.dtype == torch.float32
    assert result.preview.shape == (28, 28) and result.preview.dtype == np.uint8
    cy, cx = centre_of_mass(result.preview)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    rows = np.flatnonzero(result.preview.any(1))
    cols = np.flatnonzero(result.preview.any(0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert max(height, width) == 20 and min(height, width) <= 20  # fits 20x20, longer side 20
    assert result.preview.max() == 255 and result.preview[0].max() == 0  # dark border like MNIST
    expected = (torch.from_numpy(result.preview).float() / 255 - MEAN) / STD
    assert torch.allclose(result.tensor[0, 0], expected)


def test_aspect_ratio_kept():
    tall = preprocess(draw([("line", [(140, 40), (140, 240)])]))  # a "1": 200 x 18 px
    rows = np.flatnonzero(tall.preview.any(1))
    cols = np.flatnonzero(tall.preview.any(0))
    assert rows[-1] - rows[0] + 1 == 20
    assert cols[-1] - cols[0] + 1 <= 4  # 18/218 * 20 ≈ 1.7 px, plus anti-aliasing


@pytest.mark.parametrize("opaque_ink, opaque_bg", [(WHITE, BLACK), (BLACK, WHITE)])
def test_colour_schemes_give_the_same_tensor(opaque_ink, opaque_bg):
    reference = preprocess(draw(SEVEN, ink=WHITE, background=BLACK))
    for ink, bg in [(opaque_ink, opaque_bg), (BLACK, CLEAR), (WHITE, CLEAR)]:
        result = preprocess(draw(SEVEN, ink=ink, background=bg))
        assert torch.allclose(result.tensor, reference.tensor, atol=1e-6)
    explicit = "black" if opaque_bg == BLACK else "white"
    result = preprocess(draw(SEVEN, ink=opaque_ink, background=opaque_bg), background=explicit)
    assert torch.allclose(result.tensor, reference.tensor, atol=1e-6)


def test_transparent_canvas_with_explicit_background():
    # white strokes on a transparent canvas shown over black; black strokes shown over white
    white = preprocess(draw(SEVEN, ink=WHITE, background=CLEAR), background="black")
    black = preprocess(draw(SEVEN, ink=BLACK, background=CLEAR), background="white")
    reference = preprocess(draw(SEVEN, ink=WHITE, background=BLACK))
    assert torch.allclose(white.tensor, reference.tensor, atol=1e-6)
    assert torch.allclose(black.tensor, reference.tensor, atol=1e-6)


def test_rgb_and_grey_inputs():
    rgba = draw(ZERO, ink=WHITE, background=BLACK)
    reference = preprocess(rgba)
    assert torch.allclose(preprocess(rgba[..., :3]).tensor, reference.tensor, atol=1e-6)
    assert torch.allclose(preprocess(rgba[..., 0]).tensor, reference.tensor, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DIGITS))
@pytest.mark.parametrize("dx, dy", [(-60, -40), (70, 50), (-80, 45), (3, 1)])
def test_off_centre_drawing_matches_centred(name, dx, dy):
    centred = preprocess(draw(DIGITS[name]))
    moved = preprocess(draw(shifted(DIGITS[name], dx, dy)))
    assert moved.ok
    # same strokes at another place on the pixel grid: equal up to resampling phase
    assert aligned_diff(moved.preview, centred.preview) < 2


def test_small_and_large_drawings_match_after_size_normalisation():
    big = preprocess(draw(ZERO, width=18))
    small_zero = [("ellipse", [(120, 110), (165, 190)])]  # about half the size, thinner pen
    small = preprocess(draw(small_zero, width=9))
    assert small.ok
    assert aligned_diff(big.preview, small.preview) < 4


def test_blank_canvas_is_empty():
    for image in (
        np.zeros((SIZE, SIZE, 4), np.uint8),  # transparent
        np.full((SIZE, SIZE, 4), 255, np.uint8),  # opaque white
        draw([], background=BLACK),
    ):
        result = preprocess(image)
        assert result.status == "empty" and not result.ok
        assert "Draw a digit" in result.message
        assert result.tensor is None and result.preview is None


def test_dot_and_stray_click_are_empty():
    dot = draw([("line", [(140, 140), (141, 140)])])  # a click: one pen-width blob
    stray = draw([("line", [(40, 230), (60, 238)])])  # a short flick in a corner
    faint = draw(SEVEN, ink=(255, 255, 255, 20))  # almost invisible ink
    for image in (dot, stray, faint):
        result = preprocess(image)
        assert result.status == "empty", result.status
        assert result.message and result.tensor is None


def test_small_but_real_digit_is_accepted():
    # The threshold sits between a stray mark and a small digit (70 px on a 280 px canvas).
    small_seven = [("line", [(120, 110), (165, 110), (135, 180)])]
    assert preprocess(draw(small_seven, width=8)).ok


def test_full_canvas():
    covered = np.full((SIZE, SIZE, 4), 255, np.uint8)  # white paint everywhere
    assert preprocess(covered, background="black").status == "full"
    scribble = draw(
        [("line", [(0, y), (SIZE, y + 5)]) for y in range(0, SIZE, 20)], width=18
    )  # mostly covered, gaps left transparent
    result = preprocess(scribble)
    assert result.status == "full" and not result.ok
    assert "covered" in result.message and result.tensor is None


def test_thresholds_are_relative_to_canvas_size():
    # the same drawing on a 140 px canvas (half the pixels per stroke) gives the same digit
    half = [(k, [(x / 2, y / 2) for x, y in pts]) for k, pts in SEVEN]
    small = preprocess(draw(half, size=140, width=9))
    big = preprocess(draw(SEVEN))
    assert small.ok
    assert aligned_diff(small.preview, big.preview) < 4


def test_input_validation():
    with pytest.raises(ValueError):
        preprocess(np.zeros((SIZE, SIZE, 4), np.uint8), background="grey")
    for bad in (np.zeros((SIZE, SIZE, 5), np.uint8), np.zeros((SIZE,), np.uint8), "a drawing"):
        with pytest.raises(canvas.CanvasError):
            canvas.ink_intensity(bad)


def seven_as(dtype) -> np.ndarray:
    """The white-on-transparent SEVEN in another dtype, same values (floats scaled to 0..1)."""
    image = draw(SEVEN)
    if np.dtype(dtype).kind == "f":
        return image.astype(dtype) / 255.0
    if np.dtype(dtype).kind == "b":
        return image > 127
    return image.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16, np.int32, bool])
def test_other_dtypes_with_pixel_values_read_like_uint8(dtype):
    result = preprocess(seven_as(dtype))
    reference = preprocess(draw(SEVEN) if dtype is not bool else (draw(SEVEN) > 127) * 255)
    assert result.ok, result.message
    assert aligned_diff(result.preview, reference.preview.astype(np.uint8)) < 2
    assert preprocess(draw(SEVEN).astype(np.float32)).ok  # floats in 0..255 too


def broadcast(shape, value=0, dtype=np.uint8) -> np.ndarray:
    """A huge image without the memory: every pixel is one broadcast value."""
    return np.broadcast_to(np.array(value, dtype=dtype), shape)


BAD_IMAGES = {
    "NaN pixels": np.where(draw(SEVEN) > 0, np.nan, 0.0),
    "infinite pixels": np.full((SIZE, SIZE, 4), np.inf),
    "negative floats": -np.ones((SIZE, SIZE, 4)),
    "floats over 255": np.full((SIZE, SIZE), 300.0),
    "int64 over 255": np.full((SIZE, SIZE, 4), 1000, np.int64),
    "negative ints": np.full((SIZE, SIZE, 4), -5, np.int64),
    "10000x10000 RGBA": broadcast((10_000, 10_000, 4), 255),
    "10000x10000 float": broadcast((10_000, 10_000), np.nan, np.float64),
    "five channels": np.zeros((SIZE, SIZE, 5), np.uint8),
    "channels first": np.zeros((4, SIZE, SIZE), np.uint8),
    "one dimension": np.zeros(SIZE * SIZE, np.uint8),
    "four dimensions": np.zeros((1, SIZE, SIZE, 4), np.uint8),
    "a scalar": np.uint8(7),
    "no pixels": np.zeros((0, 0, 4), np.uint8),
    "no rows": np.zeros((0, SIZE), np.uint8),
    "complex": np.zeros((SIZE, SIZE), np.complex64),
    "strings": np.full((3, 3), "x"),
    "objects": np.array([[object(), None]], dtype=object),
    "ragged list": [[1, 2, 3], [4]],
    "None": None,
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_unreadable_images_give_a_message_not_an_exception(name):
    result = preprocess(BAD_IMAGES[name])
    assert result.status == "invalid" and not result.ok
    assert result.message.startswith("This drawing can't be read (")
    assert result.tensor is None and result.preview is None
    for background in canvas.BACKGROUNDS:
        assert preprocess(BAD_IMAGES[name], background=background).status == "invalid"


ODD_BUT_READABLE = {
    "one pixel image, white": np.full((1, 1, 4), 255, np.uint8),
    "one pixel image, clear": np.zeros((1, 1, 4), np.uint8),
    "one pixel of ink": np.pad(np.full((1, 1, 4), 255, np.uint8), ((140, 139), (140, 139), (0, 0))),
    "one row": np.full((1, SIZE), 255, np.uint8),
    "one column of ink": np.pad(np.full((SIZE, 1), 255, np.uint8), ((0, 0), (140, 139))),
    "a line across": np.pad(np.full((3, SIZE), 255, np.uint8), ((140, 137), (0, 0))),
    "all white opaque": np.full((SIZE, SIZE, 4), 255, np.uint8),
    "all black opaque": draw([], background=BLACK),
    "all transparent": np.zeros((SIZE, SIZE, 4), np.uint8),
    "transparent white ink": draw(SEVEN, ink=(255, 255, 255, 0)),
    "grey + alpha": np.stack([draw(SEVEN)[..., 0], draw(SEVEN)[..., 3]], axis=-1),
    "grey, one channel": draw(SEVEN)[..., :1],
    "all True": np.ones((SIZE, SIZE), bool),
    "all False": np.zeros((SIZE, SIZE), bool),
    "2048x2048 blank": broadcast((2048, 2048), 0),
    "tall and thin": np.pad(np.full((400, 6, 4), 255, np.uint8), ((0, 0), (0, 1), (0, 0))),
}


@pytest.mark.parametrize("name", sorted(ODD_BUT_READABLE))
def test_odd_images_give_a_digit_or_a_message(name):
    for background in canvas.BACKGROUNDS:
        result = preprocess(ODD_BUT_READABLE[name], background=background)
        assert result.status in ("ok", "empty", "full", "invalid")
        if result.ok:
            assert result.tensor.shape == (1, 1, 28, 28) and torch.isfinite(result.tensor).all()
            assert result.preview.shape == (28, 28) and result.preview.dtype == np.uint8
        else:
            assert result.message and result.tensor is None


def test_the_views_canvas_cases():
    # The Draw view passes background="black": its canvas is white on black.
    assert preprocess(np.full((SIZE, SIZE, 4), 255, np.uint8), background="black").status == "full"
    assert preprocess(np.zeros((SIZE, SIZE, 4), np.uint8), background="black").status == "empty"
    dot = np.zeros((SIZE, SIZE, 4), np.uint8)
    dot[140, 140] = 255
    result = preprocess(dot, background="black")
    assert result.status == "empty" and "too small" in result.message


def test_thick_pen_on_a_small_digit_keeps_its_loop_open():
    # A 60x100 px zero drawn with a 26 px pen: the hole is ~8 px wide on the canvas and would
    # blur shut at 20x20 (a "0" read as a blob). Stroke normalisation thins it to MNIST widths.
    zero = [("ellipse", [(110, 90), (170, 190)])]
    result = preprocess(draw(zero, width=26))
    assert result.ok
    assert result.preview[12:16, 12:16].max() < 128  # the centre stays dark
    assert result.preview.max() == 255


def test_stroke_ratio_estimates_pen_width():
    bar = np.ones((200, 20), np.float32)  # a cropped straight stroke: 20 px wide, 200 px long
    assert canvas._stroke_ratio(bar) == pytest.approx(20 / 200, rel=0.1)
