"""Command line: ``python -m dropout_demo train`` (the seed recipe) and ``sweep`` (a grid of
runs: dropout rates × seeds, or training-set sizes × dropout rates × seeds)."""

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
from .sweeps import (
    Cell,
    CellResult,
    Grid,
    GridError,
    Stat,
    aggregate,
    grid_csv,
    reading,
    size_effects,
)
from .training import EpochMetrics, FitResult, fit

EXIT_USAGE = 2


class SweepError(Exception):
    """A sweep that cannot run as asked (e.g. ``--ray`` without Ray): a message, exit 1."""


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
        "--eval-size",
        type=int,
        default=d.eval_size,
        help="test images evaluated after the last epoch (1..10000; earlier epochs: a subset)",
    )
    if multi_p:
        parser.add_argument(
            "--seeds",
            "--seed",
            dest="seeds",
            type=int,
            nargs="+",
            default=[d.seed],
            metavar="SEED",
            help="seeds per grid point (default 0); the summary gives mean ± std over them",
        )
    else:
        parser.add_argument("--seed", type=int, default=d.seed, help="default 0")
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default=d.precision,
        help="training arithmetic: auto (whichever a short probe measures faster here), fp32, bf16",
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
        help="train a grid of runs (dropout rates × seeds, or sizes × rates) and compare",
        description="Train one model per cell of a grid: dropout rates × seeds, or with --sizes "
        "training-set sizes × dropout rates × seeds, otherwise identical settings (the same "
        "seed gives the same initial weights and batch order), and print mean ± std over the "
        "seeds of each grid point with a one-line reading.",
    )
    _add_config_flags(sweep, multi_p=True)
    sweep.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="training-set sizes (replace --train-size): a data-size grid with the --p rates",
    )
    sweep.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the cells in parallel as Ray tasks: 'local' starts a local Ray, 'auto' joins "
        "the cluster `ray start` runs here, or a cluster address (needs requirements-ray.txt)",
    )
    sweep.add_argument("--csv", type=Path, help="write one row per run (final results) here")
    sweep.add_argument("--epochs-csv", type=Path, help="write one row per run and epoch here")
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
        f"{_on_images(m)}({m.seconds:.1f} s)"
    )


