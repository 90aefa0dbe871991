"""Latency of one-digit inference: eval ``predict`` and MC dropout ``mc_predict`` at T = 50/100/200.

Weights don't change the arithmetic, so an untrained SimpleCNN is used unless --checkpoint is
given. For comparison it also times the naive MC forward (T copies of the image through the
whole network), which ``mc_predict`` avoids by running the deterministic trunk once.
Targets (issue 3): eval < 10 ms, T = 100 < 50 ms on the 2-core CPU.

    python bench/inference_latency.py [--repeats 300] [--threads 2] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/...` from anywhere

from dropout_demo.inference import mc_predict, predict
from dropout_demo.model import SimpleCNN, mc_dropout, model_from_checkpoint


def timings_ms(fn: Callable[[], object], repeats: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - started) * 1e3
    return out


def naive_mc(model: torch.nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    with torch.inference_mode(), mc_dropout(model):
        return torch.softmax(model(x.expand(T, -1, -1, -1)), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--no-naive", action="store_true", help="skip the naive T-copies rows")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, _ = model_from_checkpoint(torch.load(args.checkpoint, weights_only=True))
    else:
        torch.manual_seed(0)
        model = SimpleCNN(p=0.5).eval()
    x = torch.rand(1, 1, 28, 28) * 2 - 1

    rows: list[tuple[str, Callable[[], object], float | None]] = [
        ("predict (eval)", lambda: predict(model, x), 10.0)
    ]
    for T in (50, 100, 200):
        rows.append(
            (f"mc_predict T={T}", lambda T=T: mc_predict(model, x, T), 50.0 if T == 100 else None)
        )
    if not args.no_naive:
        for T in (50, 100, 200):
            rows.append((f"naive T={T} copies", lambda T=T: naive_mc(model, x, T), None))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load avg {load:.2f}, {args.repeats} repeats after "
        f"{args.warmup} warm-up calls"
    )
    print(f"{'':22s} {'median ms':>10s} {'p95 ms':>8s} {'target':>8s}")
    for name, fn, target in rows:
        t = timings_ms(fn, args.repeats, args.warmup)
        median, p95 = np.percentile(t, [50, 95])
        verdict = "" if target is None else f"< {target:g} {'ok' if median < target else 'MISS'}"
        print(f"{name:22s} {median:10.2f} {p95:8.2f} {verdict:>8s}")


if __name__ == "__main__":
    main()
