"""A run's identity: everything that determines its result, as one short key.

Two requests with the same key would train the same weights and curves, so they share one
computation, and a finished run is served from the run store under its key.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ..config import TrainConfig
from ..training import TRAINING_VERSION, resolve_device, resolve_precision

KEYED_WHEN_SET = {"augment": "none", "lr_schedule": "constant"}


def resolved(config: TrainConfig) -> dict[str, object]:
    """The config with ``device`` and ``precision`` as this process would run them.

    "auto" means different arithmetic on different machines (or after a probe picks another
    precision), so the key holds what is actually used. Raises ValueError for a device that
    does not exist here.
    """
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    fields = config.to_dict()
    # A slider's 0.15000000000000002 and a typed 0.15 train the same network.
    fields["p"], fields["lr"] = float(f"{config.p:.12g}"), float(f"{config.lr:.12g}")
    fields["device"] = device.type
    fields["precision"] = "bf16" if dtype == torch.bfloat16 else "fp32"
    # Fields added after runs were first keyed: at their default they are left out, so runs
    # keyed before the field existed keep their keys (and cached results).
    for name, default in KEYED_WHEN_SET.items():
        if fields[name] == default:
            del fields[name]
    return fields


def run_key(config: TrainConfig) -> str:
    """A 20-hex-digit digest of the resolved config and the training code's version."""
    payload = json.dumps(
        {"config": resolved(config), "training": TRAINING_VERSION}, sort_keys=True
    ).encode()
    return hashlib.sha256(payload).hexdigest()[:20]
