"""The CUDA path, side by side in one invocation on one GPU (issue 8's GPU figure).

    python bench/gpu_speed.py [--epochs 5] [--seeds 0 1 2] [--data-dir DIR]

Prints: the GPU and torch version; the probe's measurements and choice on the GPU; the seed
recipe (60,000 images, batch 64, Adam 1e-3, p = 0.5) as the tutorial wrote it, with the model on
the GPU and each batch built on the CPU (torchvision dataset, PIL + ToTensor + Normalize per
sample, shuffling DataLoader) and copied over, against ``training.fit`` with the data resident on
the GPU (batches are index slices there), for each seed; the Overfitting lab (one run, and a
Compare pair concurrently in two threads as the app runs it); and ``python -m dropout_demo train
--device cuda`` as a whole process minus its interpreter and imports. Exits non-zero without
CUDA: the figures mean nothing on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from train_speed import SEED_TRANSFORM, SeedCNN, torchvision_root

from dropout_demo import training
from dropout_demo.config import PRESETS, TrainConfig
from dropout_demo.data import get_mnist, resolve_data_dir

ROOT = Path(__file__).resolve().parents[1]


def tutorial_on_gpu(
    root: Path, epochs: int, seed: int, device: torch.device
) -> tuple[float, float]:
    """The tutorial's loop with ``.to(device)`` added: (seconds incl. the test pass, accuracy)."""
    torch.manual_seed(seed)
    train = datasets.MNIST(root=str(root), train=True, transform=SEED_TRANSFORM, download=False)
    test = datasets.MNIST(root=str(root), train=False, transform=SEED_TRANSFORM, download=False)
    train_loader = DataLoader(dataset=train, batch_size=64, shuffle=True)
    test_loader = DataLoader(dataset=test, batch_size=64, shuffle=False)
    model = SeedCNN(p=0.5).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            loss.item()  # the tutorial sums the loss as a float every batch
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.size(0)
    return time.perf_counter() - start, correct / total


def ours(config: TrainConfig, data) -> tuple[float, training.FitResult]:
    start = time.perf_counter()
    result = training.fit(config, data)
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


def whole_process(data_dir: Path, epochs: int) -> tuple[float, str]:
    py = sys.executable

    def wall(cmd: list[str]) -> tuple[float, str]:
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return time.perf_counter() - start, out

    base = statistics.median(
        wall([py, "-c", "import dropout_demo.cli, torch; torch.zeros(1, device='cuda')"])[0]
        for _ in range(2)
    )
    secs, out = wall(
        [py, "-m", "dropout_demo", "train", "--quiet", "--device", "cuda",
         "--epochs", str(epochs), "--data-dir", str(data_dir)]
    )  # fmt: skip
    last = [line for line in out.splitlines() if line.strip()][-2:]
    return secs - base, " | ".join(last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_speed: CUDA is not available here; run it on a machine with a GPU")
    device = torch.device("cuda")
    data_dir = resolve_data_dir(args.data_dir)
    data = get_mnist(data_dir)
    props = torch.cuda.get_device_properties(device)
    print(f"{props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}")

    result = training.probe(device)
    print(result.summary())
    print(f"auto picks: {training.resolve_plan('auto', device).describe()}")

    print(f"\nSeed recipe, {args.epochs} epochs, 60,000 images (training + test pass):")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(data_dir, Path(tmp))
        for seed in args.seeds:
            t_secs, t_acc = tutorial_on_gpu(root, args.epochs, seed, device)
            config = TrainConfig(device="cuda", epochs=args.epochs, seed=seed)
            o_secs, r = ours(config, data)
            o_acc = r.metrics[-1].test_acc
            rows.append((seed, t_secs, t_acc, o_secs, o_acc, r.plan))
            print(
                f"  seed {seed}: tutorial on the GPU {t_secs:6.2f} s ({100 * t_acc:.2f}%); "
                f"ours {o_secs:6.2f} s ({100 * o_acc:.2f}%, {r.plan}); "
                f"{t_secs / o_secs:.1f}x",
                flush=True,
            )

    lab = PRESETS["Overfitting lab"].replace(device="cuda")
    secs, r = ours(lab, data)
    m = r.metrics[-1]
    print(f"\nOverfitting lab, one run: {secs:.2f} s (test loss {m.test_loss:.4f})")
    results: dict[float, training.FitResult] = {}

    def worker(p: float) -> None:
        results[p] = training.fit(lab.replace(p=p), data)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(p,)) for p in (0.0, 0.5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.cuda.synchronize()
    pair = time.perf_counter() - start
    finals = "; ".join(f"p={p}: {results[p].metrics[-1].test_loss:.4f}" for p in (0.0, 0.5))
    print(f"Overfitting lab, Compare pair in two threads: {pair:.2f} s ({finals})")

    secs, tail = whole_process(data_dir, args.epochs)
    print(f"\nWhole process, python -m dropout_demo train --device cuda: {secs:.2f} s ({tail})")

    print("\n| seed | tutorial loop, model on the GPU | ours, data on the GPU | speed-up |")
    print("| --- | --- | --- | --- |")
    for seed, t_secs, t_acc, o_secs, o_acc, _plan in rows:
        print(
            f"| {seed} | {t_secs:.2f} s, {100 * t_acc:.2f}% | {o_secs:.2f} s, {100 * o_acc:.2f}% "
            f"| {t_secs / o_secs:.1f}x |"
        )


if __name__ == "__main__":
    main()
