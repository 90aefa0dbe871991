"""The seed recipe's training loop, run on tensors held in memory.

Same recipe as the seed (Adam, cross-entropy, shuffled mini-batches, running-mean train loss),
without its per-sample pipeline: images are decoded and normalised once and batches are tensor
slices. How the arithmetic is laid out (precision, memory format, conv1 kernel) is chosen by a
short measured probe on the run's device (:func:`probe`), not by CPU flags: machines of the
same kind differ. After every epoch but the last, the test metrics are computed on a fixed
subset of the evaluation set (the same images for every run of a comparison); the last epoch
evaluates all of it. Each :class:`EpochMetrics` says how many test images it used.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import MNIST, normalize, subset
from .model import SimpleCNN, build_model, eval_mode

# Evaluation needs no gradients. 256 keeps activations in cache: on a 2-core CPU the 10,000 test
# images take 0.24 s at 256 against 0.58 s at 1,000 (bench/train_speed.py prints both).
EVAL_BATCH_SIZE = 256

# Part of every run's identity (dropout_demo.jobs.identity): bump it whenever a change to the
# training code changes what a run computes, so cached results of the old code are not reused.
# 2026.11.2: per-epoch test metrics on a subset (TrainConfig.epoch_eval_size), the measured
# precision/layout/kernel choice, conv1 as a GEMM over pooling windows.
TRAINING_VERSION = "2026.11.2"

# The per-epoch evaluation subset is drawn with this seed, not the run's: every run evaluated on
# the same evaluation set (all of them, with the default eval_size) watches the same images.
# A 2,000-image subset's test loss sits about 0.02 (one sd) from the whole set's; the first seed
# tried, 12345, drew an unusually easy subset (0.05-0.07 low on Overfitting-lab models).
EPOCH_EVAL_SEED = 0

OnEpoch = Callable[["EpochMetrics"], None]
OnBatch = Callable[[int, int, int], None]
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float  # the seed's running mean of batch losses over the epoch
    train_acc: float  # fraction in [0, 1], measured on the training batches (dropout on)
    test_loss: float
    test_acc: float  # fraction in [0, 1]
    seconds: float  # elapsed since fit() started
    # How many test images test_loss/test_acc were computed on: the per-epoch subset, or the
    # whole evaluation set (last epoch). 0: not recorded (records older than this field, which
    # evaluated the config's eval_size images every epoch).
    test_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochMetrics:
        fields = dataclasses.fields(cls)
        return cls(**{f.name: d[f.name] for f in fields if f.name in d or _required(f)})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@dataclass
class FitResult:
    status: str  # "done", "cancelled" or "diverged"
    metrics: list[EpochMetrics]
    model: SimpleCNN  # on the CPU, in eval mode
    config: TrainConfig
    message: str = ""
    device: str = field(default="cpu")
    precision: str = "fp32"  # what the training passes computed in: "fp32" or "bf16"
    plan: str = ""  # how, in words: precision, memory format, conv1 kernel (Plan.describe())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; an explicit CUDA request must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    return device


def mask_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator a run's dropout masks come from, separate from its batch order."""
    return torch.Generator(device).manual_seed(seed + 1)


@dataclass(frozen=True)
class Plan:
    """How a training step is computed: the same function, laid out differently."""

    dtype: torch.dtype  # float32, or bfloat16 autocast (weights, optimizer and loss float32)
    channels_last: bool  # memory format of the model's weights and activations
    conv1: str = "conv"  # SimpleCNN.conv1_kernel: "conv" (library) or "gemm" (CPU)

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        conv1 = "conv1 as pooling-window GEMMs" if self.conv1 == "gemm" else "conv1 convolution"
        return f"{self.precision}, {layout}, {conv1}"


@dataclass(frozen=True)
class ProbeResult:
    """The probe's measurements on one device: median ms per training step of each plan."""

    device: str
    ms: dict[Plan, float]  # plans dropped after their warm-up step carry that step's time
    threads: int  # torch intra-op threads of the thread that probed
    seconds: float  # what the probe cost

    def best(self, dtype: torch.dtype | None = None) -> Plan:
        plans = [p for p in self.ms if dtype is None or p.dtype == dtype]
        return min(plans, key=self.ms.__getitem__)

    def summary(self) -> str:
        ranked = sorted(self.ms.items(), key=lambda kv: kv[1])
        parts = [f"{plan.describe()} {ms:.1f} ms" for plan, ms in ranked]
        return f"probe on {self.device} ({self.threads} threads, {self.seconds:.2f} s): " + (
            "; ".join(parts)
        )


