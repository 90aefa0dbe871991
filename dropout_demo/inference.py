"""Eval-mode prediction and Monte-Carlo dropout for one digit, with uncertainty measures.

MC dropout for ``SimpleCNN`` runs the convolutional trunk and fc1 once and applies the T
dropout masks to that single (1, 128) feature row as one (T, 128) batch: dropout is the only
stochastic layer and sits after fc1, so this is exactly T full stochastic passes at the cost of
one, which keeps T = 100 fast enough for many concurrent visitors. Masks come from a private
``torch.Generator``, never the global RNG, so a seeded call is reproducible and cannot disturb
(or be disturbed by) training threads. Models with other dropout placements fall back to one
batched forward of T copies of the image with only the dropout layers in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import HIDDEN_UNITS, SimpleCNN, dropout_layers, eval_mode, mc_dropout


@dataclass(frozen=True)
class MCResult:
    """T stochastic passes over one image; probabilities are per class (10,)."""

    mean: np.ndarray  # (10,) mean probability over the T passes
    std: np.ndarray  # (10,) standard deviation over the T passes
    votes: np.ndarray  # (10,) int: how many passes had each class as their argmax
    samples: np.ndarray  # (T, 10) every pass's probabilities
    entropy: float  # predictive entropy H[mean], nats
    expected_entropy: float  # mean over passes of H[p_t], nats
    mutual_info: float  # BALD: entropy - expected_entropy (>= 0)
    prediction: int  # argmax of mean
    T: int


@dataclass(frozen=True)
class PassResult:
    """One stochastic pass with the fc1 dropout mask it used."""

    probs: np.ndarray  # (10,)
    prediction: int
    dropped: np.ndarray  # (128,) bool, True = unit dropped
    scale: float  # 1 / (1 - p), applied to the kept units (inverted dropout)
    p: float


MAX_SAMPLES = 1_000  # Monte-Carlo passes per call: T = 10**7 took 55 s and gigabytes
PREDICT_CHUNK = 1_024  # images per forward in predict(): activations stay ~90 MB at most
_SEED_RANGE = (0, 2**63 - 1)


def _checked_samples(samples: object) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int | np.integer):
        raise ValueError(f"samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples!r}")
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples must be from 1 to {MAX_SAMPLES:,}, got {samples:,}")
    return int(samples)


def _checked_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be a whole number or None, got {seed!r}")
    if not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise ValueError(f"seed must be from 0 to 2**63 - 1, got {seed}")
    return int(seed)


def _checked_pixels(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor image, got {type(x).__name__}")
    if x.is_complex() or not torch.isfinite(x.float()).all():
        raise ValueError("the image holds NaN, infinite or complex values")
    return x


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _one_image(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = _checked_pixels(x)
    if x.numel() != 28 * 28:
        raise ValueError(f"expected one 28x28 image, got shape {tuple(x.shape)}")
    return x.reshape(1, 1, 28, 28).to(device=device, dtype=torch.float32)


def _generator(seed: int | None) -> torch.Generator:
    gen = torch.Generator()  # CPU: masks are tiny, drawing them on CPU keeps seeds portable
    if seed is None:
        gen.seed()  # fresh non-deterministic seed, without touching the global RNG
    else:
        gen.manual_seed(seed)
    return gen


def _draw_dropped(shape: tuple[int, ...], p: float, gen: torch.Generator) -> torch.Tensor:
    """Bool mask, True = dropped, each unit independently with probability p."""
    return torch.rand(shape, generator=gen) < p


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis, with 0 log 0 = 0."""
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=-1)


