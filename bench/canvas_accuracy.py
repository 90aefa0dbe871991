"""Canvas quality bar: MNIST test digits drawn the way people draw on the canvas.

Two renderings of every test digit, each run through ``canvas.preprocess`` into the models:

- pen (people draw with a pen of one width along the digit's centre line, at any size and
  place): the digit thinned to its centre line (parallel thinning at 4x), redrawn with a round
  pen 14-24 px wide, its longer side 120-240 px, anywhere on the 280x280 canvas; white strokes
  on opaque black or on a transparent canvas, read with ``background="black"`` as the Draw
  page reads its canvas. Target: >= 98.5% with the Draw page's default model.
- upscaled: the digit upscaled 10x (bicubic), scaled 0.6-1.3x, its strokes thickened (square
  max filter, 3-13 px), shifted anywhere; white on transparent, white on black or black on
  white. Target: >= 98%.

Models: the Draw page's default (``starter``: ``starter.starter_config()``) and the seed recipe
(``seed``), each loaded from its checkpoint when it holds that config, else trained (and saved
there). Printed side by side with their accuracy on the original 28x28 digits.

    python bench/canvas_accuracy.py [--rendering pen|upscaled|both] [--models starter,seed]
        [--starter-checkpoint /tmp/starter.pt] [--checkpoint /tmp/seed.pt] [--n 10000]
        [--starter-store RUN_STORE ...]

``--starter-store`` adds the starter a server trained (in its training worker, as the Draw
page gets it), read from each run store given, e.g. those ``bench/starter_ready.py
--keep-runs DIR`` left (``--models ''`` measures those only; ``--models starter`` trains its
own copy in this process, where float sums can run in another order).

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
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/...` from anywhere

from dropout_demo import canvas
from dropout_demo.config import TrainConfig
from dropout_demo.data import get_mnist, normalize
from dropout_demo.inference import predict
from dropout_demo.model import make_checkpoint, model_from_checkpoint
from dropout_demo.starter import starter_config

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


# ---------------------------------------------------------------- the pen rendering
# People draw with a pen of one width along the digit's centre line. Each test digit is thinned
# to that centre line (upscaled PEN_WORK x first, so the line is smooth), then redrawn with a
# round pen PEN_WIDTHS px wide, the digit PEN_SIZES px on its longer side, anywhere on the
# canvas: white strokes, on opaque black or on a transparent canvas (the Draw page's canvas).
PEN_WIDTHS = (14.0, 24.0)
PEN_SIZES = (120.0, 240.0)
PEN_WORK = 4  # the skeleton is computed on the digit upscaled 4x (112x112)
PEN_SUPERSAMPLE = 2  # strokes drawn at 2x and box-filtered down: anti-aliased edges
PEN_STYLES = ("transparent", "white_on_black")

# The 8 neighbours as (dy, dx), bit i of a pixel's neighbourhood code: E, NE, N, NW, W, SW, S, SE.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two sub-iterations of Guo & Hall's parallel thinning (1989,
    algorithm A1; scikit-image's ``thin``), indexed by the 8-neighbourhood code."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        b = [(code >> i) & 1 for i in range(8)]
        # one 8-connected run of neighbours (removing the pixel keeps the topology)
        crossings = sum(1 for i in (0, 2, 4, 6) if not b[i] and (b[i + 1] or b[(i + 2) % 8]))
        n1 = sum(1 for k in (1, 3, 5, 7) if b[k] or b[k - 1])
        n2 = sum(1 for k in (1, 3, 5, 7) if b[k] or b[(k + 1) % 8])
        deletable = crossings == 1 and min(n1, n2) in (2, 3)  # not an end point, not interior
        first[code] = deletable and not ((b[1] or b[2] or not b[7]) and b[0])
        second[code] = deletable and not ((b[5] or b[6] or not b[3]) and b[4])
    return first, second


_THIN_TABLES = _thinning_tables()


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """A boolean image's centre lines, one pixel wide and 8-connected, same topology."""
    a = np.pad(np.asarray(mask, dtype=bool), 1)
    h, w = a.shape
    while True:
        changed = False
        for table in _THIN_TABLES:
            code = np.zeros((h - 2, w - 2), dtype=np.uint8)
            for bit, (dy, dx) in enumerate(_NEIGHBOURS):
                code |= a[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx].view(np.uint8) << bit
            delete = a[1:-1, 1:-1] & table[code]
            if delete.any():
                a[1:-1, 1:-1] &= ~delete
                changed = True
        if not changed:
            return a[1:-1, 1:-1]


def centre_line(digit: np.ndarray) -> np.ndarray:
    """28x28 uint8 digit -> its skeleton at PEN_WORK x resolution (112x112 bool)."""
    side = digit.shape[0] * PEN_WORK
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    return skeletonize(np.asarray(big) >= 128)


