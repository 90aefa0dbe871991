"""Latency of the Draw page's uncertainty probe: a rotation sweep for two models and its charts.

What one uncached panel draw computes: the sweep (S steps x T passes) for the selected model
(p = 0.5) and for its p = 0 partner, and the two Plotly figures of each (probabilities and
uncertainty). Weights don't change the arithmetic, so untrained models are used unless
checkpoints are given. Target (issue 11): S = 30 rotation steps with T = 100 in <= 300 ms on
the 2-core CPU.

    python bench/probe_latency.py [--steps 30] [--samples 100] [--repeats 20] [--threads 1,2]
                                  [--checkpoint PATH [--checkpoint PATH]]

Each thread count gets its own rows: on a loaded 2-core machine one intra-op thread is much
faster for batches this small (a second thread waits for a busy core).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/...` from anywhere

from bench.inference_latency import timings_ms
from dropout_demo.model import SimpleCNN, model_from_checkpoint
from dropout_demo.probe_charts import probe_probability_figure, probe_uncertainty_figure
from dropout_demo.probes import probe_image, reading, sweep

TARGET_MS = 300.0


def load_models(paths: list[str]) -> list[torch.nn.Module]:
    if paths:
        return [model_from_checkpoint(torch.load(p, weights_only=True))[0] for p in paths]
    return [SimpleCNN(p, generator=torch.Generator().manual_seed(0)).eval() for p in (0.5, 0.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--samples", type=int, default=100, help="Monte-Carlo passes T per step")
    ap.add_argument("--transform", default="rotate")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--threads",
        default=f"1,{torch.get_num_threads()}",
        help="torch intra-op thread counts to time, comma-separated (default 1 and torch's)",
    )
    ap.add_argument("--checkpoint", action="append", default=[], help="one per model (0-2)")
    args = ap.parse_args()

    models = load_models(args.checkpoint)
    image = probe_image("one")

    def sweeps():
        return [sweep(m, image, args.transform, args.steps, args.samples, seed=1) for m in models]

    def panel():
        for s in sweeps():
            probe_probability_figure(s)
            probe_uncertainty_figure(s)
            reading(s)

    print(
        f"probe latency · {args.transform}, {args.steps} steps x T = {args.samples} · "
        f"{len(models)} model(s) (p = {', '.join(f'{m.p:g}' for m in models)}) · "
        f"{os.cpu_count()} CPUs · {args.repeats} repeats"
    )
    print(f"{'threads':<8}{'what':<34}{'median ms':>10}{'p90 ms':>9}")
    verdicts = []
    for threads in sorted({int(t) for t in args.threads.split(",") if t.strip()}):
        torch.set_num_threads(threads)
        one = timings_ms(
            lambda: sweep(models[0], image, args.transform, args.steps, args.samples, seed=1),
            args.repeats,
            args.warmup,
        )
        both = timings_ms(sweeps, args.repeats, args.warmup)
        full = timings_ms(panel, args.repeats, args.warmup)
        for name, t in (
            ("sweep, selected model", one),
            ("sweeps, both models", both),
            ("panel: both sweeps + 4 figures", full),
        ):
            print(f"{threads:<8}{name:<34}{np.median(t):>10.1f}{np.percentile(t, 90):>9.1f}")
        verdicts.append(
            f"{threads} thread(s) {'meets' if np.median(full) <= TARGET_MS else 'misses'}"
        )
    print(f"target {TARGET_MS:.0f} ms for the panel (median): {'; '.join(verdicts)}")


if __name__ == "__main__":
    main()
