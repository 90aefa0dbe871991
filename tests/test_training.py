"""The fast training loop against a plain reference loop, and its run-control behaviour."""

import dataclasses
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from dropout_demo import training
from dropout_demo.config import PRESETS, TrainConfig
from dropout_demo.data import normalize, subset
from dropout_demo.model import SimpleCNN
from dropout_demo.openmp import single_threaded_caller
from dropout_demo.training import (
    EpochMetrics,
    Plan,
    ProbeResult,
    evaluated_images,
    fit,
    resolve_device,
    resolve_plan,
    resolve_precision,
)

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


FP32_PLANS = [
    Plan(torch.float32, True, "gemm"),
    Plan(torch.float32, True, "conv"),
    Plan(torch.float32, False, "conv"),
    Plan(torch.float32, True, "conv", "gemm"),
]


@pytest.mark.parametrize("plan", FP32_PLANS, ids=lambda p: p.describe())
def test_fast_loop_matches_reference_loop(mnist, monkeypatch, plan):
    """Every float32 plan the probe may pick computes the seed's loop."""
    monkeypatch.setattr(training, "resolve_plan", lambda precision, device: plan)
    result = fit(TINY, mnist)
    ref_model, ref_losses = reference_fit(TINY, mnist)
    assert result.status == "done" and result.plan == plan.describe()
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
    assert last.test_images == TINY.eval_size
    assert last.test_loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-4)
    assert last.test_acc == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def recorded_evaluations(monkeypatch) -> list[torch.Tensor]:
    """Patches training.evaluate to record the images of every evaluation."""
    seen = []
    real = training.evaluate

    def recording(model, x, y, *args, **kwargs):
        seen.append(x.clone())
        return real(model, x, y, *args, **kwargs)

    monkeypatch.setattr(training, "evaluate", recording)
    return seen


def test_epochs_evaluate_a_fixed_subset_the_last_epoch_everything(mnist, monkeypatch):
    config = TINY.replace(epochs=3, eval_size=1_000, epoch_eval_size=300)
    seen = recorded_evaluations(monkeypatch)
    runs = []
    for p, seed in ((0.0, 3), (0.5, 3), (0.5, 4)):
        seen.clear()
        runs.append((fit(config.replace(p=p, seed=seed), mnist), list(seen)))
    (a, seen_a), (_, seen_b), (_, seen_c) = runs
    assert [m.test_images for m in a.metrics] == [300, 300, 1_000]
    assert sum(len(x) for x in seen_a) == evaluated_images(config) == 2 * 300 + 1_000
    images, _ = subset(mnist.test_images, mnist.test_labels, config.eval_size, config.seed)
    full = normalize(images)
    assert torch.equal(seen_a[2], full)
    # the per-epoch subset: the same images every epoch and for p = 0 and p = 0.5, all of them
    # from the evaluation set, none twice
    assert torch.equal(seen_a[0], seen_a[1])
    for x, y in zip(seen_a, seen_b, strict=True):
        assert torch.equal(x, y)
    flat_full = full.flatten(1)
    matches = (seen_a[0].flatten(1)[:, None] == flat_full[None]).all(-1)  # (300, 1000)
    assert (matches.sum(1) >= 1).all()
    assert len(torch.unique(matches.float().argmax(1))) == 300
    # another seed: another evaluation set, so another subset
    assert not torch.equal(seen_c[0], seen_a[0])


def test_evaluated_images_counts_the_subset_and_the_final_evaluation():
    assert evaluated_images(TrainConfig(epochs=30, train_size=1_000)) == 29 * 2_000 + 10_000
    assert evaluated_images(PRESETS["Overfitting lab"]) == 29 * 1_000 + 10_000
    assert evaluated_images(TrainConfig(epochs=1)) == 10_000
    # a subset never larger than the evaluation set
    assert evaluated_images(TrainConfig(epochs=3, eval_size=500)) == 3 * 500
    everything = TrainConfig(epochs=4, epoch_eval_size=10_000)
    assert evaluated_images(everything) == 4 * 10_000


