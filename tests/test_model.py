"""The seed CNN: the flatten size, output shape and PyTorch's inverted-dropout semantics."""

import math

import pytest
import torch
from torch import nn

from dropout_demo.config import TrainConfig
from dropout_demo.model import (
    SimpleCNN,
    conv_features,
    dropout_layers,
    eval_mode,
    make_checkpoint,
    mc_dropout,
    model_from_checkpoint,
    set_mc_dropout,
)


def seeded_model(p=0.5, seed=0):
    return SimpleCNN(p=p, generator=torch.Generator().manual_seed(seed))


def test_flatten_size_is_derived_from_the_conv_stack():
    model = SimpleCNN()
    x = torch.zeros(1, 1, 28, 28)
    conv_out = nn.functional.max_pool2d(model.conv2(nn.functional.max_pool2d(model.conv1(x), 2)), 2)
    assert conv_out.shape == (1, 64, 5, 5)
    assert conv_features() == conv_out[0].numel() == 1600
    assert model.fc1.in_features == 1600


def test_seed_flatten_size_crashes_and_ours_does_not():
    seed_model = SimpleCNN()
    seed_model.fc1 = nn.Linear(64 * 6 * 6, 128)  # what the seed tutorial wrote
    with pytest.raises(RuntimeError):
        seed_model(torch.zeros(2, 1, 28, 28))
    assert SimpleCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_forward_equals_the_seed_layer_order():
    """Ours pools before the ReLU (cheaper); the seed's relu -> pool order gives the same."""
    model = seeded_model().eval()
    x = torch.randn(16, 1, 28, 28)
    relu, pool = nn.functional.relu, nn.functional.max_pool2d
    h = pool(relu(model.conv1(x)), 2)
    h = pool(relu(model.conv2(h)), 2)
    seed_logits = model.fc2(relu(model.fc1(h.view(h.size(0), -1))))
    torch.testing.assert_close(model(x), seed_logits, rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_output_shape(n):
    assert seeded_model()(torch.randn(n, 1, 28, 28)).shape == (n, 10)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_invalid_p_rejected(p):
    with pytest.raises(ValueError):
        SimpleCNN(p=p)


def test_eval_mode_is_deterministic():
    model = seeded_model().eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("with_generator", [False, True])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_train_mode_zeroes_units_and_scales_kept_ones_by_inverse_keep(p, with_generator):
    layer = SimpleCNN(p=p).dropout.train()
    if with_generator:
        layer.generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    x = torch.rand(200, 128) + 0.5  # strictly positive, so a zero can only come from a drop
    y = layer(x)
    dropped = y == 0
    kept = ~dropped
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # the drop rate is p (binomial: 25,600 draws, 5 standard deviations)
    sd = math.sqrt(p * (1 - p) / x.numel())
    assert abs(dropped.float().mean().item() - p) < 5 * sd
    # so the expected activation equals the input: inverted dropout needs no scaling at eval
    assert abs(y.mean().item() - x.mean().item()) < 0.05 * x.mean().item()
    layer.eval()
    assert torch.equal(layer(x), x)


def test_generator_dropout_is_reproducible():
    a, b = SimpleCNN(p=0.5).dropout.train(), SimpleCNN(p=0.5).dropout.train()
    a.generator = torch.Generator().manual_seed(3)
    b.generator = torch.Generator().manual_seed(3)
    x = torch.ones(8, 128)
    assert torch.equal(a(x), b(x))


def test_p_zero_changes_nothing_in_train_mode():
    model = seeded_model(p=0.0)
    x = torch.randn(5, 1, 28, 28)
    with eval_mode(model):
        expected = model(x)
    model.train()
    assert torch.equal(model(x), expected)


def test_mc_switch_puts_only_dropout_in_train_mode_and_restores():
    model = seeded_model().train()
    with mc_dropout(model):
        for m in model.modules():
            assert m.training == (m in dropout_layers(model))
    assert all(m.training for m in model.modules())
    model.eval()
    set_mc_dropout(model)
    assert model.dropout.training and not model.conv1.training and not model.training


def test_mc_mode_samples_different_masks():
    model = seeded_model()
    x = torch.randn(1, 1, 28, 28).expand(16, 1, 28, 28)
    with mc_dropout(model), torch.no_grad():
        out = model(x)
    assert not torch.allclose(out[0], out[1])


def test_seeded_init_is_reproducible_and_within_default_bounds():
    a, b, c = seeded_model(seed=5), seeded_model(seed=5), seeded_model(seed=6)
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
    for layer in (a.conv1, a.conv2, a.fc1, a.fc2):
        bound = 1 / math.sqrt(layer.weight[0].numel())  # PyTorch's default init bound
        assert layer.weight.abs().max() <= bound
        assert layer.bias.abs().max() <= bound


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    config = TrainConfig(p=0.3, epochs=2, train_size=100)
    model = SimpleCNN(p=0.3, generator=torch.Generator().manual_seed(0))
    torch.save(make_checkpoint(model, config, note="x"), tmp_path / "m.pt")
    loaded, loaded_config = model_from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True))
    assert loaded_config == config
    assert loaded.p == 0.3 and not loaded.training
    x = torch.randn(3, 1, 28, 28)
    with eval_mode(model):
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def conv_then_gemm(model, x, backward=True):
    """Outputs and parameter gradients of ``model`` on ``x`` with each conv1 kernel."""
    results = []
    for kernel in ("conv", "gemm"):
        model.conv1_kernel = kernel
        model.zero_grad(set_to_none=True)
        out = model(x)
        if backward:
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()] if backward else []
        results.append((out.detach(), grads))
    model.conv1_kernel = "conv"
    return results


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv1_as_pooling_window_gemm_equals_the_convolution(channels_last):
    """The training loop's conv1 kernel is the same function with the same gradients,
    including MNIST's flat background, where all four outputs of a pooling window tie."""
    model = seeded_model(p=0.0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    x[:, :, :9] = -1.0  # background, as normalised MNIST
    (out_a, grads_a), (out_b, grads_b) = conv_then_gemm(model, x)
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-5)
    names = [name for name, _ in model.named_parameters()]
    for name, a, b in zip(names, grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert grads_b[names.index("conv1.weight")].abs().sum() > 0


def test_conv1_gemm_without_gradients_and_on_odd_sizes():
    from dropout_demo.model import conv1_pool_relu

    model = seeded_model()
    for side in (28, 29, 8):
        x = torch.randn(3, 1, side, side)
        with torch.no_grad():
            expected = torch.relu(nn.functional.max_pool2d(model.conv1(x), 2))
            got = conv1_pool_relu(x, model.conv1.weight, model.conv1.bias)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    (out_a, _), (out_b, _) = conv_then_gemm(model.eval(), torch.randn(5, 1, 28, 28), False)
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-5)