PROBE_BATCH = 64
PROBE_ROUNDS = 3  # timed steps per surviving plan, after one warm-up step
# A plan whose warm-up step is this many times slower than the fastest warm-up is dropped
# without timing it further: it keeps the probe short where a plan is hopeless.
PROBE_DROP_FACTOR = 4.0

_probe_lock = threading.Lock()
_probe_cache: dict[str, ProbeResult] = {}


def cpu_has_bf16() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (else it emulates it, ~10x slower
    than float32 here): only then is bf16 worth measuring. Having it does not make it faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def candidate_plans(device: torch.device) -> list[Plan]:
    """What the probe compares on ``device``: layouts, conv1 kernels and precisions."""
    fp32, bf16 = torch.float32, torch.bfloat16
    if device.type == "cpu":
        plans = [Plan(fp32, True, "gemm"), Plan(fp32, True, "conv"), Plan(fp32, False, "conv")]
        return [*plans, Plan(bf16, True, "conv")] if cpu_has_bf16() else plans
    plans = [Plan(fp32, True), Plan(fp32, False)]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        plans += [Plan(bf16, True), Plan(bf16, False)]
    return plans


def _probe_step(plan: Plan, device: torch.device) -> Callable[[], None]:
    """One training step of the seed recipe laid out as ``plan``, on random data."""
    gen = torch.Generator().manual_seed(0)  # never the process-wide RNG
    model = SimpleCNN(p=0.5, generator=gen).to(device)
    model.dropout.generator = mask_generator(0, device)
    model.conv1_kernel = plan.conv1
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x = torch.randn(PROBE_BATCH, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (PROBE_BATCH,), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=plan.dtype, enabled=plan.dtype != torch.float32)

    def step() -> None:
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the device

    return step


def _timed(step: Callable[[], None]) -> float:
    start = time.perf_counter()
    step()
    return 1000 * (time.perf_counter() - start)


def run_probe(device: torch.device, plans: list[Plan] | None = None) -> ProbeResult:
    """Time a few training steps of each plan on ``device`` (uncached; see :func:`probe`).

    Plans are timed in turns, one step each per round, so a load that comes and goes on a
    shared machine hits them alike.
    """
    started = time.perf_counter()
    plans = candidate_plans(device) if plans is None else plans
    steps = {plan: _probe_step(plan, device) for plan in plans}
    warm = {plan: _timed(step) for plan, step in steps.items()}
    fastest = min(warm.values())
    alive = [p for p in plans if warm[p] <= PROBE_DROP_FACTOR * fastest]
    times: dict[Plan, list[float]] = {p: [] for p in alive}
    for _ in range(PROBE_ROUNDS):
        for plan in alive:
            times[plan].append(_timed(steps[plan]))
    ms = {p: statistics.median(times[p]) if p in times else warm[p] for p in plans}
    return ProbeResult(str(device), ms, torch.get_num_threads(), time.perf_counter() - started)


def probe(device: torch.device) -> ProbeResult:
    """The measured plans for ``device``: probed once per process and device, then cached.

    Thread-safe: runs that start together wait for one probe instead of each running one.
    """
    key = str(device)
    with _probe_lock:
        if key not in _probe_cache:
            _probe_cache[key] = run_probe(device)
        return _probe_cache[key]


def resolve_plan(precision: str, device: torch.device) -> Plan:
    """The fastest measured plan for ``precision``: "auto" (any), "fp32" or "bf16"."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}")
    result = probe(device)
    if precision == "auto":
        return result.best()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if any(p.dtype == dtype for p in result.ms):
        return result.best(dtype)
    return Plan(dtype, True)  # bf16 on a device without it: asked for, so emulated


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the training passes compute in: float32, or bfloat16 under autocast.

    "auto" is whichever the probe measured faster on ``device`` (see :func:`probe`).
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    return resolve_plan(precision, device).dtype


@dataclass(frozen=True)
class Tensors:
    """Normalised images (N, 1, 28, 28) float32 and int64 labels, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def epoch_eval_images(config: TrainConfig) -> int:
    """Test images evaluated after each epoch but the last (a subset of the evaluation set)."""
    return min(config.epoch_eval_size, config.eval_size)


def evaluated_images(config: TrainConfig) -> int:
    """How many test images a whole run evaluates (admission counts them as work)."""
    return (config.epochs - 1) * epoch_eval_images(config) + config.eval_size


