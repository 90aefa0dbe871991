"""Uncertainty probes: transforms, built-in probes, the batched sweep and its reading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dropout_demo import probes
from dropout_demo.inference import MAX_SAMPLES, mc_predict, predict
from dropout_demo.model import SimpleCNN
from dropout_demo.probe_charts import (
    probe_probability_figure,
    probe_text_summary,
    probe_uncertainty_figure,
)
from dropout_demo.probes import Sweep, reading, sweep, transform, transform_batch


def model(p: float, seed: int = 0) -> SimpleCNN:
    return SimpleCNN(p, generator=torch.Generator().manual_seed(seed)).eval()


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.mgrid[0:28, 0:28]
    mass = image.sum()
    return float((rows * image).sum() / mass), float((cols * image).sum() / mass)


def blob(row: int, col: int) -> np.ndarray:
    image = np.zeros((28, 28), dtype=np.float32)
    image[row - 1 : row + 2, col - 1 : col + 2] = 1.0
    return image


@pytest.fixture(scope="module")
def one() -> np.ndarray:
    return probes.probe_image("one")


# ---------------------------------------------------------------- transforms
@pytest.mark.parametrize("name", list(probes.TRANSFORMS))
def test_amount_zero_gives_the_image_back(name, one):
    out = transform_batch(one, name, [0.0, probes.TRANSFORMS[name].hi / 2, 0.0], seed=3)
    assert out.shape == (3, 28, 28) and out.dtype == np.float32
    assert np.array_equal(out[0], one) and np.array_equal(out[2], one)
    assert not np.array_equal(out[1], one)  # the middle amount does change it
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_a_tiny_rotation_resamples_to_the_same_image(one):
    # Not the amount-0 shortcut: the resampling grid itself lands on the pixel centres.
    assert np.allclose(transform(one, "rotate", 1e-6), one, atol=1e-4)


def test_rotating_by_90_moves_mass_from_right_of_centre_to_above_it():
    image = blob(14, 22)  # 8.5 px right of the image centre (13.5, 13.5), 0.5 px below it
    rotated = transform(image, "rotate", 90)
    row, col = centre_of_mass(rotated)
    assert row == pytest.approx(13.5 - 8.5, abs=0.3)  # now above the centre (anticlockwise)
    assert col == pytest.approx(13.5 + 0.5, abs=0.3)
    assert rotated.sum() == pytest.approx(image.sum(), rel=0.02)
    row180, col180 = centre_of_mass(transform(image, "rotate", 180))
    assert (row180, col180) == pytest.approx((13.0, 5.0), abs=0.3)


def test_shift_moves_the_centre_of_mass_right(one):
    r0, c0 = centre_of_mass(one)
    r1, c1 = centre_of_mass(transform(one, "shift", 3.0))
    assert c1 - c0 == pytest.approx(3.0, abs=0.05)
    assert r1 == pytest.approx(r0, abs=1e-4)


def test_thicken_adds_ink_and_thin_removes_it(one):
    amounts = [-1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]
    ink = transform_batch(one, "thicken", amounts).sum(axis=(1, 2))
    assert np.all(np.diff(ink) > 0)  # strictly more ink at every step
    thick = transform(one, "thicken", 1.0)
    assert np.all(thick >= one)  # dilation never removes ink
    assert (thick > 0.5).sum() > 1.5 * (one > 0.5).sum()
    assert np.all(transform(one, "thicken", -1.0) <= one)


def test_noise_is_seeded_and_grows_with_the_amount(one):
    a = transform(one, "noise", 0.5, seed=1)
    assert np.array_equal(a, transform(one, "noise", 0.5, seed=1))
    assert not np.array_equal(a, transform(one, "noise", 0.5, seed=2))
    changed = [np.abs(transform(one, "noise", s, seed=1) - one).sum() for s in (0.1, 0.3, 0.9)]
    assert changed[0] < changed[1] < changed[2]


def test_blur_keeps_the_ink_and_softens_the_peak(one):
    blurred = transform(one, "blur", 1.5)
    assert blurred.sum() == pytest.approx(one.sum(), rel=0.02)  # the digit is far from the edge
    assert blurred.max() < 0.8 * one.max()


def test_bad_transform_arguments_are_refused(one):
    with pytest.raises(ValueError, match="unknown transform"):
        transform(one, "melt", 1.0)
    with pytest.raises(ValueError, match="28x28"):
        transform(np.zeros((5, 5)), "rotate", 1.0)
    with pytest.raises(ValueError, match="finite"):
        transform_batch(one, "rotate", [np.nan])
    with pytest.raises(ValueError, match="steps"):
        probes.amounts_for("rotate", 1)


# ---------------------------------------------------------------- built-in probes
@pytest.mark.parametrize("name", list(probes.PROBES))
def test_built_in_probes_are_mnist_like_images(name):
    image = probes.probe_image(name)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.sum() > 20  # real ink, not an empty frame
    row, col = centre_of_mass(image)
    assert abs(row - 14) < 1.5 and abs(col - 14) < 1.5  # centred like MNIST
    assert np.array_equal(image, probes.probe_image(name))  # generated the same every time
    image[:] = 0  # a copy: the cached probe is untouched
    assert probes.probe_image(name).sum() > 20


def test_the_built_in_one_is_tall_and_narrow():
    ink = probes.probe_image("one") > 0.3
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    assert np.ptp(rows) + 1 >= 18 and np.ptp(cols) + 1 <= 9


# ---------------------------------------------------------------- the sweep
def test_sweep_shapes_and_agreement_with_predict_and_mc_predict(one):
    m = model(0.5)
    s = sweep(m, one, "rotate", steps=7, samples=13, seed=5)
    assert s.amounts.tolist() == pytest.approx(np.linspace(0, 180, 7).tolist())
    assert s.images.shape == (7, 28, 28)
    assert s.eval_probs.shape == s.mc_mean.shape == s.mc_std.shape == (7, 10)
    assert s.samples.shape == (7, 13, 10)
    assert s.entropy.shape == s.mutual_info.shape == s.expected_entropy.shape == (7,)
    assert len(s.top_classes) == 3 and len(set(s.top_classes)) == 3
    assert (s.T, s.p) == (13, 0.5)
    x = probes.to_model_input(s.images)
    assert np.allclose(s.eval_probs, predict(m, x).numpy(), atol=1e-6)
    for i in (0, 4):  # every step is mc_predict's answer with the same seed
        ref = mc_predict(m, x[i], samples=13, seed=5)
        assert np.allclose(s.samples[i], ref.samples, atol=1e-6)
        assert s.mutual_info[i] == pytest.approx(ref.mutual_info, abs=1e-6)
        assert s.entropy[i] == pytest.approx(ref.entropy, abs=1e-6)
    assert s.mc_std.max() > 0  # p = 0.5: the passes differ


def test_p0_model_has_exactly_zero_spread_and_mutual_information(one):
    m = model(0.0)
    s = sweep(m, one, "noise", steps=6, samples=40, seed=1)
    assert not s.has_spread
    assert np.all(s.mc_std == 0.0)
    assert np.all(s.mutual_info == 0.0)
    assert np.allclose(s.mc_mean, s.eval_probs, atol=1e-6)
    assert "no spread" in reading(s)


def test_entropy_and_mutual_information_match_numpy():
    rng = np.random.default_rng(0)
    passes = rng.dirichlet(np.full(10, 0.5), size=(4, 25))  # (S, T, 10)
    stats = probes.uncertainty(passes)
    mean = passes.mean(axis=1)
    h = -(mean * np.log(mean)).sum(axis=1)
    expected = (-(passes * np.log(passes)).sum(axis=2)).mean(axis=1)
    assert np.allclose(stats["mean"], mean)
    assert np.allclose(stats["std"], passes.std(axis=1))
    assert np.allclose(stats["entropy"], h)
    assert np.allclose(stats["mutual_info"], h - expected)
    assert np.all(stats["mutual_info"] > 0)


def test_sweep_of_a_model_other_than_simplecnn_uses_mc_predict(one):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10)
    )
    s = sweep(net, one, "shift", steps=3, samples=9, seed=2)
    x = probes.to_model_input(s.images)
    ref = mc_predict(net, x[2], samples=9, seed=2)
    assert np.allclose(s.samples[2], ref.samples)
    assert s.p == 0.5 and net.training  # the model's own mode is restored


def test_sweep_refuses_too_many_samples(one):
    with pytest.raises(ValueError, match="samples"):
        sweep(model(0.5), one, "rotate", steps=3, samples=MAX_SAMPLES + 1)


# ---------------------------------------------------------------- reading and figures
def made_sweep(mi: list[float], preds: list[int], p: float = 0.5, conf: float = 0.9) -> Sweep:
    n = len(mi)
    mean = np.full((n, 10), (1 - conf) / 9)
    mean[np.arange(n), preds] = conf
    return Sweep(
        transform="rotate",
        amounts=np.linspace(0, 180, n),
        images=np.zeros((n, 28, 28), dtype=np.float32),
        eval_probs=mean,
        samples=np.repeat(mean[:, None], 2, axis=1),
        mc_mean=mean,
        mc_std=np.zeros((n, 10)),
        entropy=np.array(mi) + 0.1,
        expected_entropy=np.full(n, 0.1),
        mutual_info=np.array(mi),
        top_classes=(1, 7, 0),
        T=2,
        p=p,
    )


def test_reading_names_where_the_passes_start_to_disagree():
    s = made_sweep([0.0, 0.01, 0.02, 0.2, 0.3, 0.25, 0.4], [1, 1, 1, 1, 7, 7, 7])
    assert reading(s) == (
        "From 90° on, the passes disagree: mutual information up to 0.40 nats at 180°; "
        "the prediction goes 1 → 7."
    )


def test_reading_of_a_bounded_region_a_calm_sweep_and_a_p0_model():
    s = made_sweep([0.0, 0.15, 0.3, 0.05, 0.0], [1, 1, 5, 7, 7])
    assert reading(s).startswith("From 45° to 90°, the passes disagree")
    assert reading(s).endswith("the prediction goes 1 → 7.")  # the one-step 5 is a blip
    calm = made_sweep([0.01, 0.02, 0.03], [3, 3, 3])
    assert reading(calm) == (
        "The passes agree at every amount (mutual information at most 0.03 nats at 180°); "
        "the prediction stays 3."
    )
    still = made_sweep([0.0, 0.0, 0.0], [1, 1, 7], p=0.0, conf=0.8)
    text = reading(still)
    assert text.startswith("p = 0: every pass is the same network, so there is no spread")
    assert "never below 80%" in text


def test_figures_show_the_top_classes_and_a_band_only_with_spread(one):
    spread = sweep(model(0.5), one, "rotate", steps=5, samples=10)
    fig = probe_probability_figure(spread)
    fills = [t for t in fig.data if t.fill == "toself"]
    assert len(fills) == 3 and len(fig.data) == 9  # band, MC mean, eval line per class
    names = [t.name for t in fig.data if t.name]
    assert f"{spread.top_classes[0]}: MC mean ± std" in names
    flat = sweep(model(0.0), one, "rotate", steps=5, samples=10)
    assert not [t for t in probe_probability_figure(flat).data if t.fill == "toself"]
    unc = probe_uncertainty_figure(spread)
    assert [t.name for t in unc.data] == ["predictive entropy", "mutual information"]
    assert list(unc.data[1].y) == pytest.approx(spread.mutual_info.tolist())
    assert probe_text_summary(spread).startswith("Rotate from 0° to 180°: at 0°:")


def test_strip_shows_evenly_spaced_steps():
    images = np.stack([np.full((28, 28), i / 10, dtype=np.float32) for i in range(10)])
    row, idx = probes.strip(images, count=4)
    assert idx == [0, 3, 6, 9]
    assert row.shape == (28, 4 * 30 - 2) and row.dtype == np.uint8
    assert row[0, 30] == round(0.3 * 255) and row[0, 28] == 0  # second image, then a gap
