"""Uncertainty probes: transform one digit step by step and watch the model's answers.

Gal & Ghahramani (2016, Figure 4) rotate a "1" step by step: the prediction drifts while the
Monte-Carlo passes spread out, where softmax confidence alone stays high. :func:`sweep` does
that for any of :data:`TRANSFORMS` (one ``amount`` each) on a 28x28 image of ink intensities
in [0, 1] (white on black, like :attr:`CanvasResult.preview` / 255).

Cost: every step's image goes through the convolutional trunk and fc1 in one batch; the T
dropout masks are drawn once (as :func:`dropout_demo.inference.mc_predict` draws them, from a
private generator) and applied to all steps in one (S, T, 128) product before fc2. Sharing
the masks across steps (common random numbers) means the curves move only because the image
does, and step i gives exactly ``mc_predict(model, image_i, T, seed)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import MEAN, STD
from .inference import MAX_SAMPLES, mc_predict, predict
from .model import SimpleCNN, dropout_layers, eval_mode

SIDE = 28
DISAGREE_NATS = 0.1  # mutual information from which the reading says the passes disagree
TOP_CLASSES = 3
MAX_STEPS = 200


@dataclass(frozen=True)
class Transform:
    """One way to change the image, controlled by one ``amount`` from ``lo`` to ``hi``."""

    name: str
    label: str  # for a selector
    axis: str  # x-axis title
    lo: float
    hi: float
    unit: str  # appended to an amount in text ("°", " px", ...)
    decimals: int = 0

    def fmt(self, amount: float) -> str:
        value = f"{amount:+.{self.decimals}f}" if self.lo < 0 else f"{amount:.{self.decimals}f}"
        return f"{value}{self.unit}"


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("rotate", "Rotate", "rotation (degrees, anticlockwise)", 0.0, 180.0, "°"),
        Transform("shift", "Shift right", "shift to the right (pixels)", 0.0, 10.0, " px", 1),
        Transform(
            "thicken",
            "Thicken / thin",
            "pen change (pixels per side; negative thins)",
            -1.0,
            3.0,
            " px",
            1,
        ),
        Transform("noise", "Add noise", "noise level (std of pixel noise)", 0.0, 1.0, "", 2),
        Transform("blur", "Blur", "blur (Gaussian sigma, pixels)", 0.0, 3.0, " px", 1),
    )
}


# ---------------------------------------------------------------- transforms
def _as_ink(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 28x28 ink image (any float/uint8 array) -> float32 torch (28, 28) in [0, 1]."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.size != SIDE * SIDE:
        raise ValueError(f"expected one 28x28 image, got shape {a.shape}")
    a = a.reshape(SIDE, SIDE)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError("the image holds NaN or infinite values")
    return torch.from_numpy(np.clip(a, 0.0, 1.0))


def _amounts(amounts) -> np.ndarray:
    a = np.atleast_1d(np.asarray(amounts, dtype=np.float64))
    if a.ndim != 1 or not np.isfinite(a).all():
        raise ValueError("amounts must be finite numbers")
    return a


def _affine(ink: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """(28, 28) image resampled (bilinear, zeros outside) under S affine maps -> (S, 28, 28).

    ``thetas`` (S, 2, 3) map output to input positions in affine_grid's [-1, 1] coordinates.
    """
    s = thetas.shape[0]
    grid = F.affine_grid(thetas, (s, 1, SIDE, SIDE), align_corners=False)
    batch = ink.expand(s, 1, SIDE, SIDE)
    return F.grid_sample(batch, grid, mode="bilinear", align_corners=False)[:, 0]


def _rotate(ink: torch.Tensor, degrees: np.ndarray) -> torch.Tensor:
    # Anticlockwise on screen (rows grow downwards): output (x, y) samples the input at the
    # point rotated clockwise, about the image centre.
    t = torch.from_numpy(np.deg2rad(degrees)).float()
    cos, sin = torch.cos(t), torch.sin(t)
    zero = torch.zeros_like(t)
    thetas = torch.stack(
        [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
    )  # (S, 2, 3)
    return _affine(ink, thetas)


def _shift(ink: torch.Tensor, pixels: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(pixels).float() * (2.0 / SIDE)  # pixels -> grid units
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    thetas = torch.stack(
        [torch.stack([one, zero, -t], 1), torch.stack([zero, one, zero], 1)], 1
    )  # (S, 2, 3): output x samples input x - shift
    return _affine(ink, thetas)


def _cross_step(x: torch.Tensor, dilate: bool) -> torch.Tensor:
    """One grey dilation (max) or erosion (min) with a 3x3 cross, zeros outside the image."""
    p = F.pad(x, (1, 1, 1, 1))
    parts = torch.stack(
        [p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]
    )  # (5, 28, 28): centre, up, down, left, right
    return parts.amax(0) if dilate else parts.amin(0)


def _thicken(ink: torch.Tensor, pixels: np.ndarray) -> torch.Tensor:
    """Positive: dilate by that many pixels per side; negative: erode. A fractional amount
    blends the two nearest whole steps, so the sweep changes smoothly."""
    lo, hi = math.floor(pixels.min()), math.ceil(pixels.max())
    levels = {0: ink}
    for k in range(1, max(hi, 0) + 1):
        levels[k] = _cross_step(levels[k - 1], dilate=True)
    for k in range(-1, min(lo, 0) - 1, -1):
        levels[k] = _cross_step(levels[k + 1], dilate=False)
    out = []
    for a in pixels:
        k = math.floor(a)
        frac = float(a - k)
        img = levels[k] if frac == 0 else (1 - frac) * levels[k] + frac * levels[k + 1]
        out.append(img)
    return torch.stack(out)


def _noise(ink: torch.Tensor, levels: np.ndarray, seed: int) -> torch.Tensor:
    # One fixed noise field, scaled by the level: the sweep shows more of the same noise.
    field = np.random.default_rng(seed).standard_normal((SIDE, SIDE)).astype(np.float32)
    scaled = torch.from_numpy(levels).float()[:, None, None] * torch.from_numpy(field)
    return (ink + scaled).clamp(0.0, 1.0)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(ink: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    out = []
    for sigma in sigmas:
        if sigma <= 0:
            out.append(ink.clone())
            continue
        k = _gaussian_kernel(float(sigma))
        r = k.numel() // 2
        x = ink[None, None]
        x = F.conv2d(F.pad(x, (r, r, 0, 0)), k.view(1, 1, 1, -1))  # rows, zeros outside
        x = F.conv2d(F.pad(x, (0, 0, r, r)), k.view(1, 1, -1, 1))  # columns
        out.append(x[0, 0])
    return torch.stack(out)


def transform_batch(image, name: str, amounts, seed: int = 0) -> np.ndarray:
    """The 28x28 ink image under transform ``name`` at each amount: (S, 28, 28) float32 in
    [0, 1]. ``seed`` only matters for "noise". An amount of 0 gives the image back."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    ink = _as_ink(image)
    a = _amounts(amounts)
    with torch.inference_mode():
        if name == "rotate":
            out = _rotate(ink, a)
        elif name == "shift":
            out = _shift(ink, a)
        elif name == "thicken":
            out = _thicken(ink, a)
        elif name == "noise":
            out = _noise(ink, a, seed)
        else:
            out = _blur(ink, a)
        out = out.clamp(0.0, 1.0)
        out[torch.from_numpy(a == 0)] = ink  # exactly the image, not a resampled copy
    return out.numpy().astype(np.float32, copy=False)


