"""Admission: pure checks of what a shared server accepts. No locks, no state, no threads.

Only requests that need compute are counted: attaching to a run someone else already started,
or to a cached result, costs nothing and is never refused for capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE, TrainConfig


class JobError(Exception):
    """A refused request (a limit, an unknown or foreign run); the message is for users."""


@dataclass(frozen=True)
class Limits:
    # Activation memory grows with the batch: one batch of 60,000 would need ~5 GB for the first
    # conv's output alone, and a hosted demo's process is shared by every visitor.
    max_batch_size: int = 1_024
    # Past a few hundred points a live chart is unreadable, and each epoch evaluates the test set.
    max_epochs: int = 200
    # Image passes (training and evaluation) per run: ten epochs of full MNIST with a full
    # evaluation after each. The Overfitting lab is about half of it, the seed recipe 350,000.
    max_work: int = 10 * (MNIST_TRAIN_SIZE + MNIST_TEST_SIZE)
    # Runs a browser session has started that still wait or train (attachments not counted).
    max_per_owner: int = 4
    # The same per client address, so scripted sessions from one machine can't fill the queue.
    # A class behind one school NAT is one address: 64 leaves room for 30 students pressing
    # Compare with settings of their own (shared and cached runs are not counted).
    max_per_client: int = 64
    # Runs waiting in all; a class of 30 pressing Compare asks for at most 60.
    max_queued: int = 240


def image_passes(config: TrainConfig, evaluated_images: int) -> int:
    """Training images times epochs, plus every test image evaluated during the run."""
    return config.epochs * config.train_size + evaluated_images


def check_config(config: TrainConfig, limits: Limits, evaluated_images: int) -> None:
    """Refuse a run that is too large for a shared server, whoever asks for it."""
    if config.batch_size > limits.max_batch_size:
        raise JobError(
            f"Batch size {config.batch_size:,} is too large here; the limit is "
            f"{limits.max_batch_size:,} images per batch."
        )
    if config.epochs > limits.max_epochs:
        raise JobError(
            f"{config.epochs:,} epochs is too many here; the limit is {limits.max_epochs:,}."
        )
    work = image_passes(config, evaluated_images)
    if work > limits.max_work:
        raise JobError(
            f"This run is too large: {config.epochs:,} epochs × {config.train_size:,} training "
            f"images plus {evaluated_images:,} test-image evaluations = {work:,} image passes, "
            f"and the limit here is {limits.max_work:,} (the seed recipe is "
            f"{5 * (MNIST_TRAIN_SIZE + MNIST_TEST_SIZE):,}). Use fewer epochs or fewer images."
        )


def check_capacity(owner_active: int, client_active: int, queued: int, limits: Limits) -> None:
    """Refuse a new computation when its session, its client or the whole queue is full.

    ``owner_active`` / ``client_active``: runs this session / this client address started that
    are still queued or running; ``queued``: runs waiting in all.
    """
    if owner_active >= limits.max_per_owner:
        raise JobError(
            f"You already have {owner_active} runs waiting or training; stop one or wait for "
            "one to finish."
        )
    if client_active >= limits.max_per_client:
        raise JobError(
            f"Your network address already has {client_active} runs waiting or training; "
            "wait for one to finish."
        )
    if queued >= limits.max_queued:
        raise JobError(
            f"The training queue is full ({queued} runs waiting); try again in a minute."
        )
