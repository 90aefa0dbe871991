"""The Overfitting lab over 10 seeds: does dropout's benefit still show?

    python bench/overfit_seeds.py [--seeds 0-9] [--data-dir DIR]

For each seed, p = 0 and p = 0.5 with the Overfitting lab's defaults (1,000 training images,
30 epochs, per-epoch test metrics on the fixed 1,000-image subset, all 10,000 test images
after the last epoch). Prints per seed the final test loss and accuracy (full test set) of
both, whether p = 0.5 won, and how far the last per-epoch subset value (epoch 29) sits from the
full-set value (epoch 30) of the same run, and the subset's own error (the final model on the
subset vs on all 10,000 images); then means +- std and the win count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dropout_demo.config import PRESETS
from dropout_demo.data import get_mnist, normalize
from dropout_demo.training import epoch_eval_subset, evaluate, fit


def seeds_arg(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=seeds_arg, default=list(range(10)))
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data = get_mnist(args.data_dir)
    lab = PRESETS["Overfitting lab"]
    print(
        f"Overfitting lab: {lab.train_size:,} images, {lab.epochs} epochs, test metrics on "
        f"{lab.epoch_eval_size:,} images per epoch, all {lab.eval_size:,} at the end"
    )
    print(" seed | p=0 loss   acc   | p=0.5 loss  acc   | p=0.5 wins | best epoch p=0 (subset) "
          "| run s")  # fmt: skip
    test_x, test_y = normalize(data.test_images), data.test_labels
    sub_x, sub_y = epoch_eval_subset(test_x, test_y, lab)
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        off, on = (fit(lab.replace(p=p, seed=seed), data) for p in (0.0, 0.5))
        secs = time.perf_counter() - start
        a, b = off.metrics[-1], on.metrics[-1]
        assert a.test_images == b.test_images == lab.eval_size
        best = min(off.metrics[:-1], key=lambda m: m.test_loss)
        jumps = [r.metrics[-1].test_loss - r.metrics[-2].test_loss for r in (off, on)]
        jumps += [evaluate(r.model, sub_x, sub_y)[0] - r.metrics[-1].test_loss for r in (off, on)]
        rows.append((a, b, best.epoch, jumps, off.plan))
        print(f" {seed:4d} | {a.test_loss:.4f} {100 * a.test_acc:6.2f}% | {b.test_loss:.4f} "
              f"{100 * b.test_acc:6.2f}% | {'yes' if b.test_loss < a.test_loss else 'NO':>10} | "
              f"{best.epoch:23d} | {secs / 2:5.1f}", flush=True)  # fmt: skip

    def ms(values: list[float], scale: float = 1.0, digits: int = 4) -> str:
        return f"{scale * statistics.mean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"  # noqa: E501

    a_loss = [r[0].test_loss for r in rows]
    b_loss = [r[1].test_loss for r in rows]
    wins = sum(b < a for a, b in zip(a_loss, b_loss, strict=True))
    print(f"\nfinal test loss (all 10,000): p=0 {ms(a_loss)}, p=0.5 {ms(b_loss)}")
    print(f"final test accuracy: p=0 {ms([r[0].test_acc for r in rows], 100, 2)}%, "
          f"p=0.5 {ms([r[1].test_acc for r in rows], 100, 2)}%")  # fmt: skip
    print(f"p=0.5 has the lower final test loss in {wins} of {len(rows)} seeds (target >= 9)")
    for name, k in (("epoch 30 (all) - epoch 29 (subset)", 0), ("subset - all, same model", 2)):
        values = [abs(j) for r in rows for j in r[3][k : k + 2]]
        print(f"|test loss {name}|: mean {statistics.mean(values):.4f}, max {max(values):.4f}")
    print(f"plan used: {rows[0][4]}; p=0 lowest subset test loss at epoch "
          f"{statistics.median(r[2] for r in rows):.0f} (median)")  # fmt: skip


if __name__ == "__main__":
    main()
