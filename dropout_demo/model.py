"""The seed tutorial's SimpleCNN, with its flatten size derived instead of hard-coded."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig

IMAGE_SIZE = 28
NUM_CLASSES = 10
HIDDEN_UNITS = 128


def conv_features(image_size: int = IMAGE_SIZE) -> int:
    """Flattened size after the seed's two (3x3 valid conv, 2x2 max-pool) stages.

    28 -> conv 26 -> pool 13 -> conv 11 -> pool 5, so 64 * 5 * 5 = 1600. The seed wrote
    64 * 6 * 6 = 2304, which makes fc1 reject the flattened tensor.
    """
    side = image_size
    for _ in range(2):
        side = (side - 2) // 2  # valid 3x3 conv, then floor-mode 2x2 pool
    return 64 * side * side


class Dropout(nn.Dropout):
    """``nn.Dropout`` (inverted dropout) that can draw its masks from its own generator.

    Training runs share one process, and torch's default generator is process-wide: two runs
    in parallel threads would interleave their draws. A run-owned generator keeps a run
    reproducible from its seed whatever else is training. With ``generator=None`` this is
    exactly ``nn.Dropout``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p=p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)  # kept units scaled by 1/(1-p); eval is the identity


class SimpleCNN(nn.Module):
    """conv(1->32) relu pool, conv(32->64) relu pool, fc(->128) relu, dropout(p), fc(->10)."""

    def __init__(
        self,
        p: float = 0.5,
        image_size: int = IMAGE_SIZE,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(conv_features(image_size), HIDDEN_UNITS)
        self.fc2 = nn.Linear(HIDDEN_UNITS, NUM_CLASSES)
        self.dropout = Dropout(p=p)
        if generator is not None:
            init_parameters(self, generator)

    @property
    def p(self) -> float:
        return float(self.dropout.p)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> fc1 activations after ReLU, before dropout: (N, 128)."""
        # The seed applies ReLU then max-pool. Both are monotone, so pool-then-ReLU computes the
        # same values while running ReLU (and its backward) on a quarter of the elements.
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # (N, 32, 13, 13)
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # (N, 64, 5, 5)
        x = torch.flatten(x, 1)  # (N, 1600)
        return F.relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))  # (N, 10) logits


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Conv2d/Linear initialisation, drawn from ``generator``.

    Same distribution as ``reset_parameters`` (kaiming-uniform with a = sqrt(5), bias
    uniform in +-1/sqrt(fan_in)), but independent of the process-wide RNG.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def build_model(config: TrainConfig, generator: torch.Generator | None = None) -> SimpleCNN:
    return SimpleCNN(p=config.p, generator=generator)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def set_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere except the dropout layers, which sample masks (MC dropout)."""
    model.eval()
    for layer in dropout_layers(model):
        layer.train()
    return model


@contextlib.contextmanager
def _modes_restored(model: nn.Module) -> Iterator[None]:
    """Puts every module back in the train/eval mode it had on entry."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager form of :func:`set_mc_dropout` that restores every module's mode."""
    with _modes_restored(model):
        yield set_mc_dropout(model)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Plain eval mode (dropout is the identity), restoring every module's mode afterwards."""
    with _modes_restored(model):
        yield model.eval()


def make_checkpoint(model: SimpleCNN, config: TrainConfig, **extra: Any) -> dict[str, Any]:
    """A dict of plain types and tensors, loadable with ``torch.load(weights_only=True)``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"config": config.to_dict(), "state_dict": state, **extra}


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[SimpleCNN, TrainConfig]:
    config = TrainConfig.from_dict(dict(ckpt["config"]))
    model = build_model(config)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, config