def _shifted_mean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0 computed around the first row, so identical rows give it exactly."""
    return values[0] + (values - values[0]).mean(axis=0)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode (dropout off) class probabilities, (N, 1, 28, 28) -> (N, 10).

    Large N runs in chunks of PREDICT_CHUNK images, so memory does not grow with N beyond the
    input and the output.
    """
    x = _checked_pixels(x)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
    device = _device(model)
    with torch.inference_mode(), eval_mode(model):
        chunks = [
            F.softmax(model(part.to(device=device, dtype=torch.float32)), dim=1).cpu()
            for part in x.split(PREDICT_CHUNK)
        ]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _mc_logits(model: nn.Module, x: torch.Tensor, samples: int, seed: int | None) -> torch.Tensor:
    """(T, 10) logits of T stochastic passes over one image, from one batched forward."""
    device = _device(model)
    x = _one_image(x, device)
    layers = dropout_layers(model)
    if not any(layer.p > 0 for layer in layers):
        # Nothing is random: one pass, repeated exactly (p = 0 gives exactly zero spread).
        with torch.inference_mode(), eval_mode(model):
            return model(x).cpu().expand(samples, -1).clone()
    if isinstance(model, SimpleCNN) and layers == [model.dropout]:
        with torch.inference_mode(), eval_mode(model):
            feats = model.features(x)  # (1, 128), deterministic
            dropped = _draw_dropped((samples, feats.shape[1]), model.p, _generator(seed))
            return _masked_logits(model, feats, dropped).cpu()  # (T, 128) -> (T, 10)
    # Generic model: T copies in one forward; nn.Dropout draws from the global RNG, so fork it.
    with torch.random.fork_rng(devices=[]), torch.inference_mode(), mc_dropout(model):
        torch.manual_seed(seed if seed is not None else _generator(None).initial_seed())
        return model(x.expand(samples, -1, -1, -1)).cpu()  # (T, 1, 28, 28) -> (T, 10)


def _masked_logits(model: SimpleCNN, feats: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """fc2 on fc1's features with the ``dropped`` units zeroed and the kept ones scaled by
    1/(1-p): exactly what the model's dropout layer does in training."""
    keep = (~dropped).to(device=feats.device, dtype=feats.dtype) / (1.0 - model.p)
    return model.fc2(feats * keep)


def mc_predict(
    model: nn.Module, x: torch.Tensor, samples: int = 50, seed: int | None = None
) -> MCResult:
    """Monte-Carlo dropout on one image (1, 1, 28, 28): T = ``samples`` stochastic passes.

    ``samples`` is bounded (1..MAX_SAMPLES) and ``seed`` must be None or in 0..2**63 - 1;
    anything else is a ValueError that says so.
    """
    samples = _checked_samples(samples)
    seed = _checked_seed(seed)
    logits = _mc_logits(model, x, samples, seed)
    probs = F.softmax(logits.double(), dim=1).numpy()  # (T, 10), float64 for the statistics
    mean = _shifted_mean(probs)
    std = np.sqrt(np.maximum(_shifted_mean((probs - mean) ** 2), 0.0))
    entropy = float(_entropy(mean))
    expected_entropy = float(_shifted_mean(_entropy(probs)))
    votes = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    return MCResult(
        mean=mean,
        std=std,
        votes=votes,
        samples=probs,
        entropy=entropy,
        expected_entropy=expected_entropy,
        mutual_info=max(entropy - expected_entropy, 0.0),
        prediction=int(mean.argmax()),
        T=samples,
    )


def stochastic_pass(model: SimpleCNN, x: torch.Tensor, generator: torch.Generator) -> PassResult:
    """One dropout pass that reports which of fc1's 128 units it dropped and the scale used.

    The mask is drawn with ``torch.rand(128, generator=generator) < p``, the same way
    ``mc_predict`` draws its rows, so a generator seeded like ``mc_predict(seed=s)`` gives that
    call's first pass.
    """
    device = _device(model)
    x = _one_image(x, device)
    p = model.p
    with torch.inference_mode(), eval_mode(model):
        feats = model.features(x)[0]  # (128,)
        dropped = _draw_dropped((HIDDEN_UNITS,), p, generator)
        logits = _masked_logits(model, feats, dropped)  # (10,)
        probs = F.softmax(logits.double(), dim=0).cpu().numpy()
    return PassResult(
        probs=probs,
        prediction=int(probs.argmax()),
        dropped=dropped.numpy(),
        scale=1.0 / (1.0 - p),
        p=p,
    )
