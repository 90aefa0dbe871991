"""The seed tutorial's SimpleCNN, with its flatten size derived instead of hard-coded."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig

IMAGE_SIZE = 28
NUM_CLASSES = 10
HIDDEN_UNITS = 128
CONV1_KERNELS = ("conv", "gemm")


def conv_features(image_size: int = IMAGE_SIZE) -> int:
    """Flattened size after the seed's two (3x3 valid conv, 2x2 max-pool) stages.

    28 -> conv 26 -> pool 13 -> conv 11 -> pool 5, so 64 * 5 * 5 = 1600. The seed wrote
    64 * 6 * 6 = 2304, which makes fc1 reject the flattened tensor.
    """
    side = image_size
    for _ in range(2):
        side = (side - 2) // 2  # valid 3x3 conv, then floor-mode 2x2 pool
    return 64 * side * side


class Dropout(nn.Dropout):
    """``nn.Dropout`` (inverted dropout) that can draw its masks from its own generator.

    Training runs share one process, and torch's default generator is process-wide: two runs
    in parallel threads would interleave their draws. A run-owned generator keeps a run
    reproducible from its seed whatever else is training. With ``generator=None`` this is
    exactly ``nn.Dropout``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__(p=p)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.generator is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)  # kept units scaled by 1/(1-p); eval is the identity


# The four conv1 outputs a 2x2 pooling window takes its max over, as (row, col) offsets, in
# max_pool2d's scan order (ties go to the first, as in max_pool2d).
_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))


def _window_weights(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, 3, 3) conv weights -> (16, 4 * C): column (j, c) applies filter c at offset j
    of a 4x4 input patch, so one patch times this matrix gives a pooling window's 4 outputs."""
    c = weight.shape[0]
    w4 = weight.new_zeros(4, 4, 4, c)  # (offset j, patch row, patch col, C)
    kernel = weight[:, 0].permute(1, 2, 0)  # (3, 3, C)
    for j, (dy, dx) in enumerate(_WINDOW):
        w4[j, dy : dy + 3, dx : dx + 3] = kernel
    return w4.permute(1, 2, 0, 3).reshape(16, 4 * c)