def transform(image, name: str, amount: float, seed: int = 0) -> np.ndarray:
    """One transformed 28x28 image; see :func:`transform_batch`."""
    return transform_batch(image, name, [amount], seed)[0]


def amounts_for(name: str, steps: int) -> np.ndarray:
    """``steps`` evenly spaced amounts over the transform's whole range."""
    if not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be from 2 to {MAX_STEPS}, got {steps}")
    t = TRANSFORMS[name]
    return np.linspace(t.lo, t.hi, steps)


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """(S, 28, 28) ink in [0, 1] -> (S, 1, 28, 28) normalised like the training data."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)).reshape(-1, 1, SIDE, SIDE)
    return (x - MEAN) / STD


# ---------------------------------------------------------------- built-in probes
def _segments_ink(strokes: list[np.ndarray], width: float, size: int = 280) -> np.ndarray:
    """Polylines (points in 0..1 canvas units) drawn with a round pen ``width`` px wide on a
    ``size`` x ``size`` canvas, anti-aliased: ink intensity (size, size) in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dist = np.full((size, size), np.inf, dtype=np.float32)
    for pts in strokes:
        pts = np.asarray(pts, dtype=np.float32) * size
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            dx, dy = x1 - x0, y1 - y0
            length2 = dx * dx + dy * dy
            if length2 == 0:
                t = np.zeros_like(xx)
            else:
                t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / length2, 0.0, 1.0)
            d = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
            np.minimum(dist, d, out=dist)
    return np.clip(width / 2 - dist + 0.5, 0.0, 1.0)