def test_old_metric_records_still_load():
    old = {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.4, "test_acc": 0.9,
           "seconds": 1.0}  # fmt: skip
    m = EpochMetrics.from_dict(old)
    assert m.test_images == 0 and m.test_loss == 0.4
    assert EpochMetrics.from_dict(m.to_dict()) == m
    assert EpochMetrics.from_dict({**old, "test_images": 2_000}).test_images == 2_000
    with pytest.raises(KeyError):
        EpochMetrics.from_dict({k: v for k, v in old.items() if k != "test_loss"})


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


def fake_probe(ms: dict[Plan, float]):
    return lambda device, plans=None: ProbeResult(str(device), ms, 1, 0.0)


def test_precision_resolution_follows_the_measurement(monkeypatch):
    cpu = torch.device("cpu")
    fast_bf16 = Plan(torch.bfloat16, True)
    plans = {Plan(torch.float32, True, "gemm"): 5.0, Plan(torch.float32, False): 4.0}
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)  # bf16 is a candidate
    for bf16_ms, auto in ((3.0, torch.bfloat16), (9.0, torch.float32)):
        monkeypatch.setattr(training, "_probe_cache", {})
        monkeypatch.setattr(training, "run_probe", fake_probe({**plans, fast_bf16: bf16_ms}))
        assert resolve_precision("auto", cpu) == auto
        assert resolve_precision("fp32", cpu) == torch.float32
        assert resolve_precision("bf16", cpu) == torch.bfloat16
        # explicit precisions still get the fastest layout measured for them
        assert resolve_plan("fp32", cpu) == Plan(torch.float32, False)
        assert resolve_plan("bf16", cpu) == fast_bf16
    with pytest.raises(ValueError):
        resolve_plan("fp8", cpu)


def test_probe_measures_every_candidate_once_per_process(monkeypatch):
    monkeypatch.setattr(training, "_probe_cache", {})
    calls = []
    real = training.run_probe

    def counting(device, plans=None):
        calls.append(device)
        return real(device, plans)

    monkeypatch.setattr(training, "run_probe", counting)
    cpu = torch.device("cpu")
    results, threads = [], []
    for _ in range(4):  # runs that start together wait for one probe
        threads.append(threading.Thread(target=lambda: results.append(training.probe(cpu))))
        threads[-1].start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(r is results[0] for r in results)
    result = results[0]
    assert set(result.ms) == set(training.candidate_plans(cpu))
    assert all(ms > 0 for ms in result.ms.values())
    auto = resolve_plan("auto", cpu)
    assert auto in training.candidate_plans(cpu) and auto == result.best()
    assert result.ms[auto] == min(result.ms.values())
    assert resolve_precision("auto", cpu) == auto.dtype
    assert len(calls) == 1  # cached
    assert "ms" in result.summary() and auto.describe() in result.summary()


def test_probe_once_per_thread_count_and_the_warm_up_measures_each(monkeypatch):
    """A class's runs train at 1 torch thread each and a lone run at all cores; which kernel is
    faster can differ between the two, so each thread count gets its own measurement."""
    monkeypatch.setattr(training, "_probe_cache", {})
    seen = []

    def recording(device, plans=None):
        seen.append(torch.get_num_threads())
        return ProbeResult(str(device), {FP32_PLANS[1]: 1.0}, seen[-1], 0.0)

    monkeypatch.setattr(training, "run_probe", recording)
    monkeypatch.setattr(training, "resolve_device", lambda name: torch.device("cpu"))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        training.probe_default_device()
        assert sorted(seen) == [1, 2] and torch.get_num_threads() == 2  # restored
        assert single_threaded_caller() == 2 and torch.get_num_threads() == 1
        seen.clear()
        training._probe_cache.clear()
        training.probe_default_device(2)  # a worker's main thread: one thread, told the cores
        assert sorted(seen) == [1, 2] and torch.get_num_threads() == 1
        assert training.probe(torch.device("cpu")).threads == 1
        torch.set_num_threads(2)
        assert training.probe(torch.device("cpu")).threads == 2
        assert len(seen) == 2  # both cached by the warm-up
    finally:
        torch.set_num_threads(before)