def _on_images(m: EpochMetrics) -> str:
    """What the test metrics were computed on: a per-epoch subset, or the whole set at the end."""
    return f"on {m.test_images:,} test images " if m.test_images else ""


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
    how = "picked by a measured probe" if result.config.precision == "auto" else "as asked"
    plan = result.plan or result.precision
    print(f"Trained on {result.device}, {result.precision} arithmetic ({plan}; {how})", file=out)
    print(f"Accuracy of the model on the test images: {100 * acc:.2f}%", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sweep":
        grid = _sweep_grid(args, parser)
    else:
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
        return _sweep(grid, data, args, out, err)
    except SweepError as e:
        print(f"error: {e}", file=err)
        return 1
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


def _sweep_grid(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Grid:
    """The grid the sweep flags describe; every problem at once, exit 2."""
    problems: list[str] = []
    fields = dict(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        eval_size=args.eval_size,
        device=args.device,
        precision=args.precision,
    )
    if not args.sizes:
        fields["train_size"] = args.train_size
    base = None
    try:
        base = TrainConfig(**fields)
    except ConfigError as e:
        problems.extend(e.problems)
    grid = None
    try:
        grid = Grid(ps=args.p, seeds=args.seeds, sizes=args.sizes or (), base=base or TrainConfig())
    except GridError as e:
        problems.extend(e.problems)
    if args.epochs_csv is not None and (problem := _unwritable(args.epochs_csv)):
        problems.append(problem)
    if problems or grid is None:
        parser.error("; ".join(problems))  # exits with status 2
    return grid


def _stat(s: Stat, scale: float = 1.0, digits: int = 4) -> str:
    return f"{scale * s.mean:.{digits}f} ± {scale * s.std:.{digits}f}"


def _sweep_summary(grid: Grid, cells: list[Cell], results: dict[int, CellResult]) -> list[str]:
    """The table of mean ± std per grid point (n = seeds finished), the dropout effect per
    size for a size grid, and the reading."""
    size_col = "  images | " if grid.sizes else ""
    lines = [
        "",
        f"{size_col}   p |  n | final test loss | best test loss  | test accuracy % "
        "| gap (test - train loss)",
    ]
    for pt in aggregate(cells, results):
        size = f"{pt.train_size:8,} | " if grid.sizes else ""
        lines.append(
            f"{size}{pt.p:4.2f} | {pt.n:2d} | {_stat(pt['final_test_loss'])} | "
            f"{_stat(pt['best_test_loss'])} | {_stat(pt['final_test_acc'], 100, 2):>15} | "
            f"{_stat(pt['gap'])}"
        )
    missing = len(cells) - len(results)
    if missing:
        lines.append(f"({missing} of {len(cells)} runs did not finish and are left out)")
    if grid.sizes:
        loss = {(e.train_size, e.p_on): e for e in size_effects(cells, results, "final_test_loss")}
        error = size_effects(cells, results, "final_test_error")
        if error:
            lines += [
                "",
                "  images | p vs p       | change in final test loss | seeds won | verdict   "
                "| change in test error, points",
            ]
        for e in error:
            lo = loss[e.train_size, e.p_on]
            change = f"{lo.diff:+.4f} ± {lo.diff_std:.4f}"
            won = f"{lo.wins} of {lo.pairs}"
            lines.append(
                f"{e.train_size:8,} | {e.p_on:.2f} vs {e.p_off:.2f} | {change:<25} | {won:<9} | "
                f"{lo.verdict:<9} | {100 * e.diff:+.2f} ± {100 * e.diff_std:.2f}"
            )
    lines += ["", "Reading: " + reading(cells, results)]
    return lines


def _sweep(grid: Grid, data, args, out: TextIO, err: TextIO) -> int:
    cells = grid.cells()
    print(f"Sweep: {grid.describe()}", file=out, flush=True)
    results: dict[int, CellResult] = {}
    statuses = {c.index: "not run" for c in cells}
    epochs: dict[int, list[EpochMetrics]] = {}
    interrupted = False
    try:
        if args.ray:
            _sweep_on_ray(cells, args, out, err, results, statuses, epochs)
        else:
            for cell in cells:
                print(
                    f"\n== [{cell.index + 1}/{len(cells)}] {cell.config.label()} "
                    f"(seed {cell.seed})",
                    file=out,
                    flush=True,
                )
                statuses[cell.index] = "interrupted"
                result = _train_one(cell.config, data, args.quiet, out, err)
                _report_end(result, out, err)
                statuses[cell.index], epochs[cell.index] = result.status, result.metrics
                if result.status == "done" and result.metrics:
                    results[cell.index] = CellResult.from_metrics(result.metrics)
    except KeyboardInterrupt:
        interrupted = True  # still summarise and write what finished, then stop
    print("\n".join(_sweep_summary(grid, cells, results)), file=out)
    if args.csv is not None:
        args.csv.write_text(grid_csv(cells, results, statuses))
        print(f"Wrote {args.csv} (one row per run)", file=out)
    if args.epochs_csv is not None:
        with open(args.epochs_csv, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["cell", "train_size", "p", "seed", *EPOCH_FIELDS])
            for cell in cells:
                for m in epochs.get(cell.index, []):
                    w.writerow(
                        [cell.index, cell.train_size, cell.p, cell.seed]
                        + [getattr(m, name) for name in EPOCH_FIELDS]
                    )
        print(f"Wrote {args.epochs_csv} (one row per run and epoch)", file=out)
    if interrupted:
        raise KeyboardInterrupt
    return 0 if all(s == "done" for s in statuses.values()) else 1


def _sweep_on_ray(
    cells: list[Cell],
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    results: dict[int, CellResult],
    statuses: dict[int, str],
    epochs: dict[int, list[EpochMetrics]],
) -> None:
    """Every cell at once as a Ray task of one CPU (``--ray``): the cluster runs as many in
    parallel as it has CPUs and queues the rest; epoch lines arrive as cells report them."""
    import threading

    from .data import resolve_data_dir
    from .jobs.executors import Outcome, RunTask
    from .jobs.identity import run_key
    from .jobs.ray_executor import RayExecutor, cluster_cpus

    try:
        executor = RayExecutor(args.ray, data_dir=str(resolve_data_dir(args.data_dir)))
    except Exception as exc:  # Ray missing, or no cluster at that address
        raise SweepError(f"could not start or join Ray ({args.ray}): {exc}") from exc
    total, _largest = cluster_cpus()
    print(
        f"Running the {len(cells)} runs as Ray tasks in parallel on the cluster at "
        f"{args.ray} ({total} CPUs, one per run)",
        file=out,
        flush=True,
    )
    lock, stop, ended = threading.Lock(), threading.Event(), threading.Semaphore(0)

    def on_epoch(cell: Cell, m: EpochMetrics) -> None:
        with lock:
            epochs.setdefault(cell.index, []).append(m)
            print(f"[{cell.index + 1}/{len(cells)}] {_epoch_line(m, cell.config.epochs)}",
                  file=out, flush=True)  # fmt: skip

    def on_finish(cell: Cell, outcome: Outcome) -> None:
        with lock:
            statuses[cell.index] = outcome.status
            if outcome.metrics is not None:
                epochs[cell.index] = list(outcome.metrics)
            if outcome.status == "done" and outcome.metrics:
                results[cell.index] = CellResult.from_metrics(outcome.metrics)
            tail = "" if outcome.status == "done" else f": {outcome.error or ''}"
            print(f"[{cell.index + 1}/{len(cells)}] {cell.config.label()} (seed {cell.seed}) "
                  f"{outcome.status}{tail}", file=out if outcome.status == "done" else err,
                  flush=True)  # fmt: skip
        ended.release()

    for cell in cells:
        statuses[cell.index] = "interrupted"
        executor.start(
            RunTask(
                name=f"cell-{cell.index}",
                config=cell.config,
                threads=1,
                should_stop=stop.is_set,
                on_batch=lambda _b, _n: None,
                on_epoch=lambda m, cell=cell: on_epoch(cell, m),
                on_finish=lambda outcome, cell=cell: on_finish(cell, outcome),
                key=run_key(cell.config),
            )
        )
    try:
        for _ in cells:
            ended.acquire()
    except KeyboardInterrupt:
        stop.set()  # every task stops at its next report; the summary has what finished
        executor.shutdown(timeout=60)
        raise


EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
