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
from .data import MEAN, MNIST, STD, normalize, subset
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
    conv2: str = "conv"  # SimpleCNN.conv2_kernel: weight gradient by the library or a GEMM

    @property
    def precision(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        conv1 = "conv1 as pooling-window GEMMs" if self.conv1 == "gemm" else "conv1 convolution"
        conv2 = ", conv2 weight gradient as a GEMM" if self.conv2 == "gemm" else ""
        return f"{self.precision}, {layout}, {conv1}{conv2}"


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
_probe_cache: dict[tuple[str, int], ProbeResult] = {}


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
        plans.append(Plan(fp32, True, "conv", "gemm"))
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
    model.conv1_kernel, model.conv2_kernel = plan.conv1, plan.conv2
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
    if device.type != "cpu":
        # A GPU's first steps pay for its context, kernel loading and autotuning; whichever
        # plan went first would look slowest and be dropped. One untimed step each first.
        for step in steps.values():
            step()
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
    """The measured plans for ``device`` at the calling thread's torch thread count: probed
    once per process, device and thread count, then cached. (Which kernel is faster can
    depend on the threads: on the machine of the README's figures conv2's weight gradient as a
    GEMM lost at 2 threads and was level with the library's at 1; a class's runs train at 1
    thread each, a lone run at 2.)

    Thread-safe: runs that start together wait for one probe instead of each running one.
    """
    key = (str(device), torch.get_num_threads())
    with _probe_lock:
        if key not in _probe_cache:
            _probe_cache[key] = run_probe(device)
        return _probe_cache[key]


def probe_default_device(threads: int | None = None) -> None:
    """Probe the device a default run trains on, now (a training worker's warm-up), at each
    thread count a run can get on a CPU: one (runs sharing the cores) up to ``threads``
    (default: the calling thread's count), all of them.

    The calling thread probes at one thread and the multi-threaded probe runs in a thread of
    its own that ends: a long-lived thread (a worker's main thread) must not keep an OpenMP
    pool (see :mod:`.openmp`).
    """
    device = resolve_device(TrainConfig().device)
    if device.type != "cpu":
        probe(device)
        return
    before = torch.get_num_threads()
    threads = before if threads is None else threads
    try:
        torch.set_num_threads(1)
        probe(device)
    finally:
        torch.set_num_threads(before)
    if threads > 1:

        def at_all_cores() -> None:
            torch.set_num_threads(threads)
            probe(device)

        prober = threading.Thread(target=at_all_cores, name="dropout-probe")
        prober.start()
        prober.join()


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

    "auto" is whichever the probe measured faster on ``device`` (see :func:`probe`), and needs
    no probe where every candidate computes in one dtype (a CPU without native bf16): a run's
    key (``jobs.identity``) is computed in the page's click, which should not wait seconds for
    a probe that cannot change it.
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        dtypes = {plan.dtype for plan in candidate_plans(device)}
        if len(dtypes) == 1:
            return dtypes.pop()
    return resolve_plan(precision, device).dtype


# ---------------------------------------------------------------- pen-stroke augmentation
# People draw with a pen of one width along the digit's centre line; MNIST's strokes were
# scanned pen-and-paper strokes of varying width and softness. TrainConfig.augment = "pen"
# redraws part of each batch that way: a small random affine (rotation, shear, aspect), the
# centre line (parallel thinning), a round pen of random width, on whole batches with tensor
# ops at 2x resolution. Its random numbers come from their own generator (seed + 2), so a
# run's batch order and dropout masks are the same with and without it.
PEN_FRACTION = 0.5  # share of each batch redrawn; the rest stays as MNIST has it
PEN_ROTATION = 12.0  # degrees, either way
PEN_SHEAR = 0.2
PEN_ASPECT = 0.15  # width/height scaled by up to exp(+-0.15)
PEN_WIDTH = (1.6, 3.0)  # 28x28 px; ink like canvas.preprocess leaves of 14-24 px pen drawings
_PEN_ITERATIONS = 8  # thinning steps at most (MNIST's boldest strokes need about 4 at 28x28)
CENTRE_LINE_CHUNK = 4_096


def augment_generator(seed: int) -> torch.Generator:
    """The generator a run's augmentation draws from, separate from batch order and masks."""
    return torch.Generator().manual_seed(seed + 2)


def _thinning_tables() -> torch.Tensor:
    """(2, 256) uint8: the deletion tables of the two sub-iterations of Guo & Hall's parallel
    thinning (1989, algorithm A1), indexed by the 8-neighbourhood code (bit i: E, NE, N, NW,
    W, SW, S, SE)."""
    tables = torch.zeros(2, 256, dtype=torch.uint8)
    for code in range(256):
        b = [(code >> i) & 1 for i in range(8)]
        # one 8-connected run of neighbours: removing the pixel keeps the topology
        crossings = sum(1 for i in (0, 2, 4, 6) if not b[i] and (b[i + 1] or b[(i + 2) % 8]))
        n1 = sum(1 for k in (1, 3, 5, 7) if b[k] or b[k - 1])
        n2 = sum(1 for k in (1, 3, 5, 7) if b[k] or b[(k + 1) % 8])
        deletable = crossings == 1 and min(n1, n2) in (2, 3)  # neither an end nor interior
        tables[0, code] = deletable and not ((b[1] or b[2] or not b[7]) and b[0])
        tables[1, code] = deletable and not ((b[5] or b[6] or not b[3]) and b[4])
    return tables


_THIN_TABLES = _thinning_tables()
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _neighbour_codes(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool -> int64 codes of each pixel's 8 neighbours (bit i: _NEIGHBOURS[i])."""
    a = F.pad(mask.to(torch.uint8), (1, 1, 1, 1))
    h, w = a.shape[-2:]
    code = torch.zeros_like(a[..., 1:-1, 1:-1])
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):  # adds, not shifts: 2-3x faster on the CPU
        code.add_(a[..., 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx], alpha=1 << bit)
    return code.long()


def thin(mask: torch.Tensor, max_iterations: int = 1_000) -> torch.Tensor:
    """(B, 1, H, W) bool -> the centre lines: one pixel wide, 8-connected, same topology."""
    tables = _THIN_TABLES.to(mask.device)
    mask = mask.clone()
    for _ in range(max_iterations):
        changed = False
        for table in tables:
            delete = mask & torch.take(table, _neighbour_codes(mask)).bool()
            if delete.any():
                mask &= ~delete
                changed = True
        if not changed:
            break
    return mask


_PEN_KERNEL = 7  # pen footprint at 2x: 7x7 holds the widest pen (3 px = 6 at 2x)


def _pen_kernels(width: torch.Tensor) -> torch.Tensor:
    """(B,) pen widths (28x28 px) -> (B, 1, 7, 7) round pens at 2x resolution, soft-edged.

    They stamp 2x2 blocks (a centre-line pixel at 2x), hence a radius half a pixel smaller.
    """
    half = _PEN_KERNEL // 2
    grid = torch.arange(-half, half + 1, dtype=torch.float32, device=width.device)
    dist = torch.hypot(grid.view(-1, 1), grid.view(1, -1))  # (7, 7)
    radius = width.view(-1, 1, 1) - 0.5  # 2x pixels: width / 2 * 2, less the block's half
    return (radius - dist + 0.5).clamp(0.0, 1.0).unsqueeze(1)


def centre_lines(x: torch.Tensor, should_stop: ShouldStop | None = None) -> torch.Tensor | None:
    """Normalised digits (N, 1, 28, 28) -> their centre lines, (N, 1, 28, 28) bool.

    Computed once per run, in chunks (thinning 4,096 digits at once costs a third of
    thinning them 32 at a time). None when ``should_stop`` asks to stop.
    """
    out = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    for start in range(0, len(x), CENTRE_LINE_CHUNK):
        if should_stop is not None and should_stop():
            return None
        chunk = x[start : start + CENTRE_LINE_CHUNK]
        out[start : start + len(chunk)] = thin(chunk * STD + MEAN > 0.5, _PEN_ITERATIONS)
    return out


def pen_strokes(lines: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Centre lines (B, 1, 28, 28) bool -> normalised digits drawn along them with a round pen
    of random width, slightly rotated, sheared and stretched, peak ink 1 (as MNIST's)."""
    b, _, side, _ = lines.shape
    x = lines

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) * (hi - lo) + lo).to(x.device)

    angle = uniform(-PEN_ROTATION, PEN_ROTATION) * (math.pi / 180)
    shear = uniform(-PEN_SHEAR, PEN_SHEAR)
    aspect = torch.exp(uniform(-PEN_ASPECT, PEN_ASPECT))
    width = uniform(*PEN_WIDTH)
    big = F.interpolate(lines.float(), scale_factor=2.0, mode="nearest")  # (B, 1, 56, 56)
    # each image its own pen: the batch as channels of one grouped convolution; a 2x line is
    # two blocks thick, hence the half
    drawn = F.conv2d(
        big.view(1, b, 2 * side, 2 * side), _pen_kernels(width), padding="same", groups=b
    )
    drawn = (drawn.view(b, 1, 2 * side, 2 * side) * 0.5).clamp_(0.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input coordinates (affine_grid's convention): rotate, shear, stretch
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = cos * aspect
    theta[:, 0, 1] = -sin * aspect + shear
    theta[:, 1, 0] = sin / aspect
    theta[:, 1, 1] = cos / aspect
    grid = F.affine_grid(theta, [b, 1, 2 * side, 2 * side], align_corners=False)
    drawn = F.grid_sample(drawn, grid, align_corners=False)  # (B, 1, 56, 56)
    out = F.avg_pool2d(drawn, 2)  # (B, 1, 28, 28): anti-aliased
    out = out / out.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)  # peak 1, as MNIST's
    return (out - MEAN) / STD


def augment_batch(
    xb: torch.Tensor,
    lines: torch.Tensor | None,
    gen: torch.Generator,
    fraction: float = PEN_FRACTION,
) -> torch.Tensor:
    """The batch as a "pen" run trains on it: ``fraction`` of its digits (drawn from ``gen``)
    redrawn from their centre lines ``lines``; None: the batch as it is."""
    if lines is None:
        return xb
    chosen = (torch.rand(len(xb), generator=gen) < fraction).nonzero().squeeze(1)
    if len(chosen) == 0:
        return xb
    chosen = chosen.to(xb.device)
    out = xb.clone()
    out[chosen] = pen_strokes(lines[chosen], gen).to(xb.dtype)
    return out


@dataclass(frozen=True)
class Tensors:
    """Normalised images (N, 1, 28, 28) float32 and int64 labels, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


ONE_CYCLE_WARMUP = 0.15  # share of a one-cycle run's batches spent rising to the peak lr
ONE_CYCLE_START = 1 / 25  # where the rise starts, as a share of the peak


def scheduled_lr(config: TrainConfig, step: int, steps: int) -> float:
    """The learning rate of batch ``step`` (0-based) of ``steps`` under ``config.lr_schedule``:
    ``config.lr`` throughout ("constant"), or "one-cycle": a linear rise from lr/25 to lr over
    the first 15% of the batches, then a cosine down to 0 at the last batch."""
    if config.lr_schedule == "constant":
        return config.lr
    frac = min(max(step / max(steps - 1, 1), 0.0), 1.0)
    if frac < ONE_CYCLE_WARMUP:
        rise = frac / ONE_CYCLE_WARMUP
        return config.lr * (ONE_CYCLE_START + (1 - ONE_CYCLE_START) * rise)
    fall = (frac - ONE_CYCLE_WARMUP) / (1 - ONE_CYCLE_WARMUP)
    return config.lr * 0.5 * (1 + math.cos(math.pi * fall))


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
    model.conv1_kernel, model.conv2_kernel = plan.conv1, plan.conv2
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
    scheduled, total_steps = config.lr_schedule != "constant", config.epochs * batches
    started = time.perf_counter()
    metrics: list[EpochMetrics] = []

    def finish(status: str, message: str = "") -> FitResult:
        model.dropout.generator = None
        model.conv1_kernel = model.conv2_kernel = "conv"
        final = model.to(device="cpu", memory_format=torch.contiguous_format).eval()
        return FitResult(
            status, metrics, final, config, message, str(device), plan.precision, plan.describe()
        )

    # pen strokes: every digit's centre line, once; its own random stream
    lines, aug_gen = None, augment_generator(config.seed)
    if config.augment == "pen":
        lines = centre_lines(data_t.x_train, should_stop)
        if lines is None:
            return finish("cancelled", "stopped before the first epoch")
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
            if lines is not None:
                xb = augment_batch(xb, lines[idx], aug_gen)
            with autocast:
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if scheduled:
                for group in optimizer.param_groups:
                    group["lr"] = scheduled_lr(config, (epoch - 1) * batches + b, total_steps)
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
