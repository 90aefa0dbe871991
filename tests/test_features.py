"""What dropout does to the features: fc1 activations, their statistics, conv1's filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dropout_demo import features
from dropout_demo.feature_charts import (
    activation_histogram_figure,
    features_text_summary,
    filters_figure,
    unit_means_figure,
)
from dropout_demo.model import SimpleCNN


def model(p: float = 0.5, seed: int = 0) -> SimpleCNN:
    return SimpleCNN(p, generator=torch.Generator().manual_seed(seed))


def reference_fc1(m: SimpleCNN, x: torch.Tensor) -> np.ndarray:
    """The seed tutorial's forward written out, up to fc1's ReLU (ReLU before pooling)."""
    with torch.no_grad():
        h = F.max_pool2d(F.relu(F.conv2d(x, m.conv1.weight, m.conv1.bias)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, m.conv2.weight, m.conv2.bias)), 2)
        return F.relu(h.flatten(1) @ m.fc1.weight.T + m.fc1.bias).numpy()


def test_fc1_activations_match_the_written_out_forward_and_restore_the_mode():
    m = model().train()
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    acts = features.fc1_activations(m, x)
    assert acts.shape == (40, 128)
    assert np.allclose(acts, reference_fc1(m, x), atol=1e-5)
    assert m.training and m.dropout.training  # train mode given back
    assert (acts >= 0).all() and (acts == 0).any()  # after the ReLU
    # Eval mode: no dropout, so the same images give the same activations every time.
    assert np.array_equal(acts, features.fc1_activations(m, x))
    with pytest.raises(ValueError, match="28, 28"):
        features.fc1_activations(m, torch.zeros(3, 28, 28))


def test_activation_statistics_against_numpy():
    acts = np.array(
        [
            [0.0, 1.0, 0.0, 3.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.5, 4.0, 1.0],
        ]
    )
    assert features.zero_fraction(acts) == pytest.approx(6 / 12)
    assert features.mean_per_unit_sorted(acts).tolist() == pytest.approx(
        sorted(acts.mean(axis=0), reverse=True)
    )
    assert features.dead_units(acts) == 1
    s = features.summarise(acts)
    assert s.mean == pytest.approx(acts.mean())
    assert s.mean_active == pytest.approx(acts[acts > 0].mean())
    assert (s.n_images, s.dead_units, s.zero_fraction) == (3, 1, 0.5)

    rng = np.random.default_rng(0)
    big = np.maximum(rng.normal(0, 1, (200, 128)), 0)
    other = 2 * big
    edges = features.common_edges(big, other, bins=10)
    assert edges[0] == 0 and edges[-1] == pytest.approx(other.max()) and len(edges) == 11
    share = features.histogram(big, edges)
    counts, _ = np.histogram(big[big > 0], bins=edges)
    assert share.sum() == pytest.approx(1.0)
    assert share.tolist() == pytest.approx((counts / counts.sum()).tolist())
    with_zeros = features.histogram(big, edges, nonzero=False)
    assert with_zeros[0] > share[0]  # the zeros land in the first bin


def test_first_layer_filters_are_32_normalised_3x3_images():
    m = model()
    with torch.no_grad():
        m.conv1.weight[5] = 0.0  # an all-zero filter stays mid-grey
        m.conv1.weight[6, 0, 1, 1] = 0.0
    filters = features.first_layer_filters(m)
    assert filters.shape == (32, 3, 3)
    assert filters.min() >= 0.0 and filters.max() <= 1.0
    assert np.all(filters[5] == 0.5)
    assert filters[6, 1, 1] == 0.5
    w = m.conv1.weight.detach().numpy()[:, 0]
    for k in (0, 6, 31):
        extreme = np.unravel_index(np.abs(w[k]).argmax(), (3, 3))
        assert filters[k][extreme] in (0.0, 1.0)  # each filter uses the whole range
        assert np.array_equal(np.argsort(filters[k], axis=None), np.argsort(w[k], axis=None))
    grid = features.filter_grid(filters)
    assert grid.shape == (4 * 4 - 1, 8 * 4 - 1)
    assert np.isnan(grid[3]).all() and np.array_equal(grid[:3, 4:7], filters[1])


def test_test_batch_is_a_seeded_normalised_subset():
    images = torch.arange(50, dtype=torch.uint8)[:, None, None].expand(50, 28, 28).clone()
    labels = torch.arange(50)
    a = features.test_batch(images, labels, 10, seed=0)
    assert a.shape == (10, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, features.test_batch(images, labels, 10, seed=0))
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert features.test_batch(images, labels, 500).shape[0] == 50  # at most all of them


def test_feature_figures():
    rng = np.random.default_rng(1)
    named = [
        ("A: p = 0", features.summarise(np.maximum(rng.normal(0.5, 1, (100, 128)), 0))),
        ("B: p = 0.5", features.summarise(np.maximum(rng.normal(-0.5, 1, (100, 128)), 0))),
    ]
    hist = activation_histogram_figure(named, bins=12)
    assert len(hist.data) == 2 and len(hist.data[0].x) == 12
    assert hist.data[0].line.dash != hist.data[1].line.dash  # told apart without colour
    assert sum(hist.data[1].y) == pytest.approx(1.0)
    units = unit_means_figure(named)
    assert list(units.data[0].y) == pytest.approx(named[0][1].unit_means.tolist())
    fig = filters_figure(features.first_layer_filters(model()), "A")
    assert np.array(fig.data[0].z, dtype=float).shape == (15, 31)
    text = features_text_summary(*named[1])
    assert text.startswith("B: p = 0.5: over 100 test images") and "are zero" in text
