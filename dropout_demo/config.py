"""Training configuration: a frozen, validated dataclass and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
PRECISIONS = ("auto", "fp32", "bf16")
AUGMENTS = ("none", "pen")
LR_SCHEDULES = ("constant", "one-cycle")


class ConfigError(ValueError):
    """A configuration with one or more invalid fields; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid training config: " + "; ".join(self.problems))


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Defaults are the seed tutorial's recipe."""

    p: float = 0.5  # PyTorch convention: probability of *dropping* a unit
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    train_size: int = MNIST_TRAIN_SIZE
    eval_size: int = MNIST_TEST_SIZE  # test images evaluated after the last epoch
    # Test images evaluated after each earlier epoch: a fixed subset of the eval_size images
    # (at most all of them), so evaluation does not dominate small runs. 10,000: all, always.
    epoch_eval_size: int = 2_000
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:N"
    # Arithmetic of the training forward/backward passes: "fp32"; "bf16" (mixed precision:
    # bfloat16 convolutions and matmuls, float32 weights, optimizer and loss); "auto": whichever
    # a short probe measures faster on the run's device (training.probe). Evaluation is float32.
    precision: str = "auto"
    # Training-time augmentation: "none" (the seed recipe), or "pen": part of each batch
    # redrawn along the digits' centre lines with a round pen of random width, as people draw
    # on the canvas (training.pen_strokes). Part of a run's identity only when not "none".
    augment: str = "none"
    # Learning rate over the run: "constant" (the seed recipe: lr throughout), or "one-cycle":
    # up from lr/25 to lr over the first 15% of the batches, then down to 0 along a cosine
    # (training.scheduled_lr). Part of a run's identity only when not "constant".
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        problems = []

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not is_num(self.p) or not 0.0 <= self.p < 1.0:
            problems.append(f"p must be in [0, 1), got {self.p!r}")
        if not is_int(self.epochs) or self.epochs < 1:
            problems.append(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not is_num(self.lr) or not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not is_int(self.batch_size) or self.batch_size < 1:
            problems.append(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not is_int(self.train_size) or not 1 <= self.train_size <= MNIST_TRAIN_SIZE:
            problems.append(
                f"train_size must be an integer in 1..{MNIST_TRAIN_SIZE}, got {self.train_size!r}"
            )
        if not is_int(self.eval_size) or not 1 <= self.eval_size <= MNIST_TEST_SIZE:
            problems.append(
                f"eval_size must be an integer in 1..{MNIST_TEST_SIZE}, got {self.eval_size!r}"
            )
        if not is_int(self.epoch_eval_size) or not 1 <= self.epoch_eval_size <= MNIST_TEST_SIZE:
            problems.append(
                f"epoch_eval_size must be an integer in 1..{MNIST_TEST_SIZE}, "
                f"got {self.epoch_eval_size!r}"
            )
        if not is_int(self.seed) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda")
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            problems.append(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        if self.precision not in PRECISIONS:
            problems.append(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.augment not in AUGMENTS:
            problems.append(f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if problems:
            raise ConfigError(problems)

    @property
    def work(self) -> int:
        """Size of the run in image-passes (epochs x training images), for admission limits."""
        return self.epochs * self.train_size

    def label(self) -> str:
        """A readable name, e.g. ``p=0.50 · 1,000 imgs · 30 ep``."""
        label = f"p={self.p:.2f} · {self.train_size:,} imgs · {self.epochs} ep"
        return label + (f" · {self.augment} strokes" if self.augment != "none" else "")

    def lr_label(self) -> str:
        """The learning rate as the Lab shows it, e.g. ``lr 0.003 one-cycle``."""
        schedule = f" {self.lr_schedule}" if self.lr_schedule != "constant" else ""
        return f"lr {self.lr:g}{schedule}"

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError([f"unknown field(s): {', '.join(unknown)}"])
        return cls(**d)


PRESETS: dict[str, TrainConfig] = {
    # The seed tutorial as written: full MNIST, 5 epochs, p = 0.5 (about 99.1% test accuracy).
    "Seed recipe": TrainConfig(),
    # Small training set, trained long: p = 0 overfits visibly, p = 0.5 keeps improving. Its
    # per-epoch curve points use a 1,000-image subset of the test set: 29 evaluations of 2,000
    # cost a third of the run (bench/train_speed.py), and the class grid runs 30 of them.
    "Overfitting lab": TrainConfig(train_size=1_000, epochs=30, epoch_eval_size=1_000),
    # Seconds-long run used by the browser test and for quick demos on slow machines.
    "Tiny (test)": TrainConfig(train_size=256, epochs=3, eval_size=1_000),
    # The Draw page's default model (dropout_demo.starter): all of MNIST three times, half of
    # every batch redrawn along the digits' centre lines with a round pen of random width, as
    # people draw on the canvas, with a one-cycle learning rate (peak 3e-3): 98.5% of pen-drawn
    # test digits read (one epoch: 98.1%), ready 49-71 s after the first visit on two cores,
    # once per install (README: Canvas accuracy; bench/canvas_accuracy.py, starter_ready.py).
    "Pen strokes": TrainConfig(epochs=3, augment="pen", lr=3e-3, lr_schedule="one-cycle"),
}
STARTER_PRESET = "Pen strokes"