def draw_pen(
    points: np.ndarray, width: float, canvas: int = CANVAS, supersample: int = PEN_SUPERSAMPLE
) -> np.ndarray:
    """Round pen of ``width`` px centred on each of ``points`` ((N, 2) y, x canvas coordinates,
    spaced under width / 2 apart so the dabs make one stroke) -> (canvas, canvas) uint8 ink."""
    big = Image.new("L", (canvas * supersample, canvas * supersample), 0)
    pen = ImageDraw.Draw(big)
    r = width * supersample / 2
    for y, x in points * supersample + (supersample - 1) / 2:  # pixel centres at every scale
        pen.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(big.reduce(supersample))


def pen_render(
    digit: np.ndarray,
    rng: np.random.Generator,
    width: float | None = None,
    size: float | None = None,
) -> tuple[np.ndarray, float, float]:
    """28x28 uint8 digit -> (280x280 uint8 ink plane, pen width, size): the digit's centre
    line redrawn with a round pen, its ink box ``size`` px on the longer side, placed at
    random (whole digit on the canvas). Width and size are drawn from PEN_WIDTHS / PEN_SIZES
    unless given."""
    width = float(rng.uniform(*PEN_WIDTHS)) if width is None else float(width)
    size = float(rng.uniform(*PEN_SIZES)) if size is None else float(size)
    ys, xs = np.nonzero(centre_line(digit))
    pts = np.stack([ys, xs], axis=1).astype(np.float64)  # (N, 2)
    pts -= pts.min(0)
    extent = pts.max(0)  # (height, width) of the centre line, work pixels
    # the pen adds width / 2 on every side: the centre line spans size - width
    scale = (size - width) / max(float(extent.max()), 1.0)
    pts *= scale
    box = extent * scale + width  # the ink's (height, width)
    corner = np.array([rng.uniform(0, max(CANVAS - b, 0)) for b in box])  # ink's top-left corner
    return draw_pen(pts + corner + width / 2 - 0.5, width), width, size


def pen_canvas(digit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str, float]:
    """28x28 digit -> 280x280x4 RGBA as the Draw page's canvas gives it, its style and size."""
    plane, _, size = pen_render(digit, rng)
    style = PEN_STYLES[int(rng.integers(len(PEN_STYLES)))]
    out = np.empty((CANVAS, CANVAS, 4), dtype=np.uint8)
    if style == "transparent":
        out[..., :3] = 255
        out[..., 3] = plane
    else:
        out[..., :3] = plane[..., None]
        out[..., 3] = 255
    return out, style, size


def train_or_load(name: str, config: TrainConfig, path: Path | None, data, threads: int):
    """The model of ``config``: loaded from ``path`` when it holds that config, else trained
    (and saved there when a path is given)."""
    if path is not None and path.exists():
        model, saved = model_from_checkpoint(torch.load(path, weights_only=True))
        if saved == config:
            print(f"{name}: loaded {path} ({config.label()})")
            return model
        print(f"{name}: {path} holds another config ({saved.label()}); training")
    from dropout_demo.training import fit

    torch.set_num_threads(threads)
    started = time.perf_counter()
    result = fit(
        config,
        data,
        on_epoch=lambda m: print(
            f"  {name} epoch {m.epoch}: train_loss {m.train_loss:.4f}  test_acc {m.test_acc:.4f}"
            f"  ({m.seconds:.0f} s)",
            flush=True,
        ),
    )
    if result.status != "done":
        raise SystemExit(f"{name}: training ended {result.status}: {result.message}")
    print(f"{name}: trained {config.label()} in {time.perf_counter() - started:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(make_checkpoint(result.model, config), path)
        print(f"{name}: saved to {path}")
    return result.model


def from_store(directory: Path):
    """The starter a server trained and saved in the run store ``directory`` (as
    ``bench/starter_ready.py --keep-runs`` leaves it): the Draw page's model itself."""
    from dropout_demo.runs import RunStore
    from dropout_demo.starter import STARTER_TAG

    store = RunStore(directory)
    found = [r for r in store.list() if STARTER_TAG in (r.tags or ()) and r.status == "done"]
    if not found:
        raise SystemExit(f"--starter-store: no finished starter model in {directory}")
    record = found[0]  # the newest
    info = record.info or {}
    print(
        f"app-starter: {directory} run {record.id} ({record.config}, "
        f"trained in {info.get('train_seconds', '?')} s with {info.get('plan', '?')})"
    )
    return store.load_model(record.id)


def model_configs(args: argparse.Namespace) -> dict[str, tuple[TrainConfig, Path | None]]:
    """The models to measure: the Draw page's default (the starter) and/or the seed recipe."""
    known = {
        "starter": (starter_config(), args.starter_checkpoint),
        "seed": (
            TrainConfig(epochs=args.epochs, train_size=args.train_size, p=args.p),
            args.checkpoint,
        ),
    }
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(known)}")
    return {n: (known[n][0], Path(known[n][1]) if known[n][1] else None) for n in names}


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image correctness, batched."""
    hits = [
        (predict(model, x[i : i + 1000]).argmax(1) == y[i : i + 1000]).numpy()
        for i in range(0, len(x), 1000)
    ]
    return np.concatenate(hits)


def render_set(rendering: str, images: np.ndarray, seed: int) -> dict:
    """Every digit drawn on the canvas and preprocessed as the Draw page does."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    tensors, styles, sizes, ok, statuses = [], [], [], [], Counter()
    for digit in images:
        if rendering == "pen":
            rgba, style, size = pen_canvas(digit, rng)
            result = canvas.preprocess(rgba, background="black")  # what the Draw page passes
        else:
            rgba, style, size = render(digit, rng)
            result = canvas.preprocess(rgba)
        statuses[result.status] += 1
        styles.append(style)
        sizes.append(size)
        ok.append(result.ok)
        # a refused drawing ("empty"/"full") counts as wrong; a blank digit holds its place
        tensors.append(result.tensor if result.ok else torch.full((1, 1, 28, 28), -1.0))
    return {
        "x": torch.cat(tensors),
        "ok": np.array(ok),
        "styles": np.array(styles),
        "sizes": np.array(sizes),
        "statuses": dict(statuses),
        "seconds": time.perf_counter() - started,
    }