def _fold_window_grad(grad_w4: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_window_weights`: (16, 4 * C) -> (C, 1, 3, 3)."""
    c = grad_w4.shape[1] // 4
    g = grad_w4.view(4, 4, 4, c)  # (patch row, patch col, offset j, C)
    out = g.new_zeros(3, 3, c)
    for j, (dy, dx) in enumerate(_WINDOW):
        out += g[dy : dy + 3, dx : dx + 3, j]
    return out.permute(2, 0, 1).unsqueeze(1)


def _window_patches(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(N, 1, H, W) -> (N * S * S, 16): the 4x4 input patch under each 2x2 pooling window of
    a valid 3x3 conv, S = (H - 2) // 2 (floor-mode pooling drops an odd last row)."""
    s = (x.shape[-1] - 2) // 2
    patches = x[:, 0, : 2 * s + 2, : 2 * s + 2].unfold(1, 4, 2).unfold(2, 4, 2)  # (N, S, S, 4, 4)
    return patches.reshape(-1, 16), s


class _Conv1PoolReLU(torch.autograd.Function):
    """``relu(max_pool2d(conv2d(x, weight, bias), 2))`` for a one-channel input.

    With one input channel a 3x3 convolution is a GEMM with K = 9, which convolution
    libraries run far below the machine's speed, and its max-pool backward zero-fills an
    (N, C, 26, 26) gradient. Here one GEMM of the 4x4 patches under each pooling window gives
    the window's four conv outputs side by side, a max over them pools, and the weight
    gradient is one GEMM of the patches with the routed gradient. The input never needs a
    gradient (it is the image). A window whose outputs tie (MNIST's flat background, where the
    four 3x3 sub-patches are the same pixels) shares its gradient among them, which gives the
    weights exactly the gradient max_pool2d's "first one wins" gives. Under autocast it
    computes in float32 (a small share of the work; bfloat16 would not pay here).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], weight.shape[0]
        patches, s = _window_patches(x)  # (M, 16), M = N * S * S
        outs = (patches @ _window_weights(weight)).view(-1, 4, c)  # (M, 4, C): window's 4 outputs
        pooled = outs.amax(dim=1)  # (M, C)
        out = (pooled + bias).clamp_min_(0)  # bias is the same for all 4, so add it after
        ctx.save_for_backward(patches, outs, pooled, out)
        return out.view(n, s, s, c).permute(0, 3, 1, 2)  # (N, C, S, S), channels_last

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out: torch.Tensor):
        patches, outs, pooled, out = ctx.saved_tensors
        c = out.shape[1]
        grad = grad_out.permute(0, 2, 3, 1).reshape(-1, c) * (out > 0)  # (M, C), through ReLU
        won = outs == pooled.unsqueeze(1)  # (M, 4, C)
        routed = won * (grad / won.sum(1)).unsqueeze(1)  # (M, 4, C)
        grad_w4 = patches.t() @ routed.view(-1, 4 * c)  # (16, 4 * C)
        return None, _fold_window_grad(grad_w4), grad.sum(0)


def conv1_pool_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Same values as ``relu(max_pool2d(conv2d(x, weight, bias), 2))`` for (N, 1, H, W) input
    and 3x3 weights, computed as GEMMs over 4x4 patches (see :class:`_Conv1PoolReLU`)."""
    if torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad):
        return _Conv1PoolReLU.apply(x, weight, bias)
    x, weight, bias = x.float(), weight.float(), bias.float()
    n, c = x.shape[0], weight.shape[0]
    patches, s = _window_patches(x)
    pooled = (patches @ _window_weights(weight)).view(-1, 4, c).amax(dim=1)
    return pooled.add_(bias).clamp_min_(0).view(n, s, s, c).permute(0, 3, 1, 2)


def _valid_patches(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, H, W) -> (N * (H-k+1) * (W-k+1), k * k * C): each k x k patch of a valid
    convolution as one row, ordered (row, col, channel), as a channels_last weight is laid out."""
    x = x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    sn, sc, sh, sw = x.stride()
    windows = x.as_strided((n, h - k + 1, w - k + 1, k, k, c), (sn, sh, sw, sh, sw, sc))
    return windows.reshape(-1, k * k * c)


class _ConvWeightGEMM(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` (stride 1, no padding) whose weight gradient is one matrix
    product of the input's patches with the output gradient.

    The library's weight-gradient kernel runs conv2's shapes (32 -> 64 channels, 13x13 input,
    batch 64) at about half the speed of its forward convolution on the CPU it was measured on
    (one thread); one GEMM of the (N*121, 288) patches does the same sums a little faster there
    (README: Performance), and slower at two threads, so the probe decides. The forward pass and
    the input gradient stay the library's. Under autocast it computes in float32.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        c_out, c_in, k, _ = weight.shape
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        grad = grad_out.permute(0, 2, 3, 1).reshape(-1, c_out)  # (N*Ho*Wo, C_out)
        grad_w = grad.t() @ _valid_patches(x, k)  # (C_out, k*k*C_in): (row, col, channel)
        grad_w = grad_w.view(c_out, k, k, c_in).permute(0, 3, 1, 2)  # channels_last strides
        return grad_x, grad_w, grad.sum(0)


def conv_weight_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Same values as ``F.conv2d(x, weight, bias)``; while training, the weight gradient is
    computed as a GEMM (see :class:`_ConvWeightGEMM`)."""
    if torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad):
        return _ConvWeightGEMM.apply(x, weight, bias)
    return F.conv2d(x, weight, bias)


class SimpleCNN(nn.Module):
    """conv(1->32) relu pool, conv(32->64) relu pool, fc(->128) relu, dropout(p), fc(->10)."""

    def __init__(
        self,
        p: float = 0.5,
        image_size: int = IMAGE_SIZE,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(conv_features(image_size), HIDDEN_UNITS)
        self.fc2 = nn.Linear(HIDDEN_UNITS, NUM_CLASSES)
        self.dropout = Dropout(p=p)
        # How conv1 (+ pool + ReLU) is computed: "conv" (the library's convolution) or "gemm"
        # (conv1_pool_relu, CPU only). Same function; training picks the faster by measurement.
        self.conv1_kernel = "conv"
        # How conv2's weight gradient is computed: "conv" (the library's kernel) or "gemm"
        # (conv_weight_gemm, CPU only). Same function; training picks by measurement.
        self.conv2_kernel = "conv"
        if generator is not None:
            init_parameters(self, generator)

    @property
    def p(self) -> float:
        return float(self.dropout.p)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> fc1 activations after ReLU, before dropout: (N, 128)."""
        # The seed applies ReLU then max-pool. Both are monotone, so pool-then-ReLU computes the
        # same values while running ReLU (and its backward) on a quarter of the elements.
        if self.conv1_kernel == "gemm" and x.device.type == "cpu":
            x = conv1_pool_relu(x, self.conv1.weight, self.conv1.bias)  # (N, 32, 13, 13)
        else:
            x = F.relu(F.max_pool2d(self.conv1(x), 2))  # (N, 32, 13, 13)
        if self.conv2_kernel == "gemm" and x.device.type == "cpu":
            x = conv_weight_gemm(x, self.conv2.weight, self.conv2.bias)  # (N, 64, 11, 11)
        else:
            x = self.conv2(x)
        x = F.relu(F.max_pool2d(x, 2))  # (N, 64, 5, 5)
        x = torch.flatten(x, 1)  # (N, 1600)
        return F.relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))  # (N, 10) logits


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Conv2d/Linear initialisation, drawn from ``generator``.

    Same distribution as ``reset_parameters`` (kaiming-uniform with a = sqrt(5), bias
    uniform in +-1/sqrt(fan_in)), but independent of the process-wide RNG.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def build_model(config: TrainConfig, generator: torch.Generator | None = None) -> SimpleCNN:
    return SimpleCNN(p=config.p, generator=generator)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


def set_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode everywhere except the dropout layers, which sample masks (MC dropout)."""
    model.eval()
    for layer in dropout_layers(model):
        layer.train()
    return model


@contextlib.contextmanager
def _modes_restored(model: nn.Module) -> Iterator[None]:
    """Puts every module back in the train/eval mode it had on entry."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager form of :func:`set_mc_dropout` that restores every module's mode."""
    with _modes_restored(model):
        yield set_mc_dropout(model)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Plain eval mode (dropout is the identity), restoring every module's mode afterwards."""
    with _modes_restored(model):
        yield model.eval()


def make_checkpoint(model: SimpleCNN, config: TrainConfig, **extra: Any) -> dict[str, Any]:
    """A dict of plain types and tensors, loadable with ``torch.load(weights_only=True)``."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"config": config.to_dict(), "state_dict": state, **extra}


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[SimpleCNN, TrainConfig]:
    config = TrainConfig.from_dict(dict(ckpt["config"]))
    model = build_model(config)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, config