def _as_digit(canvas_ink: np.ndarray) -> np.ndarray:
    """A canvas-sized ink image through the Draw page's own preprocessing -> (28, 28) ink."""
    from .canvas import preprocess

    result = preprocess(canvas_ink, background="black")
    if not result.ok:
        raise ValueError(f"built-in probe is not drawable: {result.message}")
    return result.preview.astype(np.float32) / 255.0


def _one() -> np.ndarray:
    # A hand-drawn "1": a short upstroke into a slightly slanted downstroke.
    return _as_digit(_segments_ink([np.array([[0.40, 0.25], [0.55, 0.12], [0.50, 0.88]])], 22))


def _letter_a() -> np.ndarray:
    strokes = [
        np.array([[0.22, 0.88], [0.50, 0.12], [0.78, 0.88]]),
        np.array([[0.33, 0.60], [0.67, 0.60]]),
    ]
    return _as_digit(_segments_ink(strokes, 20))


def _scribble() -> np.ndarray:
    # A seeded smooth random walk: curvy, self-crossing, nothing like a digit.
    rng = np.random.default_rng(7)
    angle, pos, pts = 0.0, np.array([0.3, 0.5]), []
    for _ in range(60):
        angle += rng.normal(0.0, 0.6)
        pos = np.clip(pos + 0.045 * np.array([math.cos(angle), math.sin(angle)]), 0.12, 0.88)
        pts.append(pos.copy())
    return _as_digit(_segments_ink([np.array(pts)], 16))


def _noise_probe() -> np.ndarray:
    # Uniform noise in a blob the size of a digit (a whole square of noise would be
    # an even stranger input); not put through preprocessing, which would call it covered.
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    blob = np.hypot(yy - 13.5, xx - 13.5) < 10
    return (rng.random((SIDE, SIDE)) * blob).astype(np.float32)


@dataclass(frozen=True)
class Probe:
    name: str
    label: str
    is_digit: bool


PROBES: dict[str, Probe] = {
    p.name: p
    for p in (
        Probe("one", 'A drawn "1" (made in code)', True),
        Probe("letter", 'The letter "A"', False),
        Probe("scribble", "A scribble", False),
        Probe("noise", "Random noise", False),
    )
}
_MAKERS = {"one": _one, "letter": _letter_a, "scribble": _scribble, "noise": _noise_probe}


@cache
def _probe_cached(name: str) -> np.ndarray:
    image = _MAKERS[name]()
    image.setflags(write=False)
    return image


def probe_image(name: str) -> np.ndarray:
    """A built-in probe as a 28x28 ink image in [0, 1] (a copy; generated in code)."""
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; known: {', '.join(PROBES)}")
    return _probe_cached(name).copy()


