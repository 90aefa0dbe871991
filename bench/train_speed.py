"""Seed pipeline vs. the project's training loop, side by side, same recipe and machine.

    python bench/train_speed.py [--epochs 5] [--data-dir DIR] [--no-ablation]

The seed pipeline is the tutorial's code with only the flatten-size fix: torchvision's MNIST
dataset (PIL image + ToTensor + Normalize per sample), a shuffling DataLoader of batch 64, Adam
and a test pass at the end. The project's loop is ``dropout_demo.training.fit`` with the same
recipe (it also evaluates the test set after every epoch, which the seed does not; that time is
included in its epochs). The ablation then times 300 training batches per variant to show what
each change buys on its own.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from dropout_demo.config import TrainConfig
from dropout_demo.data import FILES, get_mnist, normalize, resolve_data_dir
from dropout_demo.model import SimpleCNN
from dropout_demo.training import evaluate, fit


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


def project_loop(data, epochs: int, precision: str) -> tuple[list[float], list[float], float, str]:
    """Per-epoch seconds of the training pass alone, and including the test evaluation."""
    start = time.perf_counter()
    ends = [0.0]  # seconds since start at which each epoch's metrics arrived
    last_batch = {}  # epoch -> seconds since start when its last training batch finished

    def on_batch(epoch, batch, batches):
        if batch == batches:
            last_batch[epoch] = time.perf_counter() - start

    def on_epoch(m):
        print(f"  ours  epoch {m.epoch}: {m.seconds - ends[-1]:6.2f} s "
              f"(training pass {last_batch[m.epoch] - ends[-1]:5.2f} s), loss {m.train_loss:.4f}, "
              f"test acc {100 * m.test_acc:.2f}%")  # fmt: skip
        ends.append(m.seconds)

    config = TrainConfig(epochs=epochs, precision=precision)
    result = fit(config, data, on_epoch=on_epoch, on_batch=on_batch)
    with_eval = [b - a for a, b in itertools.pairwise(ends)]
    train_only = [last_batch[e + 1] - ends[e] for e in range(epochs)]
    return train_only, with_eval, result.metrics[-1].test_acc, result.precision


def time_batches(
    data, *, model_cls=SimpleCNN, channels_last=False, fused=False, bf16=False, n=300
) -> float:
    """Milliseconds per training batch (batch 64) for one combination of the loop's changes."""
    torch.manual_seed(0)
    model = model_cls(p=0.5)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    model.train()
    x, y = normalize(data.train_images), data.train_labels
    order = torch.randperm(len(x))
    x, y = x[order], y[order]
    batches = ((x[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64]) for i in range(n + 20))
    times = []
    for i, (xb, yb) in enumerate(batches):
        start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb)
        F.cross_entropy(logits.float(), yb).backward()
        optimizer.step()
        if i >= 20:  # warm-up excluded
            times.append(time.perf_counter() - start)
        if len(times) == n:
            break
    return 1000 * statistics.median(times)


def time_loader(loader, n=300) -> float:
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return 1000 * (time.perf_counter() - start) / n


def ablation(data, root: Path) -> None:
    print("\nAblation (median ms per training batch of 64, 300 batches each):")
    train = datasets.MNIST(root=str(root), train=True, transform=SEED_TRANSFORM, download=False)
    loader = DataLoader(dataset=train, batch_size=64, shuffle=True)
    rows = [
        ("seed data pipeline alone (PIL + ToTensor + Normalize per sample)", time_loader(loader)),
        ("compute as the tutorial: relu->pool, default memory format, for-each Adam",
         time_batches(data, model_cls=SeedCNN)),
        ("+ pool before ReLU (SimpleCNN: same values)", time_batches(data)),
        ("+ channels_last", time_batches(data, channels_last=True)),
        ("+ fused Adam (ours, fp32)", time_batches(data, channels_last=True, fused=True)),
        ("+ bf16 autocast (ours, auto)",
         time_batches(data, channels_last=True, fused=True, bf16=True)),
    ]  # fmt: skip
    for name, ms in rows:
        print(f"  {ms:7.2f}  {name}")
    x, y = normalize(data.test_images), data.test_labels
    model = SimpleCNN(p=0.5).to(memory_format=torch.channels_last).eval()
    for bs in (64, 256, 1000):
        start = time.perf_counter()
        evaluate(model, x, y, batch_size=bs)
        secs = time.perf_counter() - start
        print(f"  test-set evaluation (10,000 images) at batch {bs}: {secs:.2f} s")
    threads_before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ms = time_batches(data, channels_last=True, fused=True, n=150)
        print(f"  {ms:7.2f}  ours (fp32) with torch.set_num_threads({threads})")
    torch.set_num_threads(threads_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-ablation", action="store_true")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    data = get_mnist(data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {data_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(data_dir, Path(tmp))
        print(f"\nSeed pipeline, {args.epochs} epochs:")
        seed_secs, seed_acc = seed_pipeline(root, args.epochs)
        runs = {}
        for precision in ("fp32", "auto"):
            print(f"\nProject loop (fit, precision={precision}), {args.epochs} epochs:")
            runs[precision] = project_loop(data, args.epochs, precision)
        seed_mean = statistics.mean(seed_secs)
        print("\nSeconds per epoch. The seed's epoch is its training pass; ours also evaluates the")
        print(
            "whole test set after every epoch: both are shown (speed-up: training pass / with it)."
        )
        print("                          training  with test  speed-up        test acc  vs seed")
        print(f"  seed pipeline            {seed_mean:7.2f}          -     1.00x          "
              f"{100 * seed_acc:6.2f}%")  # fmt: skip
        for precision, (train_only, with_eval, acc, used) in runs.items():
            t, w = statistics.mean(train_only), statistics.mean(with_eval)
            name = f"ours, {precision} ({used})"
            ratios = f"{seed_mean / t:5.2f}x / {seed_mean / w:4.2f}x"
            print(f"  {name:<24} {t:7.2f}    {w:7.2f}  {ratios}  "
                  f"{100 * acc:6.2f}%  {100 * (acc - seed_acc):+5.2f}")  # fmt: skip
        print("  targets: >= 2.5x per epoch; accuracy >= 99.0% and at most 0.15 points below seed")
        if not args.no_ablation:
            ablation(data, root)


if __name__ == "__main__":
    main()
