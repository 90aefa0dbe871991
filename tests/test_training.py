"""The fast training loop against a plain reference loop, and its run-control behaviour."""

import math

import pytest
import torch
import torch.nn.functional as F

from dropout_demo import training
from dropout_demo.config import TrainConfig
from dropout_demo.data import normalize, subset
from dropout_demo.model import SimpleCNN
from dropout_demo.training import fit, resolve_device, resolve_precision

# float32, so the comparison with the plain reference loop can be tight
TINY = TrainConfig(
    p=0.5, epochs=2, train_size=300, eval_size=500, batch_size=32, seed=3, precision="fp32"
)


def reference_fit(config, data):
    """The seed's loop written plainly: per-batch indexing, default memory format, plain Adam.

    It draws from the same seeded generators as ``fit`` (init, then one permutation per epoch;
    dropout masks from their own), so both see the same batches and masks.
    """
    gen = torch.Generator().manual_seed(config.seed)
    model = SimpleCNN(p=config.p, generator=gen)
    model.dropout.generator = torch.Generator().manual_seed(config.seed + 1)
    images, labels = subset(data.train_images, data.train_labels, config.train_size, config.seed)
    x, y = normalize(images), labels
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, foreach=False)
    losses = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        running = 0.0
        batches = 0
        for start in range(0, len(x), config.batch_size):
            idx = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            running += loss.item()
            batches += 1
        losses.append(running / batches)
    return model.eval(), losses


def test_fast_loop_matches_reference_loop(mnist):
    result = fit(TINY, mnist)
    ref_model, ref_losses = reference_fit(TINY, mnist)
    assert result.status == "done"
    ours = [m.train_loss for m in result.metrics]
    assert ours == pytest.approx(ref_losses, rel=1e-4)
    for (name, a), b in zip(result.model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)


def test_batch_order_does_not_depend_on_p(mnist, monkeypatch):
    """Comparing p = 0 with p = 0.5 must change only p: same initial weights, same batches."""
    orders = []
    real_randperm = torch.randperm

    def recording_randperm(*args, **kwargs):
        order = real_randperm(*args, **kwargs)
        orders[-1].append(order.clone())
        return order

    monkeypatch.setattr(torch, "randperm", recording_randperm)
    for p in (0.0, 0.5):
        orders.append([])
        fit(TINY.replace(p=p, epochs=3), mnist)
    assert len(orders[0]) == len(orders[1]) == 2 + 3  # train and test subsets, one per epoch
    for a, b in zip(orders[0], orders[1], strict=True):
        assert torch.equal(a, b)


def test_metrics_are_reported_every_epoch(mnist):
    seen, batches = [], []
    result = fit(
        TINY, mnist, on_epoch=seen.append, on_batch=lambda e, b, n: batches.append((e, b, n))
    )
    assert seen == result.metrics and [m.epoch for m in seen] == [1, 2]
    assert batches[-1] == (2, 10, 10) and len(batches) == 20  # ceil(300 / 32) per epoch
    for m in seen:
        assert 0 <= m.train_acc <= 1 and 0 <= m.test_acc <= 1
        assert math.isfinite(m.train_loss) and math.isfinite(m.test_loss)
    assert seen[0].seconds < seen[1].seconds
    assert not result.model.training and result.model.dropout.generator is None


def test_test_metrics_match_an_independent_evaluation(mnist):
    result = fit(TINY, mnist)
    images, labels = subset(mnist.test_images, mnist.test_labels, TINY.eval_size, TINY.seed)
    with torch.no_grad():
        logits = result.model(normalize(images))
    last = result.metrics[-1]
    assert last.test_loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)
    assert last.test_acc == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_deterministic_for_a_seed(mnist):
    a, b = fit(TINY, mnist), fit(TINY, mnist)
    c = fit(TINY.replace(seed=4), mnist)
    assert a.metrics[-1].train_loss == b.metrics[-1].train_loss
    assert a.metrics[-1].test_loss == b.metrics[-1].test_loss
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert c.metrics[-1].train_loss != a.metrics[-1].train_loss


def test_stop_is_honoured_within_one_batch(mnist):
    calls = []
    result = fit(
        TINY.replace(epochs=5),
        mnist,
        should_stop=lambda: len(calls) >= 3,
        on_batch=lambda e, b, n: calls.append(b),
    )
    assert result.status == "cancelled"
    assert len(calls) == 3 and result.metrics == []


def test_stop_during_evaluation_is_honoured(mnist):
    calls = []
    result = fit(
        TINY,
        mnist,
        should_stop=lambda: len(calls) == 10,  # true only after the last batch of epoch 1
        on_batch=lambda e, b, n: calls.append(b),
    )
    assert result.status == "cancelled" and "evaluating" in result.message
    assert result.metrics == []


def test_divergence_is_a_status_not_an_exception(mnist):
    result = fit(TINY.replace(lr=1e30), mnist)
    assert result.status == "diverged"
    assert "learning rate" in result.message and "epoch 1" in result.message


def test_a_short_real_run_learns(mnist):
    config = TrainConfig(p=0.5, epochs=1, train_size=3_000, eval_size=2_000, seed=0)
    result = fit(config, mnist)
    assert result.metrics[0].test_acc > 0.8  # chance is 0.1


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_precision_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16  # emulated where not native
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    assert resolve_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(training, "native_bf16", lambda device: False)
    assert resolve_precision("auto", cpu) == torch.float32


def test_mixed_precision_run_learns_like_fp32_and_is_deterministic(mnist):
    config = TrainConfig(p=0.5, epochs=1, train_size=3_000, eval_size=2_000, precision="bf16")
    a, b = fit(config, mnist), fit(config, mnist)
    full = fit(config.replace(precision="fp32"), mnist)
    assert a.precision == "bf16" and full.precision == "fp32"
    assert a.metrics[-1].test_acc > 0.8
    assert a.metrics[-1].test_loss == b.metrics[-1].test_loss
    # bfloat16 arithmetic changes the path a little, not where training gets to
    assert abs(a.metrics[-1].test_acc - full.metrics[-1].test_acc) < 0.03
    assert all(p.dtype == torch.float32 for p in a.model.parameters())
