"""Command line: ``python -m dropout_demo train`` (the seed recipe) and ``sweep`` (several p)."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import torch

from .config import ConfigError, TrainConfig
from .data import ENV_VAR, DataError, get_mnist
from .model import make_checkpoint
from .training import EpochMetrics, FitResult, fit

EXIT_USAGE = 2


class ProgressBar:
    """A one-line progress bar for the current epoch, drawn only on a terminal."""

    def __init__(self, epochs: int, stream: TextIO, width: int = 30):
        self.epochs, self.stream, self.width = epochs, stream, width
        self.enabled = stream.isatty()
        self._last = -1

    def update(self, epoch: int, batch: int, batches: int) -> None:
        filled = self.width * batch // batches
        if not self.enabled or (filled == self._last and batch != batches):
            return
        self._last = filled
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\rEpoch {epoch}/{self.epochs} [{bar}] {batch}/{batches}")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.width + 40) + "\r")
            self.stream.flush()
            self._last = -1


def _add_config_flags(parser: argparse.ArgumentParser, multi_p: bool = False) -> None:
    d = TrainConfig()
    if multi_p:
        parser.add_argument(
            "--p", type=float, nargs="+", default=[0.0, 0.5], help="dropout rates (default 0 0.5)"
        )
    else:
        parser.add_argument("--p", type=float, default=d.p, help=f"dropout rate (default {d.p})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate ({d.lr:g})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="default 64")
    parser.add_argument(
        "--train-size", type=int, default=d.train_size, help="training images (1..60000)"
    )
    parser.add_argument(
        "--eval-size", type=int, default=d.eval_size, help="test images evaluated (1..10000)"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="default 0")
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default=d.precision,
        help="training arithmetic: auto (bf16 where the hardware has it natively), fp32, bf16",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"directory with the four MNIST IDX files, gz or raw (else ${ENV_VAR}, "
        "else the user cache, downloading there when absent)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dropout_demo",
        description="Train the seed tutorial's dropout CNN on MNIST.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser(
        "train",
        help="train one model (defaults: the seed recipe)",
        description="Train SimpleCNN with the seed recipe: Adam lr 1e-3, batch 64, 5 epochs, "
        "p = 0.5 (p is PyTorch's probability of dropping a unit).",
    )
    _add_config_flags(train)
    train.add_argument("--save", type=Path, help="write state_dict + config to this .pt file")
    sweep = sub.add_parser(
        "sweep",
        help="train the same settings at several dropout rates and compare",
        description="Train one model per dropout rate with otherwise identical settings "
        "(same seed: same initial weights and batch order) and print a comparison.",
    )
    _add_config_flags(sweep, multi_p=True)
    sweep.add_argument("--csv", type=Path, help="write every run's per-epoch metrics here")
    return parser


def _configs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[TrainConfig]:
    ps = args.p if isinstance(args.p, list) else [args.p]
    common = dict(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        train_size=args.train_size,
        eval_size=args.eval_size,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    try:
        return [TrainConfig(p=p, **common) for p in ps]
    except ConfigError as e:
        parser.error("; ".join(e.problems))  # exits with status 2


def _epoch_line(m: EpochMetrics, epochs: int) -> str:
    return (
        f"Epoch [{m.epoch}/{epochs}], Loss: {m.train_loss:.4f}, "
        f"Test loss: {m.test_loss:.4f}, Test accuracy: {100 * m.test_acc:.2f}% "
        f"({m.seconds:.1f} s)"
    )


def _train_one(config: TrainConfig, data, quiet: bool, out: TextIO, err: TextIO) -> FitResult:
    bar = ProgressBar(config.epochs, err)
    if quiet:
        bar.enabled = False

    def on_epoch(m: EpochMetrics) -> None:
        bar.clear()
        print(_epoch_line(m, config.epochs), file=out, flush=True)

    return fit(config, data, on_epoch=on_epoch, on_batch=bar.update)


def _report_end(result: FitResult, out: TextIO, err: TextIO) -> int:
    if result.status != "done":
        print(f"Run {result.status}: {result.message}", file=err)
        return 1
    acc = result.metrics[-1].test_acc
    print(f"Trained on {result.device}, {result.precision} arithmetic", file=out)
    print(f"Accuracy of the model on the test images: {100 * acc:.2f}%", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr):
    parser = build_parser()
    args = parser.parse_args(argv)
    configs = _configs(args, parser)
    output = args.save if args.command == "train" else args.csv
    if output is not None:
        problem = _unwritable(output)
        if problem:
            parser.error(problem)  # before training, so a long run is never lost at the end
    try:
        data = get_mnist(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=err)
        return 1
    try:
        if args.command == "train":
            config = configs[0]
            print(f"Training {config.label()} (seed {config.seed})", file=out, flush=True)
            result = _train_one(config, data, args.quiet, out, err)
            status = _report_end(result, out, err)
            if status == 0 and args.save is not None:
                ckpt = make_checkpoint(result.model, config, metrics=_metric_dicts(result))
                torch.save(ckpt, args.save)
                print(f"Saved model and config to {args.save}", file=out)
            return status
        return _sweep(configs, data, args, out, err)
    except ValueError as e:  # e.g. a CUDA device asked for on a machine without one
        print(f"error: {e}", file=err)
        return EXIT_USAGE
    except OSError as e:  # the output could not be written after all (disk full, ...)
        print(f"error: could not write the output: {e}", file=err)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=err)
        return 130


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written as an output file, or None; creates missing parents."""
    if path.is_dir():
        return f"{path}: is a directory; give a file name such as model.pt"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"{path}: cannot create its directory ({e.strerror})"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path}: not writable"
    return None


def _metric_dicts(result: FitResult) -> list[dict]:
    return [m.to_dict() for m in result.metrics]


def _sweep(configs, data, args, out: TextIO, err: TextIO) -> int:
    results = []
    for config in configs:
        print(f"\n== {config.label()} (seed {config.seed})", file=out, flush=True)
        result = _train_one(config, data, args.quiet, out, err)
        _report_end(result, out, err)
        results.append(result)
    print("\n   p | best test loss (epoch) | final test loss | final test acc | status", file=out)
    for r in results:
        if r.metrics:
            best = min(r.metrics, key=lambda m: m.test_loss)
            last = r.metrics[-1]
            print(
                f"{r.config.p:4.2f} | {best.test_loss:14.4f} ({best.epoch:3d}) | "
                f"{last.test_loss:15.4f} | {100 * last.test_acc:13.2f}% | {r.status}",
                file=out,
            )
        else:
            print(f"{r.config.p:4.2f} | {'-':>20} | {'-':>15} | {'-':>14} | {r.status}", file=out)
    if args.csv is not None:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["p", "epoch", "train_loss", "train_acc", "test_loss", "test_acc"])
            for r in results:
                for m in r.metrics:
                    w.writerow(
                        [r.config.p, m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc]
                    )
        print(f"Wrote {args.csv}", file=out)
    return 0 if all(r.status == "done" for r in results) else 1
