"""Canvas drawing -> a 28x28 digit made the way MNIST was made.

MNIST digits are white ink on black, cropped to their bounding box, scaled (anti-aliased,
aspect kept) so the longer side is 20 px, and pasted into 28x28 with the intensity centre of
mass at pixel (14, 14) (0-based; real MNIST's centres of mass lie in [13.5, 14.5] because the
shift is a whole number of pixels). A drawing must go through the same steps or a model
trained on MNIST sees something it has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .data import normalize

BACKGROUNDS = ("auto", "black", "white")
SIDE = 28
BOX = 20  # MNIST's size-normalisation box
CENTRE = 14.0  # target centre of mass, 0-based pixel index

INK = 0.1  # ink intensity (0..1) that counts as drawn
MIN_EXTENT = 0.15  # bounding box's longer side / canvas's shorter side below this: too small
MIN_AREA = 0.002  # fraction of the canvas inked below this: too little ink
FULL = 0.8  # fraction of the canvas inked above this: covered, not a digit (bold digits reach 0.7)
# Stroke width / longer side of the digit, measured as 2 * area / perimeter of the ink > 0.5
# region: MNIST digits (upscaled 10x) have median 0.092 (10th-90th percentile 0.07-0.13).
# Canvas pens are often thicker relative to a small drawing, which fills loops (3 -> 8, 9 -> 8);
# strokes outside [STROKE_MIN, STROKE_MAX] are eroded or dilated to STROKE_TARGET.
STROKE_TARGET, STROKE_MIN, STROKE_MAX = 0.09, 0.06, 0.11
TRANSPARENT = 0.01  # auto: this share of (near) transparent pixels means an alpha background

MAX_PIXELS = 2048 * 2048  # the canvas is 280x280; anything far larger is refused, not processed

EMPTY_MESSAGE = "Draw a digit (0–9) on the canvas."
SMALL_MESSAGE = "That's too small to read. Draw one digit large, filling most of the canvas."
FULL_MESSAGE = "The canvas is almost completely covered. Clear it and draw one digit."
INVALID_MESSAGE = "This drawing can't be read ({why}). Clear the canvas and draw again."


class CanvasError(ValueError):
    """An image that is not a drawing this module can read; the message says why."""


@dataclass(frozen=True)
class CanvasResult:
    status: str  # "ok" | "empty" | "full" | "invalid"
    message: str  # for the user; "" when ok
    tensor: torch.Tensor | None  # (1, 1, 28, 28), normalised like the training data
    preview: np.ndarray | None  # (28, 28) uint8, white digit on black

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def as_pixels(image: object) -> np.ndarray:
    """Any array-like image -> uint8 pixels (H, W) or (H, W, C) with C in 1..4, or CanvasError.

    Accepted: uint8; other integers and bools holding 0..255 (bool: 0 or 255); floats in 0..1
    (scaled by 255) or 0..255. Refused with a reason: no pixels, more than MAX_PIXELS, other
    shapes, NaN or infinite values, values out of range, anything that is not numbers.
    """
    try:
        image = np.asarray(image)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise CanvasError(f"not an image: {exc}") from None
    if image.dtype.kind not in "biuf":
        raise CanvasError(f"not an image of numbers (dtype {image.dtype})")
    if image.ndim not in (2, 3) or (image.ndim == 3 and not 1 <= image.shape[2] <= 4):
        raise CanvasError(f"expected H×W, H×W×3 or H×W×4 pixels, got shape {image.shape}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise CanvasError("the image has no pixels")
    if height * width > MAX_PIXELS:
        raise CanvasError(f"{width}×{height} pixels is too large; at most {MAX_PIXELS:,} pixels")
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "b":
        return image.astype(np.uint8) * np.uint8(255)
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise CanvasError("it holds NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 255:
            raise CanvasError(f"pixel values must lie in 0..1 or 0..255, got {low:g}..{high:g}")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.rint(image.astype(np.float32) * np.float32(scale)).astype(np.uint8)
    low, high = int(image.min()), int(image.max())
    if low < 0 or high > 255:
        raise CanvasError(f"pixel values must lie in 0..255, got {low}..{high}")
    return image.astype(np.uint8)


def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """H×W, or H×W×C with C = 1 (grey), 2 (grey, alpha), 3 (RGB), 4 (RGBA) -> grey (H, W)
    float in 0..255 and alpha in 0..1 (or None)."""
    image = as_pixels(image)
    if image.ndim == 2:
        return image.astype(np.float32), None
    channels = image.shape[2]
    if channels <= 2:
        grey = image[..., 0].astype(np.float32)
    else:
        rgb = image[..., :3].astype(np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
    alpha = image[..., -1].astype(np.float32) / 255.0 if channels in (2, 4) else None
    return grey, alpha


def _border(a: np.ndarray) -> np.ndarray:
    width = max(1, min(a.shape) // 50)
    return np.concatenate(
        [a[:width].ravel(), a[-width:].ravel(), a[:, :width].ravel(), a[:, -width:].ravel()]
    )


def ink_intensity(image: np.ndarray, background: str = "auto") -> np.ndarray:
    """How much ink each pixel holds, (H, W) float32 in 0..1, whatever the canvas's colours.

    ``background`` is the colour the canvas shows where nothing is drawn. "auto": a canvas with
    transparent pixels has an alpha background (ink = opacity, whatever the stroke colour);
    an opaque one takes its background from the median of its border. An opaque canvas
    painted over almost entirely cannot be told from a blank one in "auto"; pass the
    background explicitly when it is known.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    grey, alpha = _channels(image)
    if background == "auto" and alpha is not None and (alpha < 0.03).mean() >= TRANSPARENT:
        return alpha
    if alpha is not None:  # composite over the background colour the canvas shows
        under = 255.0 if background == "white" else 0.0
        if background == "auto":
            under = 255.0 if np.median(_border(grey)) >= 128 else 0.0
        grey = alpha * grey + (1.0 - alpha) * under
    if background == "auto":
        bg = float(np.median(_border(grey)))
        background = "white" if bg >= 128 else "black"
    else:
        bg = 0.0 if background == "black" else 255.0
    if background == "black":
        ink = (grey - bg) / max(255.0 - bg, 1.0)
    else:
        ink = (bg - grey) / max(bg, 1.0)
    return np.clip(ink, 0.0, 1.0).astype(np.float32)


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _stroke_ratio(ink: np.ndarray) -> float:
    """Stroke width relative to the longer side: 2 * area / perimeter of ink > 0.5."""
    solid = np.pad(ink > 0.5, 1)
    area = solid.sum()
    if area == 0:
        return 0.0
    perimeter = (solid[1:] != solid[:-1]).sum() + (solid[:, 1:] != solid[:, :-1]).sum()
    return 2.0 * area / perimeter / max(ink.shape)


