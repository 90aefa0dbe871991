"""Canvas quality bar: MNIST test digits drawn the way people draw on the canvas.

Each test digit is upscaled 10x (bicubic) to the 280x280 canvas size, scaled 0.6-1.3x, its
strokes thickened (square max filter, 3-13 px), shifted to a random place on the canvas, and
written as RGBA in one of three styles: white strokes on a transparent canvas (what the
drawable canvas returns), white on opaque black, black on opaque white. Each goes through
``canvas.preprocess`` into a model trained with the seed recipe; the accuracy is compared with
the same model's accuracy on the original 28x28 digits. Target: >= 98%.

    python bench/canvas_accuracy.py [--checkpoint /tmp/seed.pt] [--n 10000] [--epochs 5]

MNIST comes from ``data.get_mnist`` (--data-dir, else DROPOUT_DEMO_DATA, else the default).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/...` from anywhere

from dropout_demo import canvas
from dropout_demo.config import TrainConfig
from dropout_demo.data import get_mnist, normalize
from dropout_demo.inference import predict
from dropout_demo.model import make_checkpoint, model_from_checkpoint

CANVAS = 280
STYLES = ("transparent", "white_on_black", "black_on_white")
STYLE_WEIGHTS = (0.4, 0.4, 0.2)


def dilate(a: np.ndarray, k: int) -> np.ndarray:
    """Square k x k max filter (k odd), separable: rows then columns."""
    r = k // 2
    padded = np.pad(a, r)
    a = np.lib.stride_tricks.sliding_window_view(padded, k, axis=0).max(-1)
    return np.lib.stride_tricks.sliding_window_view(a, k, axis=1).max(-1)


def render(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str, float]:
    """28x28 uint8 MNIST digit -> 280x280x4 uint8 canvas image, its style and scale."""
    scale = float(rng.uniform(0.6, 1.3))
    side = round(CANVAS * scale)
    big = Image.fromarray(digit).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    big = big.resize((side, side), Image.Resampling.BICUBIC)
    ink = dilate(np.asarray(big), int(rng.choice([3, 5, 7, 9, 11, 13])))
    rows = np.flatnonzero(ink.max(1) > 0)
    cols = np.flatnonzero(ink.max(0) > 0)
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1][:CANVAS, :CANVAS]
    h, w = ink.shape
    top = int(rng.integers(0, CANVAS - h + 1))
    left = int(rng.integers(0, CANVAS - w + 1))
    plane = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    plane[top : top + h, left : left + w] = ink

    style = STYLES[int(rng.choice(len(STYLES), p=STYLE_WEIGHTS))]
    out = np.empty((CANVAS, CANVAS, 4), dtype=np.uint8)
    if style == "transparent":
        out[..., :3] = 255
        out[..., 3] = plane
    else:
        out[..., :3] = (plane if style == "white_on_black" else 255 - plane)[..., None]
        out[..., 3] = 255
    return out, style, scale


def get_model(args: argparse.Namespace, data) -> torch.nn.Module:
    path = Path(args.checkpoint) if args.checkpoint else None
    if path is not None and path.exists():
        model, config = model_from_checkpoint(torch.load(path, weights_only=True))
        print(f"model: loaded {path} ({config.label()})")
        return model
    from dropout_demo.training import fit

    config = TrainConfig(epochs=args.epochs, train_size=args.train_size, p=args.p)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = fit(
        config,
        data,
        on_epoch=lambda m: print(
            f"  epoch {m.epoch}: train_loss {m.train_loss:.4f}  test_acc {m.test_acc:.4f}"
            f"  ({m.seconds:.0f} s)",
            flush=True,
        ),
    )
    if result.status != "done":
        raise SystemExit(f"training ended {result.status}: {result.message}")
    print(f"model: trained {config.label()} in {time.perf_counter() - started:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make_checkpoint(result.model, config), path)
        print(f"model: saved to {path}")
    return result.model


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image correctness, batched."""
    hits = [
        (predict(model, x[i : i + 1000]).argmax(1) == y[i : i + 1000]).numpy()
        for i in range(0, len(x), 1000)
    ]
    return np.concatenate(hits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--checkpoint", default=None, help="load this model; train and save if absent")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-size", type=int, default=60_000)
    ap.add_argument("--p", type=float, default=0.5)
    ap.add_argument("--n", type=int, default=10_000, help="test digits to render (max 10000)")
    ap.add_argument("--seed", type=int, default=0, help="rendering seed")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--show-errors", type=int, default=0, help="print this many misreads")
    args = ap.parse_args()

    data = get_mnist(args.data_dir)
    model = get_model(args, data)
    n = min(args.n, len(data.test_images))
    images, labels = data.test_images[:n], data.test_labels[:n]

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    tensors, styles, scales, ok, statuses = [], [], [], [], Counter()
    for digit in images.numpy():
        rgba, style, scale = render(digit, rng)
        result = canvas.preprocess(rgba)
        statuses[result.status] += 1
        styles.append(style)
        scales.append(scale)
        ok.append(result.ok)
        # a refused drawing ("empty"/"full") counts as wrong; a blank digit holds its place
        tensors.append(result.tensor if result.ok else torch.full((1, 1, 28, 28), -1.0))
    elapsed = time.perf_counter() - started
    canvas_hits = accuracy(model, torch.cat(tensors), labels) & np.array(ok)
    orig_hits = accuracy(model, normalize(images), labels)

    styles_a, scales_a = np.array(styles), np.array(scales)
    print(
        f"\nrendered + preprocessed {n} digits in {elapsed:.1f} s ({1e3 * elapsed / n:.1f} ms each)"
    )
    print(f"preprocess statuses: {dict(statuses)}")
    print(f"original 28x28 accuracy : {orig_hits.mean():.4f}")
    print(f"canvas accuracy         : {canvas_hits.mean():.4f}   (target >= 0.98)")
    for style in STYLES:
        sel = styles_a == style
        print(f"  {style:15s} n={sel.sum():5d}  acc {canvas_hits[sel].mean():.4f}")
    for lo, hi in ((0.6, 0.8), (0.8, 1.0), (1.0, 1.3)):
        sel = (scales_a >= lo) & (scales_a < hi)
        print(f"  scale {lo:.1f}-{hi:.1f}    n={sel.sum():5d}  acc {canvas_hits[sel].mean():.4f}")
    if args.show_errors:
        wrong = np.flatnonzero(~canvas_hits & orig_hits)[: args.show_errors]
        print(f"misread on canvas but right at 28x28 (first {len(wrong)}): {wrong.tolist()}")


if __name__ == "__main__":
    main()