# ---------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class Sweep:
    """Answers of one model over S steps of one transform, T Monte-Carlo passes each."""

    transform: str
    amounts: np.ndarray  # (S,)
    images: np.ndarray  # (S, 28, 28) ink in [0, 1]
    eval_probs: np.ndarray  # (S, 10) dropout off
    samples: np.ndarray  # (S, T, 10) every pass's probabilities
    mc_mean: np.ndarray  # (S, 10)
    mc_std: np.ndarray  # (S, 10)
    entropy: np.ndarray  # (S,) predictive entropy H[mean], nats
    expected_entropy: np.ndarray  # (S,) mean over passes of H[p_t], nats
    mutual_info: np.ndarray  # (S,) entropy - expected_entropy, >= 0
    top_classes: tuple[int, ...]  # the classes worth drawing, most prominent first
    T: int
    p: float

    @property
    def eval_prediction(self) -> np.ndarray:
        return self.eval_probs.argmax(axis=1)

    @property
    def mc_prediction(self) -> np.ndarray:
        return self.mc_mean.argmax(axis=1)

    @property
    def has_spread(self) -> bool:
        return self.p > 0


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis, with 0 log 0 = 0."""
    probs = np.asarray(probs, dtype=np.float64)
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=-1)


def _mean_over_passes(values: np.ndarray) -> np.ndarray:
    """Mean over axis 1 computed around the first pass, so identical passes give it exactly
    (a p = 0 model's spread and mutual information come out as exact zeros)."""
    first = values[:, :1]
    return values[:, 0] + (values - first).mean(axis=1)


def uncertainty(samples: np.ndarray) -> dict[str, np.ndarray]:
    """(S, T, 10) pass probabilities -> mean, std (S, 10); entropy, expected entropy and
    mutual information (S,), as :func:`dropout_demo.inference.mc_predict` computes them."""
    samples = np.asarray(samples, dtype=np.float64)
    mean = _mean_over_passes(samples)
    std = np.sqrt(np.maximum(_mean_over_passes((samples - mean[:, None]) ** 2), 0.0))
    h = entropy(mean)
    expected = _mean_over_passes(entropy(samples)[..., None])[:, 0]
    return {
        "mean": mean,
        "std": std,
        "entropy": h,
        "expected_entropy": expected,
        "mutual_info": np.maximum(h - expected, 0.0),
    }


def top_classes(eval_probs: np.ndarray, mc_mean: np.ndarray, k: int = TOP_CLASSES) -> tuple:
    """The ``k`` classes with the highest peak probability anywhere in the sweep (eval or MC
    mean), highest first: the ones a reader needs to follow the prediction's drift."""
    peak = np.maximum(eval_probs.max(axis=0), mc_mean.max(axis=0))
    return tuple(int(c) for c in np.argsort(-peak, kind="stable")[:k])


def _answers(
    model: nn.Module, x: torch.Tensor, samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(S, 1, 28, 28) -> eval probabilities (S, 10) and T pass probabilities (S, T, 10),
    float64; the T masks are shared by all steps."""
    layers = dropout_layers(model)
    if not (isinstance(model, SimpleCNN) and layers == [model.dropout]):
        # Any other model: inference's own paths, the Monte-Carlo one a step at a time.
        passes = [mc_predict(model, xi, samples=samples, seed=seed).samples for xi in x]
        return predict(model, x).double().numpy(), np.stack(passes)
    p = model.p
    with torch.inference_mode(), eval_mode(model):
        feats = model.features(x)  # (S, 128): trunk and fc1 once for eval and every pass
        eval_logits = model.fc2(feats)  # (S, 10), what predict() computes
        if p > 0:
            gen = torch.Generator().manual_seed(seed)
            dropped = torch.rand((samples, feats.shape[1]), generator=gen) < p  # (T, 128)
            keep = (~dropped).to(feats.dtype) / (1.0 - p)  # inverted dropout's scale
            logits = model.fc2(feats[:, None, :] * keep[None])  # (S, T, 128) -> (S, T, 10)
        else:
            logits = eval_logits[:, None, :].expand(-1, samples, -1)  # every pass the same
    eval_probs = F.softmax(eval_logits.double(), dim=-1).numpy()
    return eval_probs, F.softmax(logits.double(), dim=-1).numpy()


def sweep(
    model: nn.Module,
    image,
    transform_name: str,
    steps: int = 30,
    samples: int = 100,
    seed: int = 0,
    amounts=None,
) -> Sweep:
    """Eval-mode and Monte-Carlo answers of ``model`` to ``image`` (28x28 ink in [0, 1]) under
    ``steps`` amounts of one transform (or the given ``amounts``), T = ``samples`` passes."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be a whole number from 1 to {MAX_SAMPLES}")
    a = amounts_for(transform_name, steps) if amounts is None else _amounts(amounts)
    if len(a) > MAX_STEPS:
        raise ValueError(f"at most {MAX_STEPS} steps, got {len(a)}")
    images = transform_batch(image, transform_name, a, seed=seed)  # (S, 28, 28)
    x = to_model_input(images)  # (S, 1, 28, 28)
    eval_probs, passes = _answers(model, x, samples, seed)  # (S, 10), (S, T, 10)
    stats = uncertainty(passes)
    p = max((float(layer.p) for layer in dropout_layers(model)), default=0.0)
    return Sweep(
        transform=transform_name,
        amounts=a,
        images=images,
        eval_probs=eval_probs,
        samples=passes,
        mc_mean=stats["mean"],
        mc_std=stats["std"],
        entropy=stats["entropy"],
        expected_entropy=stats["expected_entropy"],
        mutual_info=stats["mutual_info"],
        top_classes=top_classes(eval_probs, stats["mean"]),
        T=samples,
        p=p,
    )


# ---------------------------------------------------------------- reading it
def _path(predictions: np.ndarray, limit: int = 5, min_run: int = 2) -> str:
    """The prediction's drift, e.g. "1 → 5 → 7": consecutive distinct predictions, leaving
    out blips shorter than ``min_run`` steps (at most ``limit`` shown)."""
    runs: list[list[int]] = []  # [class, length]
    for c in (int(v) for v in predictions):
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    kept = [c for c, n in runs if n >= min_run] or [runs[0][0]]
    path = [kept[0]]
    for c in kept[1:]:
        if c != path[-1]:
            path.append(c)
    text = " → ".join(str(c) for c in path[:limit])
    return text + (" → …" if len(path) > limit else "")


def reading(s: Sweep, threshold: float = DISAGREE_NATS) -> str:
    """One sentence that says what the sweep shows."""
    t = TRANSFORMS[s.transform]
    pred = s.mc_prediction if s.has_spread else s.eval_prediction
    drift = _path(pred)
    moves = f"the prediction goes {drift}" if "→" in drift else f"the prediction stays {drift}"
    if not s.has_spread:
        conf = float(s.eval_probs.max(axis=1).min())
        return (
            f"p = 0: every pass is the same network, so there is no spread and no mutual "
            f"information to read; {moves}, its top probability never below {conf:.0%}."
        )
    peak = int(np.argmax(s.mutual_info))
    peak_text = f"{s.mutual_info[peak]:.2f} nats at {t.fmt(s.amounts[peak])}"
    above = np.flatnonzero(s.mutual_info >= threshold)
    if above.size == 0:
        return (
            f"The passes agree at every amount (mutual information at most {peak_text}); {moves}."
        )
    first, last = int(above[0]), int(above[-1])
    where = (
        f"From {t.fmt(s.amounts[first])} on"
        if last == len(s.amounts) - 1
        else f"From {t.fmt(s.amounts[first])} to {t.fmt(s.amounts[last])}"
    )
    return f"{where}, the passes disagree: mutual information up to {peak_text}; {moves}."


def strip(images: np.ndarray, count: int = 7, gap: int = 2) -> tuple[np.ndarray, list[int]]:
    """``count`` of the sweep's images side by side (28 x (count*30 - 2) uint8) and the step
    index of each, for a thumbnail row."""
    n = len(images)
    idx = sorted({round(i) for i in np.linspace(0, n - 1, min(count, n))})
    row = np.zeros((SIDE, len(idx) * (SIDE + gap) - gap), dtype=np.uint8)
    for j, i in enumerate(idx):
        row[:, j * (SIDE + gap) : j * (SIDE + gap) + SIDE] = np.round(images[i] * 255)
    return row, idx