def epoch_eval_subset(
    images: torch.Tensor, labels: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-epoch subset of the evaluation set ``images``/``labels``: drawn with a fixed
    seed, so it depends on the evaluation set only (never on p): every run of a comparison is
    watched on the same images."""
    return subset(images, labels, epoch_eval_images(config), EPOCH_EVAL_SEED)


def prepare_tensors(config: TrainConfig, data: MNIST, device: torch.device) -> Tensors:
    """The run's training subset and evaluation set, normalised once, moved to ``device``."""
    train_x, train_y = subset(data.train_images, data.train_labels, config.train_size, config.seed)
    test_x, test_y = subset(data.test_images, data.test_labels, config.eval_size, config.seed)
    return Tensors(
        normalize(train_x).to(device),
        train_y.to(device),
        normalize(test_x).to(device),
        test_y.to(device),
    )


def evaluate(
    model: SimpleCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
    should_stop: ShouldStop | None = None,
) -> tuple[float, float] | None:
    """Mean cross-entropy and accuracy with dropout off; the model's modes are restored.

    Returns None when ``should_stop`` asks to stop (polled between batches).
    """
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            if should_stop is not None and should_stop():
                return None
            logits = model(x[start : start + batch_size])
            yb = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def fit(
    config: TrainConfig,
    data: MNIST,
    on_epoch: OnEpoch | None = None,
    should_stop: ShouldStop | None = None,
    on_batch: OnBatch | None = None,
) -> FitResult:
    """Train ``SimpleCNN(config.p)`` with the seed recipe; report metrics after every epoch.

    Deterministic for a given seed on the CPU at a fixed thread count and plan: initial
    weights, the training subset, batch order and dropout masks all come from generators
    seeded by ``config.seed``, never from the process-wide RNG that concurrent runs share (a
    different intra-op thread count or memory layout can still change the last bits of float
    sums). ``should_stop`` is polled before every batch and between evaluation batches. Test
    metrics: the per-epoch subset after every epoch but the last, all of ``eval_size`` after
    the last (``EpochMetrics.test_images`` says which).
    """
    device = resolve_device(config.device)
    plan = resolve_plan(config.precision, device)
    gen = torch.Generator().manual_seed(config.seed)  # initial weights, then batch order
    model = build_model(config, generator=gen).to(device)
    # Masks get their own stream: at p = 0 no mask is drawn, and sharing ``gen`` would then
    # shift every later batch order, so "the same run at p = 0" would not see the same batches.
    model.dropout.generator = mask_generator(config.seed, device)
    model.conv1_kernel = plan.conv1
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    # Mixed precision: weights, gradients, optimizer state and the loss stay float32.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=plan.precision == "bf16")
    data_t = prepare_tensors(config, data, device)
    epoch_x, epoch_y = epoch_eval_subset(data_t.x_test, data_t.y_test, config)

    n = len(data_t.x_train)
    bs = config.batch_size
    batches = math.ceil(n / bs)
    # Reading the loss back waits for the device; on a GPU do it every few batches only.
    check_every = 1 if device.type == "cpu" else 50
    started = time.perf_counter()
    metrics: list[EpochMetrics] = []

    def finish(status: str, message: str = "") -> FitResult:
        model.dropout.generator = None
        model.conv1_kernel = "conv"
        final = model.to(device="cpu", memory_format=torch.contiguous_format).eval()
        return FitResult(
            status, metrics, final, config, message, str(device), plan.precision, plan.describe()
        )

    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # as the seed's float sum
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for b in range(batches):
            if should_stop is not None and should_stop():
                return finish("cancelled", f"stopped during epoch {epoch}")
            idx = order[b * bs : (b + 1) * bs]
            xb, yb = data_t.x_train[idx], data_t.y_train[idx]  # (bs, 1, 28, 28), (bs,)
            with autocast:
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == yb).sum()
            if (b + 1) % check_every == 0 or b + 1 == batches:
                total = loss_sum.item()
                if not math.isfinite(total):
                    return finish(
                        "diverged",
                        f"loss became {total} at epoch {epoch}, by batch {b + 1}: "
                        f"the learning rate {config.lr:g} is too high for this model",
                    )
            if on_batch is not None:
                on_batch(epoch, b + 1, batches)
        last = epoch == config.epochs
        test_x, test_y = (data_t.x_test, data_t.y_test) if last else (epoch_x, epoch_y)
        evaluation = evaluate(model, test_x, test_y, should_stop=should_stop)
        if evaluation is None:
            return finish("cancelled", f"stopped while evaluating epoch {epoch}")
        test_loss, test_acc = evaluation
        m = EpochMetrics(
            epoch=epoch,
            train_loss=total / batches,
            train_acc=correct.item() / n,
            test_loss=test_loss,
            test_acc=test_acc,
            seconds=time.perf_counter() - started,
            test_images=len(test_x),
        )
        metrics.append(m)
        if on_epoch is not None:
            on_epoch(m)
    return finish("done")
