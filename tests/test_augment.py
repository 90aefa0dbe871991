"""Pen-stroke augmentation: off by default (the seed recipe and its run key unchanged),
seeded, and it draws what it says: centre lines one pixel wide, a pen of the given width."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from line_helpers import one_pixel_wide

from dropout_demo import training
from dropout_demo.config import PRESETS, ConfigError, TrainConfig
from dropout_demo.data import normalize
from dropout_demo.jobs.identity import resolved, run_key
from dropout_demo.training import (
    TRAINING_VERSION,
    augment_batch,
    augment_generator,
    centre_lines,
    pen_strokes,
    thin,
)

# TrainConfig's fields before "augment" existed: keys of runs saved then must not change.
FIELDS_BEFORE_AUGMENT = (
    "p",
    "epochs",
    "lr",
    "batch_size",
    "train_size",
    "eval_size",
    "epoch_eval_size",
    "seed",
    "device",
    "precision",
)


def test_off_by_default_and_validated():
    assert TrainConfig().augment == "none"
    assert PRESETS["Seed recipe"] == TrainConfig()
    assert all(c.augment == "none" for n, c in PRESETS.items() if n != "Pen strokes")
    assert PRESETS["Pen strokes"].augment == "pen"
    assert "pen strokes" in PRESETS["Pen strokes"].label()
    assert "strokes" not in TrainConfig().label()
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment="blur")
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "augment"}
    assert TrainConfig.from_dict(old) == TrainConfig()
    assert TrainConfig.from_dict(PRESETS["Pen strokes"].to_dict()) == PRESETS["Pen strokes"]


def test_the_seed_recipes_run_key_is_unchanged():
    config = TrainConfig(device="cpu", precision="fp32")
    # the key as it was computed before the field existed, built here independently
    before = {name: getattr(config, name) for name in FIELDS_BEFORE_AUGMENT}
    payload = json.dumps({"config": before, "training": TRAINING_VERSION}, sort_keys=True)
    assert run_key(config) == hashlib.sha256(payload.encode()).hexdigest()[:20]
    assert "augment" not in resolved(config)
    pen = config.replace(augment="pen")
    assert resolved(pen)["augment"] == "pen"
    assert run_key(pen) != run_key(config)


def bar(thickness: int, length: int = 20) -> torch.Tensor:
    """(1, 1, 28, 28) bool: a horizontal bar."""
    mask = torch.zeros(1, 1, 28, 28, dtype=torch.bool)
    mask[0, 0, 12 : 12 + thickness, 4 : 4 + length] = True
    return mask


@pytest.mark.parametrize("thickness", [2, 3, 4, 5])
def test_thinning_leaves_a_one_pixel_line(thickness):
    line = thin(bar(thickness))[0, 0]
    # one pixel per column along the bar's middle, nothing outside the bar
    assert (line[:, 6:22].sum(0) == 1).all()
    assert not (line & ~bar(thickness)[0, 0]).any()


def test_centre_lines_of_mnist_digits_are_thin_and_keep_their_loops(mnist):
    x = normalize(mnist.train_images[:300])
    lines = centre_lines(x)
    ink = x > 0
    assert lines.shape == x.shape and lines.dtype == torch.bool
    assert not (lines & ~ink).any()  # inside the strokes
    assert all(one_pixel_wide(line[0]) for line in lines)
    assert (lines.sum((1, 2, 3)) > 0).all()  # every digit keeps a line
    assert lines.sum() < 0.6 * ink.sum()
    # a ring keeps its hole
    yy, xx = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    r = ((yy - 14) ** 2 + (xx - 14) ** 2).float().sqrt()
    ring = ((r >= 6) & (r <= 10)).view(1, 1, 28, 28)
    thinned = thin(ring)[0, 0]
    assert not thinned[14, 14] and thinned[14, :14].any() and thinned[14, 14:].any()
    assert one_pixel_wide(thinned)
    thick = torch.zeros(28, 28, dtype=torch.bool)
    thick[10:12, 5:20] = True  # two pixels thick: not one pixel wide
    assert not one_pixel_wide(thick)


def test_the_pen_draws_the_width_it_is_given(monkeypatch):
    # no rotation, shear or stretch: a straight line drawn with a pen of a known width
    monkeypatch.setattr(training, "PEN_ROTATION", 0.0)
    monkeypatch.setattr(training, "PEN_SHEAR", 0.0)
    monkeypatch.setattr(training, "PEN_ASPECT", 0.0)
    line = thin(bar(4))
    for width in (1.2, 1.8, 2.6):
        monkeypatch.setattr(training, "PEN_WIDTH", (width, width))
        ink = pen_strokes(line, torch.Generator().manual_seed(0)) * 0.5 + 0.5
        profile = ink[0, 0, :, 10:18].sum(0)  # ink across the line, per column
        assert ink.max() == pytest.approx(1.0)
        assert profile.min() == pytest.approx(width, abs=0.35), (width, profile)
        assert profile.max() == pytest.approx(width, abs=0.35), (width, profile)


def test_augmentation_is_seeded_and_redraws_only_part_of_a_batch(mnist):
    x = normalize(mnist.train_images[:64])
    lines = centre_lines(x)
    a = augment_batch(x, lines, augment_generator(0))
    b = augment_batch(x, lines, augment_generator(0))
    c = augment_batch(x, lines, augment_generator(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    changed = (a != x).flatten(1).any(1)
    assert 10 < int(changed.sum()) < 54  # about half of 64
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= -1.0 and a.max() <= 1.0 + 1e-6
    assert torch.equal(augment_batch(x, None, augment_generator(0)), x)  # "none"


def test_a_pen_run_is_deterministic_and_keeps_the_batch_order(mnist, monkeypatch):
    monkeypatch.setattr(training, "resolve_plan", lambda p, d: training.Plan(torch.float32, False))
    config = TrainConfig(train_size=256, epochs=1, eval_size=200, augment="pen")
    one = training.fit(config, mnist)
    two = training.fit(config, mnist)
    assert one.status == two.status == "done"
    assert one.metrics[0].train_loss == two.metrics[0].train_loss
    assert one.metrics[0].test_loss == two.metrics[0].test_loss
    plain = training.fit(config.replace(augment="none"), mnist)
    assert plain.metrics[0].train_loss != one.metrics[0].train_loss

    seen = []
    real = training.augment_batch

    def spy(xb, lines, gen, fraction=training.PEN_FRACTION):
        seen.append(xb.clone())
        return real(xb, lines, gen, fraction)

    monkeypatch.setattr(training, "augment_batch", spy)
    training.fit(config, mnist)
    # the batches it augments are the batches the plain run trains on, in the same order
    x = normalize(training.subset(mnist.train_images, mnist.train_labels, 256, 0)[0])
    order = torch.randperm(256, generator=_after_init(config))
    assert torch.equal(seen[0], x[order[:64]])


def _after_init(config: TrainConfig) -> torch.Generator:
    """The batch-order generator as fit has it after building the model."""
    from dropout_demo.model import build_model

    gen = torch.Generator().manual_seed(config.seed)
    build_model(config, generator=gen)
    return gen