SIZE_BANDS = {
    "upscaled": ((0.6, 0.8), (0.8, 1.0), (1.0, 1.3)),
    "pen": ((120, 160), (160, 200), (200, 240.01)),
}
TARGETS = {"upscaled": 0.98, "pen": 0.985}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--rendering", choices=("pen", "upscaled", "both"), default="both", help="which test set"
    )
    ap.add_argument(
        "--models",
        default="starter,seed",
        help="comma-separated: starter (the Draw page's "
        "default model, starter.starter_config()) and/or seed (the seed recipe)",
    )
    ap.add_argument("--checkpoint", default=None, help="seed model: load; train and save if absent")
    ap.add_argument("--starter-checkpoint", default=None, help="starter model: the same")
    ap.add_argument(
        "--starter-store",
        type=Path,
        nargs="+",
        default=[],
        help="also measure the starter a server trained, from each run store (app-starter-K)",
    )
    ap.add_argument("--epochs", type=int, default=5, help="seed model's epochs")
    ap.add_argument("--train-size", type=int, default=60_000, help="seed model's training set")
    ap.add_argument("--p", type=float, default=0.5, help="seed model's p")
    ap.add_argument("--n", type=int, default=10_000, help="test digits to render (max 10000)")
    ap.add_argument("--seed", type=int, default=0, help="rendering seed")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--show-errors", type=int, default=0, help="print this many misreads")
    args = ap.parse_args()

    data = get_mnist(args.data_dir)
    models = {
        name: train_or_load(name, config, path, data, args.threads)
        for name, (config, path) in model_configs(args).items()
    }
    for k, directory in enumerate(args.starter_store, 1):
        models[f"app-starter-{k}"] = from_store(directory)
    n = min(args.n, len(data.test_images))
    images, labels = data.test_images[:n], data.test_labels[:n]
    renderings = ("pen", "upscaled") if args.rendering == "both" else (args.rendering,)

    summary = []
    for name, model in models.items():
        hits = accuracy(model, normalize(images), labels)
        summary.append(("original 28x28", name, hits.mean(), None))
    for rendering in renderings:
        drawn = render_set(rendering, images.numpy(), args.seed)
        print(
            f"\n{rendering}: rendered + preprocessed {n} digits in {drawn['seconds']:.1f} s "
            f"({1e3 * drawn['seconds'] / n:.1f} ms each); statuses {drawn['statuses']}"
        )
        for name, model in models.items():
            hits = accuracy(model, drawn["x"], labels) & drawn["ok"]
            summary.append((rendering, name, hits.mean(), TARGETS[rendering]))
            print(f"  {name}: {hits.mean():.4f}")
            for style in np.unique(drawn["styles"]):
                sel = drawn["styles"] == style
                print(f"    {style:15s} n={sel.sum():5d}  acc {hits[sel].mean():.4f}")
            for lo, hi in SIZE_BANDS[rendering]:
                sel = (drawn["sizes"] >= lo) & (drawn["sizes"] < hi)
                print(f"    size {lo:g}-{hi:.0f}  n={sel.sum():5d}  acc {hits[sel].mean():.4f}")
            per_digit = [hits[labels.numpy() == d].mean() for d in range(10)]
            print("    per digit: " + " ".join(f"{d}:{a:.3f}" for d, a in enumerate(per_digit)))
            if args.show_errors:
                wrong = np.flatnonzero(~hits)[: args.show_errors]
                print(f"    misread (first {len(wrong)}): {wrong.tolist()}")

    print(f"\n{'test set':16s}" + "".join(f"{name:>15s}" for name in models))
    for rendering in ("original 28x28", *renderings):
        row = {name: acc for r, name, acc, _ in summary if r == rendering}
        target = next((t for r, _, _, t in summary if r == rendering), None)
        line = f"{rendering:16s}" + "".join(f"{row[name]:15.4f}" for name in models)
        print(line + (f"   (target >= {target})" if target else ""))
    for name, (config, _) in model_configs(args).items():
        print(f"{name}: {config.label()}  {config}")
    for k, directory in enumerate(args.starter_store, 1):
        print(f"app-starter-{k}: trained by a server, from {directory}")


if __name__ == "__main__":
    main()
