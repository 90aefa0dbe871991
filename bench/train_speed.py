"""Seed pipeline vs. the project's training loop, side by side, same recipe and machine.

    python bench/train_speed.py [--epochs 5] [--data-dir DIR] [--no-ablation] [--no-seed]

One invocation prints, in this order: the precision/layout probe and what it chose (at the
process's thread count and at one thread); the
Overfitting lab (1,000 images x 30 epochs, defaults): one run, the same run with a 2,000-image
per-epoch subset (the preset's before) and evaluating all 10,000 test images after every epoch
(what runs did before that), and a Compare pair (p = 0 and
p = 0.5) run concurrently with one torch thread each, as the app runs them, and one after the
other; the seed recipe as whole processes (the tutorial's script vs. ``python -m dropout_demo
train``, each minus its interpreter + import time); an ablation of the training step (median
ms per batch of 64, all variants timed in interleaved turns so a passing load hits them
alike); evaluation costs; and a summary of it all.

The seed pipeline is the tutorial's code with only the flatten-size fix: torchvision's MNIST
dataset (PIL image + ToTensor + Normalize per sample), a shuffling DataLoader of batch 64, Adam
and a test pass at the end.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from dropout_demo import training
from dropout_demo.config import PRESETS, TrainConfig
from dropout_demo.data import FILES, get_mnist, normalize, resolve_data_dir
from dropout_demo.model import SimpleCNN
from dropout_demo.training import evaluate, fit

ROOT = Path(__file__).resolve().parents[1]


class SeedCNN(nn.Module):
    """The tutorial's model as written, with only fc1's input size fixed (1600, not 2304)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(64 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(p=p)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = self.dropout(x)
        return self.fc2(x)


SEED_TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def torchvision_root(data_dir: Path, tmp: Path) -> Path:
    """A root that torchvision's MNIST accepts: raw IDX files under MNIST/raw."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES.values():
        for candidate in (data_dir / name, data_dir / "MNIST" / "raw" / name):
            if candidate.exists():
                shutil.copyfile(candidate, raw / name)
                break
            if candidate.with_name(name + ".gz").exists():
                with (
                    gzip.open(candidate.with_name(name + ".gz")) as src,
                    open(raw / name, "wb") as d,
                ):
                    shutil.copyfileobj(src, d)
                break
        else:
            raise SystemExit(f"{name}(.gz) not found in {data_dir}")
    return tmp


def seed_pipeline(root: Path, epochs: int) -> tuple[list[float], float]:
    """The tutorial's pipeline as written (batch 64, shuffle, Adam 1e-3, p = 0.5)."""
    torch.manual_seed(0)
    train = datasets.MNIST(root=str(root), train=True, transform=SEED_TRANSFORM, download=False)
    test = datasets.MNIST(root=str(root), train=False, transform=SEED_TRANSFORM, download=False)
    train_loader = DataLoader(dataset=train, batch_size=64, shuffle=True)
    test_loader = DataLoader(dataset=test, batch_size=64, shuffle=False)
    model = SeedCNN(p=0.5)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    seconds = []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        running = 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()
        seconds.append(time.perf_counter() - start)
        loss = running / len(train_loader)
        print(f"  seed  epoch {epoch + 1}: {seconds[-1]:6.2f} s, loss {loss:.4f}")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.size(0)
    return seconds, correct / total


def overfitting_lab(data) -> dict[str, tuple[float, str]]:
    """Wall seconds of the Overfitting lab: one run, the old full evaluation, a Compare pair."""
    lab = PRESETS["Overfitting lab"]
    rows: dict[str, tuple[float, str]] = {}

    def timed(config: TrainConfig) -> tuple[float, training.FitResult]:
        start = time.perf_counter()
        result = fit(config, data)
        return time.perf_counter() - start, result

    def final(r: training.FitResult) -> str:
        m = r.metrics[-1]
        return f"p={r.config.p:.1f}: test loss {m.test_loss:.4f}, acc {100 * m.test_acc:.2f}%"

    secs, r = timed(lab)
    rows["Overfitting lab, one run (defaults)"] = (secs, final(r))
    secs, r = timed(lab.replace(epoch_eval_size=2_000))
    rows["  same, a 2,000-image subset every epoch"] = (secs, final(r))
    secs, r = timed(lab.replace(epoch_eval_size=10_000))
    rows["  same, all 10,000 test images every epoch"] = (secs, final(r))

    results: dict[float, training.FitResult] = {}

    def worker(p: float) -> None:
        torch.set_num_threads(1)  # what the app's job manager gives each of 2 runs on 2 cores
        results[p] = fit(lab.replace(p=p), data)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(p,)) for p in (0.0, 0.5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    rows["Compare pair, concurrent, 1 thread each"] = (secs, "; ".join(
        final(results[p]) for p in (0.0, 0.5)))  # fmt: skip
    start = time.perf_counter()
    seq = [fit(lab.replace(p=p), data) for p in (0.0, 0.5)]
    secs = time.perf_counter() - start
    rows["Compare pair, one after the other"] = (secs, "; ".join(final(r) for r in seq))
    for name, (secs, what) in rows.items():
        print(f"  {secs:6.2f} s  {name:<44} {what}", flush=True)
    return rows


def whole_process(cmd: list[str], imports: list[str]) -> tuple[float, str]:
    """Wall seconds of ``cmd`` minus the median of two interpreter + import-only runs."""

    def wall(c: list[str]) -> tuple[float, str]:
        start = time.perf_counter()
        out = subprocess.run(c, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return time.perf_counter() - start, out

    base = statistics.median(wall(imports)[0] for _ in range(2))
    secs, out = wall(cmd)
    return secs - base, out


def seed_recipe(data_dir: Path, epochs: int) -> dict[str, tuple[float, float]]:
    py = sys.executable
    tut_secs, tut_out = whole_process(
        [py, __file__, "--role", "tutorial", "--epochs", str(epochs), "--data-dir", str(data_dir)],
        [py, "-c", "import torch, torchvision, torch.utils.data"],
    )
    ours_secs, ours_out = whole_process(
        [py, "-m", "dropout_demo", "train", "--quiet", "--epochs", str(epochs),
         "--data-dir", str(data_dir)],
        [py, "-c", "import dropout_demo.cli"],
    )  # fmt: skip
    tut_acc = float(re.search(r"accuracy ([\d.]+)%", tut_out).group(1))
    ours_acc = float(re.search(r"test images: ([\d.]+)%", ours_out).group(1))
    used = re.search(r"^Trained on .*$", ours_out, re.M).group(0)
    print(f"  tutorial script: {tut_secs:6.2f} s, test accuracy {tut_acc:.2f}%")
    print(f"  ours:            {ours_secs:6.2f} s, test accuracy {ours_acc:.2f}% ({used})")
    return {"tutorial script": (tut_secs, tut_acc), "ours (defaults)": (ours_secs, ours_acc)}


def time_loader(loader, n=300) -> float:
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return 1000 * (time.perf_counter() - start) / n


class Variant:
    """One way of computing the training step, timed a few batches at a time in turns."""

    def __init__(self, data, *, model_cls=SimpleCNN, channels_last=False, fused=False,
                 bf16=False, conv1="conv", conv2="conv", item=True, batch=64,
                 threads=None):  # fmt: skip
        gen = torch.Generator().manual_seed(0)
        self.model = model_cls(p=0.5)
        training_model = self.model
        if isinstance(training_model, SimpleCNN):
            self.model.dropout.generator = torch.Generator().manual_seed(1)
            self.model.conv1_kernel, self.model.conv2_kernel = conv1, conv2
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=fused or None)
        self.bf16, self.item, self.batch, self.threads = bf16, item, batch, threads
        order = torch.randperm(len(data.train_images), generator=gen)[:6400]
        self.x, self.y = normalize(data.train_images[order]), data.train_labels[order]
        self.i, self.times = 0, []
        self.model.train()

    def run(self, n: int, keep: bool = True) -> None:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        for _ in range(n):
            j = self.i % (len(self.x) // self.batch)
            xb = self.x[j * self.batch : (j + 1) * self.batch]
            yb = self.y[j * self.batch : (j + 1) * self.batch]
            self.i += 1
            start = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            loss.backward()
            self.optimizer.step()
            if self.item:
                loss.item()
            if keep:
                self.times.append(time.perf_counter() - start)
        torch.set_num_threads(before)

    def ms(self) -> float:
        return 1000 * statistics.median(self.times)


def ablation(data, root: Path, rounds: int = 8, per_round: int = 15) -> list[tuple[str, float]]:
    print(f"\nAblation (median ms per training batch of 64; {rounds} interleaved turns of "
          f"{per_round} batches per variant):", flush=True)  # fmt: skip
    train = datasets.MNIST(root=str(root), train=True, transform=SEED_TRANSFORM, download=False)
    loader = DataLoader(dataset=train, batch_size=64, shuffle=True)
    fp32 = dict(channels_last=True, fused=True)
    variants = {
        "compute as the tutorial: relu->pool, default memory format, for-each Adam":
            Variant(data, model_cls=SeedCNN),
        "+ pool before ReLU (SimpleCNN: same values)": Variant(data),
        "+ channels_last": Variant(data, channels_last=True),
        "+ fused Adam (fp32 plan: channels_last, conv1 convolution)": Variant(data, **fp32),
        "  conv1 as pooling-window GEMMs instead (probe candidate)":
            Variant(data, conv1="gemm", **fp32),
        "  contiguous instead of channels_last (probe candidate)": Variant(data, fused=True),
        "  bf16 autocast (probe candidate)": Variant(data, bf16=True, **fp32),
        "  without loss.item() after each batch": Variant(data, item=False, **fp32),
        "  conv2 weight gradient as a GEMM (probe candidate)":
            Variant(data, conv2="gemm", **fp32),
        "  with 1 torch thread instead of 2": Variant(data, threads=1, **fp32),
        "  1 torch thread, conv2 weight gradient as a GEMM":
            Variant(data, threads=1, conv2="gemm", **fp32),
        "  batch of 4 (fixed per-step cost: dispatch, Adam, autograd)":
            Variant(data, batch=4, **fp32),
    }  # fmt: skip
    for v in variants.values():
        v.run(2, keep=False)  # warm-up: kernels chosen, memory allocated
    # bf16 is ~10x slower where the CPU lacks it: give it fewer batches, not fewer turns
    for _ in range(rounds):
        for v in variants.values():
            v.run(max(2, per_round // 5) if v.bf16 else per_round)
    rows = [("seed data pipeline alone (PIL + ToTensor + Normalize per sample)",
             time_loader(loader))]  # fmt: skip
    rows += [(name, v.ms()) for name, v in variants.items()]
    for name, ms in rows:
        print(f"  {ms:7.2f}  {name}")
    x, y = normalize(data.test_images), data.test_labels
    model = SimpleCNN(p=0.5).to(memory_format=torch.channels_last).eval()
    subset_n = TrainConfig().epoch_eval_size
    for kernel in ("conv", "gemm"):
        model.conv1_kernel = kernel
        for n, bs in ((10_000, 64), (10_000, 256), (10_000, 1000), (subset_n, 256)):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                evaluate(model, x[:n], y[:n], batch_size=bs)
                times.append(time.perf_counter() - start)
            print(f"  test evaluation, {n:,} images at batch {bs}, conv1 {kernel}: "
                  f"{statistics.median(times):.3f} s")  # fmt: skip
    return rows


def tutorial_role(data_dir: Path, epochs: int) -> None:
    """Run as a subprocess: the tutorial's script, whole, on a torchvision copy of the data."""
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(data_dir, Path(tmp))
        _, acc = seed_pipeline(root, epochs)
    print(f"test accuracy {100 * acc:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="seed recipe epochs (default 5)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--no-seed", action="store_true", help="skip the seed-recipe processes")
    parser.add_argument("--role", choices=["tutorial"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    if args.role == "tutorial":
        return tutorial_role(data_dir, args.epochs)
    data = get_mnist(data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {data_dir}")
    cpu = torch.device("cpu")
    probe = training.probe(cpu)
    print("\n" + probe.summary())
    threads = torch.get_num_threads()
    if threads > 1:  # a class's runs train at one thread each: the probe measures that apart
        torch.set_num_threads(1)
        print(training.probe(cpu).summary())
        torch.set_num_threads(threads)
    print(f"  auto -> {probe.best().describe()}; fp32 -> {probe.best(torch.float32).describe()}")
    print("\nOverfitting lab (1,000 images x 30 epochs), wall seconds:", flush=True)
    lab = overfitting_lab(data)
    seed = {}
    if not args.no_seed:
        print(f"\nSeed recipe, {args.epochs} epochs, whole processes minus interpreter and "
              "imports:", flush=True)  # fmt: skip
        seed = seed_recipe(data_dir, args.epochs)
    rows = []
    if not args.no_ablation:
        with tempfile.TemporaryDirectory() as tmp:
            rows = ablation(data, torchvision_root(data_dir, Path(tmp)))
    print("\nSummary")
    print(f"  probe: {probe.seconds:.2f} s once per process; auto = {probe.best().describe()}")
    for name, (secs, _) in lab.items():
        print(f"  {name:<46} {secs:6.2f} s")
    print("  targets: one run <= 6 s, Compare pair <= 12 s")
    if seed:
        (tut, tut_acc), (ours, acc) = seed.values()
        print(
            f"  seed recipe, {args.epochs} epochs: tutorial {tut:.1f} s, ours {ours:.1f} s: "
            f"{tut / ours:.2f}x (target >= 2.5x); accuracy {tut_acc:.2f}% vs {acc:.2f}%"
        )
    if rows:
        base = rows[1][1]
        for name, ms in rows[1:]:
            print(f"  {ms:7.2f} ms/batch  {base / ms:4.2f}x vs tutorial compute  {name}")


if __name__ == "__main__":
    main()
