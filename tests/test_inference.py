"""Inference: eval probabilities, MC dropout (one batched forward) and the fc1 mask view."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dropout_demo.inference import (
    MAX_SAMPLES,
    PREDICT_CHUNK,
    _mc_logits,
    mc_predict,
    predict,
    stochastic_pass,
)
from dropout_demo.model import SimpleCNN


def make_model(p: float = 0.5, sharpen: float = 1.0) -> SimpleCNN:
    """Untrained, seeded. ``sharpen`` scales fc2 so the probabilities are far from uniform."""
    torch.manual_seed(0)
    model = SimpleCNN(p=p)
    with torch.no_grad():
        model.fc2.weight.mul_(sharpen)
    return model.eval()


def make_image(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, 28, 28, generator=gen) * 2 - 1  # normalised range [-1, 1]


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_probabilities_sum_to_one():
    model = make_model()
    batch = torch.cat([make_image(s) for s in range(4)])
    probs = predict(model, batch)
    assert probs.shape == (4, 10)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)

    res = mc_predict(model, make_image(), samples=30, seed=0)
    assert res.samples.shape == (30, 10) and res.T == 30
    np.testing.assert_allclose(res.samples.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.mean.sum(), 1.0, atol=1e-9)
    assert res.votes.sum() == 30 and res.votes.dtype.kind == "i"
    assert res.prediction == int(res.mean.argmax())
    assert 0 <= res.expected_entropy <= res.entropy <= math.log(10) + 1e-9
    assert res.mutual_info == pytest.approx(res.entropy - res.expected_entropy)

    gen = torch.Generator().manual_seed(3)
    one = stochastic_pass(model, make_image(), gen)
    assert one.probs.sum() == pytest.approx(1.0)


def test_p_zero_gives_exactly_zero_spread():
    model = make_model(p=0.0, sharpen=10.0)
    x = make_image()
    res = mc_predict(model, x, samples=100, seed=0)
    assert np.all(res.std == 0.0)
    assert res.mutual_info == pytest.approx(0.0, abs=1e-12)
    assert (res.samples == res.samples[0]).all()
    assert res.votes.max() == 100
    np.testing.assert_allclose(res.mean, predict(model, x)[0].double().numpy(), atol=1e-6)

    one = stochastic_pass(model, x, torch.Generator().manual_seed(0))
    assert not one.dropped.any() and one.scale == 1.0


def test_dropout_gives_spread():
    res = mc_predict(make_model(p=0.5, sharpen=10.0), make_image(), samples=100, seed=0)
    assert res.std.max() > 1e-3
    assert res.mutual_info > 0
    np.testing.assert_allclose(res.std, res.samples.std(axis=0), rtol=1e-9, atol=1e-12)


def test_mc_logits_average_to_eval_logits_within_clt_bound():
    # fc2 is linear and inverted dropout keeps E[mask * scale] = 1, so the mean of the MC
    # *logits* converges to the eval logits exactly; check against the CLT standard error.
    model, x, T, p = make_model(p=0.5, sharpen=10.0), make_image(), 4000, 0.5
    logits = _mc_logits(model, x, T, seed=0).double()
    with torch.no_grad():
        h = model.features(x)[0].double()
        eval_logits = model(x)[0].double()
        w = model.fc2.weight.double()
    var = (w**2 * h**2).sum(1) * p / (1 - p)  # per-class variance of one pass's logit
    se = (var / T).sqrt()
    assert ((logits.mean(0) - eval_logits).abs() < 5 * se).all()


def test_mc_mean_approaches_eval_probabilities_as_t_grows():
    # The probabilities' limit is E[softmax], close to but not exactly softmax(E[logits]) (the
    # weight-scaling approximation), so the bound is loose; seeds fixed for determinism.
    model, x = make_model(p=0.5, sharpen=3.0), make_image()
    eval_probs = predict(model, x)[0].double().numpy()
    small = [
        np.abs(mc_predict(model, x, samples=10, seed=s).mean - eval_probs).sum() for s in (0, 1, 2)
    ]
    large = np.abs(mc_predict(model, x, samples=MAX_SAMPLES, seed=0).mean - eval_probs).sum()
    assert large < 0.5 * np.mean(small)
    assert large < 0.05


def test_mc_seed_is_reproducible_and_leaves_global_rng_alone():
    model, x = make_model(), make_image()
    state = torch.get_rng_state()
    a = mc_predict(model, x, samples=20, seed=7)
    b = mc_predict(model, x, samples=20, seed=7)
    c = mc_predict(model, x, samples=20, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)
    assert not np.array_equal(mc_predict(model, x, 20).samples, mc_predict(model, x, 20).samples)


def test_stochastic_pass_reproducible_and_matches_formula():
    model, x = make_model(p=0.3, sharpen=5.0), make_image()
    first = stochastic_pass(model, x, torch.Generator().manual_seed(42))
    again = stochastic_pass(model, x, torch.Generator().manual_seed(42))
    other = stochastic_pass(model, x, torch.Generator().manual_seed(43))
    assert first.dropped.shape == (128,) and first.dropped.dtype == bool
    assert np.array_equal(first.dropped, again.dropped)
    assert np.array_equal(first.probs, again.probs)
    assert not np.array_equal(first.dropped, other.dropped)
    assert first.scale == pytest.approx(1 / 0.7) and first.p == pytest.approx(0.3)

    with torch.no_grad():  # independent reference: fc2(features * keep_mask * scale)
        keep = torch.from_numpy(~first.dropped).float()
        ref = torch.softmax(model.fc2(model.features(x)[0] * keep * first.scale), 0)
    np.testing.assert_allclose(first.probs, ref.double().numpy(), atol=1e-6)
    assert first.prediction == int(ref.argmax())

    # Same mask convention as mc_predict: the seeded generator gives that call's first pass.
    mc = mc_predict(model, x, samples=5, seed=42)
    np.testing.assert_allclose(first.probs, mc.samples[0], atol=1e-6)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_mask_proportion_close_to_p(p):
    model, x = make_model(p=p), make_image()
    gen = torch.Generator().manual_seed(0)
    n = 300
    dropped = np.stack([stochastic_pass(model, x, gen).dropped for _ in range(n)])
    sigma = math.sqrt(p * (1 - p) / dropped.size)  # binomial standard error
    assert abs(dropped.mean() - p) < 4 * sigma
    assert len({row.tobytes() for row in dropped}) == n  # a fresh mask every pass


@pytest.mark.parametrize("start", ["eval", "train", "mixed"])
def test_modes_restored(start):
    model, x = make_model(), make_image()
    if start == "train":
        model.train()
    elif start == "mixed":
        model.train()
        model.conv2.eval()
        model.dropout.eval()
    before = modes(model)
    predict(model, x)
    assert modes(model) == before
    mc_predict(model, x, samples=10, seed=0)
    assert modes(model) == before
    stochastic_pass(model, x, torch.Generator().manual_seed(0))
    assert modes(model) == before


def test_predict_is_eval_mode_even_for_a_training_model():
    model, x = make_model(sharpen=5.0), make_image()
    expected = predict(model, x)
    model.train()
    assert torch.equal(predict(model, x), expected)  # dropout off, deterministic


def test_mc_predict_is_one_batched_forward_not_a_loop():
    model, x, T = make_model(), make_image(), 100
    calls: dict[str, list[int]] = {"conv1": [], "dropout_head": []}
    hooks = [
        model.conv1.register_forward_hook(lambda m, i, o: calls["conv1"].append(i[0].shape[0])),
        model.fc2.register_forward_hook(
            lambda m, i, o: calls["dropout_head"].append(i[0].shape[0])
        ),
    ]
    try:
        mc_predict(model, x, samples=T, seed=0)
    finally:
        for h in hooks:
            h.remove()
    assert calls["conv1"] == [1]  # the deterministic trunk runs once
    assert calls["dropout_head"] == [T]  # all T masked passes in one batch


def generic_model(p: float) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Dropout(p),
        nn.Linear(784, 64),
        nn.ReLU(),
        nn.Dropout(p),
        nn.Linear(64, 10),
    ).eval()


def test_generic_model_fallback_batched_seeded_and_restored():
    model, x, T = generic_model(0.4), make_image(), 64
    model.train()
    before = modes(model)
    batches: list[int] = []
    hook = model.register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0]))
    state = torch.get_rng_state()
    try:
        a = mc_predict(model, x, samples=T, seed=3)
        b = mc_predict(model, x, samples=T, seed=3)
    finally:
        hook.remove()
    assert batches == [T, T]
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(a.samples, b.samples) and a.std.max() > 0
    assert modes(model) == before

    zero = mc_predict(generic_model(0.0), x, samples=T, seed=3)
    assert np.all(zero.std == 0.0)


def test_rejects_bad_input():
    model = make_model()
    with pytest.raises(ValueError):
        mc_predict(model, torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError):
        mc_predict(model, make_image(), samples=0)


def test_samples_are_bounded_in_the_package():
    model, x = make_model(), make_image()
    assert 200 <= MAX_SAMPLES <= 10_000  # the slider's 200 fits; 10**7 took 55 s and gigabytes
    assert mc_predict(model, x, samples=1, seed=0).T == 1
    assert mc_predict(model, x, samples=MAX_SAMPLES, seed=0).samples.shape == (MAX_SAMPLES, 10)
    assert mc_predict(model, x, samples=np.int64(7), seed=np.int64(1)).T == 7  # a numpy integer
    for bad in (MAX_SAMPLES + 1, 10**7, 0, -1, 2.5, 50.0, "50", None, True, float("nan")):
        with pytest.raises(ValueError, match="samples must be"):
            mc_predict(model, x, samples=bad, seed=0)


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30, 1.5, "7", True])
def test_bad_seeds_are_refused_with_a_clear_message(seed):
    with pytest.raises(ValueError, match="seed must be"):
        mc_predict(make_model(), make_image(), samples=5, seed=seed)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_images_are_refused(value):
    model, x = make_model(), make_image()
    x[0, 0, 3, 4] = value
    for call in (
        lambda: predict(model, x),
        lambda: mc_predict(model, x, samples=5, seed=0),
        lambda: stochastic_pass(model, x, torch.Generator().manual_seed(0)),
    ):
        with pytest.raises(ValueError, match="NaN, infinite"):
            call()


def test_predict_refuses_wrong_shapes_and_runs_large_batches_in_chunks():
    model = make_model()
    for bad in (torch.zeros(28, 28), torch.zeros(1, 3, 28, 28), torch.zeros(2, 1, 32, 32)):
        with pytest.raises(ValueError, match="shape"):
            predict(model, bad)
    assert predict(model, torch.zeros(0, 1, 28, 28)).shape == (0, 10)

    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    n = PREDICT_CHUNK + 3
    x = torch.cat([make_image(s) for s in range(3)]).repeat(n // 3 + 1, 1, 1, 1)[:n]
    probs = predict(model, x)
    assert calls == [PREDICT_CHUNK, 3]
    assert probs.shape == (n, 10)
    torch.testing.assert_close(probs[-3:], predict(model, x[-3:]), rtol=1e-5, atol=1e-6)
