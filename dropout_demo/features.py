"""What dropout does to the features: fc1's activations and conv1's filters, as plain data.

Srivastava et al. (2014, Figures 7 and 8) show that with dropout, hidden units learn cleaner,
less co-adapted features and their activations become sparser, with no sparsity penalty. For
``SimpleCNN`` the hidden layer dropout acts on is fc1 (128 units, after its ReLU), and the
features one can look at directly are conv1's 32 filters of 3x3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import normalize, subset
from .model import SimpleCNN, eval_mode

CHUNK = 1_000  # images per forward: activations of conv1 stay ~20 MB
HIST_BINS = 40


def test_batch(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """A seeded ``n``-image subset of uint8 test images, normalised: (n, 1, 28, 28)."""
    picked, _ = subset(images, labels, min(n, len(images)), seed)
    return normalize(picked)


def fc1_activations(model: SimpleCNN, x: torch.Tensor) -> np.ndarray:
    """fc1's outputs after ReLU, before dropout, in eval mode: (N, 1, 28, 28) -> (N, 128)."""
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
    param = next(model.parameters())
    with torch.inference_mode(), eval_mode(model):
        parts = [
            model.features(part.to(device=param.device, dtype=torch.float32)).cpu()
            for part in x.split(CHUNK)
        ]
    return torch.cat(parts).numpy().astype(np.float64)


def zero_fraction(acts: np.ndarray) -> float:
    """Share of activations that are exactly 0 (the ReLU is off)."""
    return float((np.asarray(acts) == 0).mean())


def mean_per_unit_sorted(acts: np.ndarray) -> np.ndarray:
    """Each unit's mean activation over the images, largest first: (units,)."""
    return np.sort(np.asarray(acts).mean(axis=0))[::-1]


def dead_units(acts: np.ndarray) -> int:
    """Units that are 0 on every image."""
    return int((np.asarray(acts) == 0).all(axis=0).sum())


def common_edges(*acts: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Histogram bin edges from 0 to the largest activation of all given sets, so two models'
    histograms share their bins."""
    top = max((float(np.max(a)) for a in acts if np.size(a)), default=1.0)
    return np.linspace(0.0, top if top > 0 else 1.0, bins + 1)


def histogram(acts: np.ndarray, edges: np.ndarray, nonzero: bool = True) -> np.ndarray:
    """Share of activations in each bin (sums to 1 over what is counted). ``nonzero``: only
    the active ones, since the zeros (often most of them) are reported by
    :func:`zero_fraction` and would flatten every other bar."""
    a = np.asarray(acts).ravel()
    if nonzero:
        a = a[a > 0]
    counts, _ = np.histogram(a, bins=edges)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


@dataclass(frozen=True)
class FeatureSummary:
    """fc1's activations of one model over the same N test images."""

    n_images: int
    mean: float  # mean activation over all units and images
    mean_active: float  # mean over the non-zero activations
    zero_fraction: float
    dead_units: int
    unit_means: np.ndarray  # (128,) mean per unit, largest first
    acts: np.ndarray  # (N, 128)


def summarise(acts: np.ndarray) -> FeatureSummary:
    acts = np.asarray(acts, dtype=np.float64)
    active = acts[acts > 0]
    return FeatureSummary(
        n_images=acts.shape[0],
        mean=float(acts.mean()),
        mean_active=float(active.mean()) if active.size else 0.0,
        zero_fraction=zero_fraction(acts),
        dead_units=dead_units(acts),
        unit_means=mean_per_unit_sorted(acts),
        acts=acts,
    )


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """conv1's filters as images: (32, 3, 3) in [0, 1], each scaled by its own largest
    absolute weight so that 0.5 is a zero weight, 1 its most positive and 0 its most
    negative (a filter of zeros stays all 0.5)."""
    w = model.conv1.weight.detach().cpu().double().numpy()[:, 0]  # (32, 1, 3, 3) -> (32, 3, 3)
    scale = np.abs(w).max(axis=(1, 2), keepdims=True)
    return 0.5 + 0.5 * np.divide(w, scale, out=np.zeros_like(w), where=scale > 0)


def filter_grid(filters: np.ndarray, cols: int = 8, gap: int = 1) -> np.ndarray:
    """(K, h, w) images -> one (rows*(h+gap)-gap, cols*(w+gap)-gap) array, NaN in the gaps."""
    k, h, w = filters.shape
    rows = -(-k // cols)
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, f in enumerate(filters):
        r, c = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = f
    return grid