def _morph(ink: np.ndarray, steps: int, op) -> np.ndarray:
    """``steps`` grey erosions (op=np.minimum) or dilations (np.maximum), each ~1 px a side.

    Alternating a 3x3 square and a 3x3 cross approximates a round pen (an octagon).
    """
    pad = steps
    a = np.pad(ink, pad)
    for i in range(steps):
        out = a.copy()
        shifts = [(-1, 0), (1, 0), (0, -1), (0, 1)]
        if i % 2 == 0:
            shifts += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
        for dy, dx in shifts:
            out = op(out, np.roll(a, (dy, dx), axis=(0, 1)))
        a = out
    return a


def _normalise_stroke(ink: np.ndarray) -> np.ndarray:
    """Erode pens that are thick for the drawing's size, dilate thin ones, then re-crop."""
    ratio = _stroke_ratio(ink)
    if STROKE_MIN <= ratio <= STROKE_MAX:
        return ink
    # each step changes the width by about 2 px; the longer side changes with it
    steps = round(abs(ratio - STROKE_TARGET) * max(ink.shape) / 2)
    if steps == 0:
        return ink
    adjusted = _morph(ink, steps, np.minimum if ratio > STROKE_MAX else np.maximum)
    drawn = adjusted > INK
    if drawn.sum() < 0.25 * (ink > INK).sum():  # eroded away: keep the drawing as it is
        return ink
    return np.ascontiguousarray(adjusted[_bbox(drawn)])


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Cropped ink -> longer side BOX px, aspect kept, anti-aliased, peak 1."""
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL: (width, height)
    small = Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS)
    small = np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
    peak = small.max()
    return small / peak if peak > 0 else small


def _centre(small: np.ndarray) -> np.ndarray:
    """Paste into SIDE x SIDE shifted by whole pixels so the centre of mass is near CENTRE."""
    h, w = small.shape
    mass = small.sum()
    cy = (small.sum(axis=1) * np.arange(h)).sum() / mass
    cx = (small.sum(axis=0) * np.arange(w)).sum() / mass
    top = int(np.clip(np.floor(CENTRE - cy + 0.5), 0, SIDE - h))
    left = int(np.clip(np.floor(CENTRE - cx + 0.5), 0, SIDE - w))
    out = np.zeros((SIDE, SIDE), dtype=np.float32)
    out[top : top + h, left : left + w] = small
    return out


def preprocess(rgba: np.ndarray, background: str = "auto") -> CanvasResult:
    """Canvas image (HxWx4, HxWx3 or HxW; see :func:`as_pixels`) -> an MNIST-like digit, or
    why there is none: status "empty", "full" or "invalid" (an unreadable image), each with a
    message for the user. Only a wrong ``background`` raises."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    try:
        ink = ink_intensity(rgba, background)
    except CanvasError as exc:
        return CanvasResult("invalid", INVALID_MESSAGE.format(why=exc), None, None)
    drawn = ink > INK
    height, width = ink.shape
    coverage = float(drawn.mean())
    if coverage > FULL:
        return CanvasResult("full", FULL_MESSAGE, None, None)
    if not drawn.any():
        return CanvasResult("empty", EMPTY_MESSAGE, None, None)
    rows, cols = _bbox(drawn)
    extent = max(rows.stop - rows.start, cols.stop - cols.start) / min(height, width)
    if extent < MIN_EXTENT or coverage < MIN_AREA:
        return CanvasResult("empty", SMALL_MESSAGE, None, None)

    crop = np.ascontiguousarray(np.where(drawn, ink, 0.0)[rows, cols], dtype=np.float32)
    digit = _centre(_fit_box(_normalise_stroke(crop)))
    preview = np.round(digit * 255.0).astype(np.uint8)  # (28, 28), quantised like MNIST
    return CanvasResult("ok", "", normalize(torch.from_numpy(preview)), preview)