def test_conv1_gemm_under_bf16_autocast_keeps_float32_gradients():
    model = seeded_model().to(memory_format=torch.channels_last)
    model.conv1_kernel = "gemm"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 1, 28, 28))
    out.float().sum().backward()
    assert model.conv1.weight.grad.dtype == torch.float32
    assert torch.isfinite(model.conv1.weight.grad).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2_weight_gradient_as_a_gemm_equals_the_library(channels_last):
    """conv2_kernel = "gemm": the same outputs and, within float rounding, the same gradients
    (the input's included, which conv1 needs), in either memory format."""
    model = seeded_model(p=0.0)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    results = []
    for kernel in ("conv", "gemm"):
        model.conv2_kernel = kernel
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)  # the forward is the library's
    for name, a in grads_a.items():
        torch.testing.assert_close(grads_b[name], a, rtol=1e-4, atol=1e-5, msg=name)
    assert grads_b["conv2.weight"].abs().sum() > 0 and grads_b["conv1.weight"].abs().sum() > 0
    # no gradients asked for (evaluation): the plain convolution
    from dropout_demo.model import conv_weight_gemm

    with torch.no_grad():
        h = torch.randn(3, 32, 13, 13)
        got = conv_weight_gemm(h, model.conv2.weight, model.conv2.bias)
        torch.testing.assert_close(got, model.conv2(h), rtol=0, atol=0)