def test_a_gpu_probe_does_not_charge_its_start_up_to_the_first_plan(monkeypatch):
    """On a GPU the first step of a process pays for the context and kernel loading: the plan
    that happens to go first must not look slow (and be dropped) because of it."""
    calls = []
    monkeypatch.setattr(training, "_probe_step", lambda plan, device: lambda: calls.append(plan))

    def fake_timed(step):  # the device's very first step costs 1 s, every other one 1 ms
        step()
        return 1000.0 if len(calls) == 1 else 1.0

    monkeypatch.setattr(training, "_timed", fake_timed)
    plans = [Plan(torch.float32, True), Plan(torch.float32, False), Plan(torch.bfloat16, True)]
    gpu = training.run_probe(torch.device("cuda"), plans)
    assert gpu.ms == {plan: 1.0 for plan in plans}
    calls.clear()  # the CPU probe stays short: no untimed steps, so its first step counts
    cpu = training.run_probe(torch.device("cpu"), plans)
    assert cpu.ms[plans[0]] == 1000.0 and len(calls) == 1 + 2 * (1 + training.PROBE_ROUNDS)


def test_bf16_is_a_cpu_candidate_only_where_the_cpu_computes_it(monkeypatch):
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(training, "cpu_has_bf16", lambda native=native: native)
        dtypes = {p.dtype for p in training.candidate_plans(cpu)}
        assert dtypes == ({torch.float32, torch.bfloat16} if native else {torch.float32})
    # asked for explicitly, bf16 still runs (emulated) where the probe did not measure it
    monkeypatch.setattr(training, "_probe_cache", {})
    monkeypatch.setattr(training, "run_probe", fake_probe({FP32_PLANS[1]: 1.0}))
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_plan("bf16", cpu).dtype == torch.bfloat16
    assert resolve_plan("auto", cpu) == FP32_PLANS[1]


def test_auto_precision_needs_no_probe_where_every_candidate_is_fp32(monkeypatch):
    """A run's key resolves "auto" in the click that asks for the run: without a bf16
    candidate the answer is fp32 whatever the probe finds, so no probe is waited for."""
    cpu = torch.device("cpu")
    calls = []
    monkeypatch.setattr(training, "_probe_cache", {})
    monkeypatch.setattr(training, "run_probe", lambda device, plans=None: calls.append(device))
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == torch.float32
    assert calls == []
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)  # then it must measure
    monkeypatch.setattr(training, "run_probe", fake_probe({Plan(torch.bfloat16, True): 1.0}))
    assert resolve_precision("auto", cpu) == torch.bfloat16


def test_fit_reports_the_plan_it_used(mnist, monkeypatch):
    plan = Plan(torch.bfloat16, True, "conv")
    monkeypatch.setattr(training, "_probe_cache", {})
    monkeypatch.setattr(training, "run_probe", fake_probe({plan: 1.0, FP32_PLANS[0]: 2.0}))
    result = fit(TINY.replace(precision="auto", epochs=1), mnist)
    assert (result.precision, result.plan) == ("bf16", plan.describe())


def test_config_round_trip_through_the_new_field():
    c = TINY.replace(epoch_eval_size=123)
    assert TrainConfig.from_dict(c.to_dict()) == c
    old = {k: v for k, v in dataclasses.asdict(TINY).items() if k != "epoch_eval_size"}
    assert TrainConfig.from_dict(old).epoch_eval_size == TrainConfig().epoch_eval_size


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


def test_a_smaller_epoch_subset_is_the_start_of_a_larger_one(mnist):
    """The Overfitting lab's 1,000 per-epoch images are the first half of the default 2,000."""
    x, y = normalize(mnist.test_images), mnist.test_labels
    small = training.epoch_eval_subset(x, y, TrainConfig(epoch_eval_size=1_000))
    large = training.epoch_eval_subset(x, y, TrainConfig(epoch_eval_size=2_000))
    assert len(small[0]) == 1_000 and len(large[0]) == 2_000
    assert torch.equal(small[0], large[0][:1_000]) and torch.equal(small[1], large[1][:1_000])
