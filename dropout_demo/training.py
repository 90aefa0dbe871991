"""The seed recipe's training loop, run on tensors held in memory.

Same recipe as the seed (Adam, cross-entropy, shuffled mini-batches, running-mean train loss),
without its per-sample pipeline: images are decoded and normalised once, each epoch gathers the
shuffled set in one indexing op, and batches are views into it.
"""

from __future__ import annotations

import dataclasses
import math
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
TRAINING_VERSION = "2026.11.1"

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochMetrics:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


@dataclass
class FitResult:
    status: str  # "done", "cancelled" or "diverged"
    metrics: list[EpochMetrics]
    model: SimpleCNN  # on the CPU, in eval mode
    config: TrainConfig
    message: str = ""
    device: str = field(default="cpu")
    precision: str = "fp32"  # what the training passes computed in: "fp32" or "bf16"


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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions/matmuls natively (fast, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the training passes compute in: float32, or bfloat16 under autocast."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class Tensors:
    """Normalised images (N, 1, 28, 28) float32 and int64 labels, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def evaluated_images(config: TrainConfig) -> int:
    """How many test images a whole run evaluates (admission counts them as work)."""
    return config.epochs * config.eval_size


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

    Deterministic for a given seed on the CPU at a fixed thread count: initial weights, the
    training subset, batch order and dropout masks all come from generators seeded by
    ``config.seed``, never from the process-wide RNG that concurrent runs share (a different
    intra-op thread count can still change the last bits of float sums). ``should_stop`` is
    polled before every batch and between evaluation batches.
    """
    device = resolve_device(config.device)
    gen = torch.Generator().manual_seed(config.seed)  # initial weights, then batch order
    model = build_model(config, generator=gen).to(device)
    # Masks get their own stream: at p = 0 no mask is drawn, and sharing ``gen`` would then
    # shift every later batch order, so "the same run at p = 0" would not see the same batches.
    model.dropout.generator = mask_generator(config.seed, device)
    # channels_last lets oneDNN pick its fastest convolution kernels (about 10-20% per batch).
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    compute_dtype = resolve_precision(config.precision, device)
    # Mixed precision: weights, gradients, optimizer state and the loss stay float32.
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=compute_dtype == torch.bfloat16
    )
    data_t = prepare_tensors(config, data, device)

    n = len(data_t.x_train)
    bs = config.batch_size
    batches = math.ceil(n / bs)
    started = time.perf_counter()
    metrics: list[EpochMetrics] = []

    def finish(status: str, message: str = "") -> FitResult:
        model.dropout.generator = None
        final = model.to(device="cpu", memory_format=torch.contiguous_format).eval()
        used = "bf16" if compute_dtype == torch.bfloat16 else "fp32"
        return FitResult(status, metrics, final, config, message, str(device), used)

    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum = 0.0
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
            batch_loss = loss.item()
            if not math.isfinite(batch_loss):
                return finish(
                    "diverged",
                    f"loss became {batch_loss} at epoch {epoch}, batch {b + 1}: "
                    f"the learning rate {config.lr:g} is too high for this model",
                )
            loss_sum += batch_loss
            correct += (logits.detach().argmax(1) == yb).sum()
            if on_batch is not None:
                on_batch(epoch, b + 1, batches)
        evaluation = evaluate(model, data_t.x_test, data_t.y_test, should_stop=should_stop)
        if evaluation is None:
            return finish("cancelled", f"stopped while evaluating epoch {epoch}")
        test_loss, test_acc = evaluation
        m = EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum / batches,
            train_acc=correct.item() / n,
            test_loss=test_loss,
            test_acc=test_acc,
            seconds=time.perf_counter() - started,
        )
        metrics.append(m)
        if on_epoch is not None:
            on_epoch(m)
    return finish("done")
