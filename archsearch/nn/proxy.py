"""Proxy layers: cheap task-specific stand-ins for a universal block.

A proxy max-pools its source to the destination's resolution, then projects channels with a 1x1
convolution and batch-norm. Where that projection alone would cost more than about a twentieth of
the block it stands in for (bottleneck blocks, wide outputs), it goes through a narrow bottleneck
instead (1x1 down, BN, ReLU, 1x1 up, BN), as in the paper's ResNet-50 experiments. Proxies are
built from plain ``torch.nn`` modules; a finished network runs them in inference form
(:mod:`archsearch.nn.fold`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# A plain proxy is C_in*C_out MACs per output pixel; a basic ResNet block is 18x that (1/18 in the
# paper, "about 1/20"). Above this share of the block's MACs the bottleneck proxy is used.
PLAIN_SHARE = 1 / 12
BOTTLENECK_DIVISOR = 16


class HalvingMaxPool(nn.Module):
    """Max over non-overlapping 2x2 windows, ``times`` times over (sizes divisible by 2**times).

    The same values as ``nn.MaxPool2d(2 ** times)``, computed as the maximum of row pairs, then of
    column pairs: on CPU, max-pooling's NCHW kernel costs more than a 3x3 convolution of the same
    map, which made proxies (and so tailored networks) slow. On a 64x16x32x32 map: 0.40 ms, against
    0.51 ms for the maximum of four strided views and 2.8 ms for max_pool2d. When a gradient must flow
    back through the pool, it is max_pool2d after all: the views' backward costs three times its.
    """

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:  # training through the pool: max_pool2d's backward is the cheap one
            return F.max_pool2d(x, 2 ** self.times)
        for _ in range(self.times):
            rows = x.unflatten(2, (-1, 2))
            x = torch.maximum(rows[:, :, :, 0], rows[:, :, :, 1])
            cols = x.unflatten(3, (-1, 2))
            x = torch.maximum(cols[..., 0], cols[..., 1])
        return x

    def extra_repr(self) -> str:
        return f"times={self.times}"


class PointwiseConv(nn.Conv2d):
    """A bias-free 1x1 convolution computed as one matrix product over all pixels.

    Same parameters and values as ``nn.Conv2d(c_in, c_out, 1)``; on CPU, mkldnn's NCHW 1x1
    convolution at the narrow widths of proxies costs up to ten times the matrix product (it
    reorders the map), which dominated both the student's training step and the tailored network.
    A channels-last map is multiplied as its (pixels x channels) rows, so it stays channels-last.
    Off CPU it is the ordinary convolution.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cpu:
            return super().forward(x)
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            n, _, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)
            return (rows @ self.weight.flatten(1).t()).view(n, h, w, -1).permute(0, 3, 1, 2)
        weight = self.weight.flatten(1).expand(x.shape[0], -1, -1)
        return torch.bmm(weight, x.flatten(2)).unflatten(2, x.shape[2:])


def make_pool(in_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> nn.Module:
    """Max-pooling from ``in_hw`` to ``out_hw``: a strided window when the ratio is whole."""
    if tuple(in_hw) == tuple(out_hw):
        return nn.Identity()
    factors = {round(i / o) for i, o in zip(in_hw, out_hw)}
    if len(factors) == 1:
        f = factors.pop()
        if f > 1 and f & (f - 1) == 0 and all(i == o * f for i, o in zip(in_hw, out_hw)):
            return HalvingMaxPool(f.bit_length() - 1)
        if f >= 1 and all(math.ceil(i / f) == o for i, o in zip(in_hw, out_hw)):
            return nn.MaxPool2d(kernel_size=f, stride=f, ceil_mode=True)
    return nn.AdaptiveMaxPool2d(tuple(out_hw))


class Proxy(nn.Sequential):
    """A proxy's layers (pooling, 1x1 convolutions, batch-norms), ending in an affine batch-norm.

    ``proxy(x, scale)`` multiplies the output by ``scale`` (its gate) through that batch-norm's
    affine parameters: the gate costs no extra pass over the feature map, forward or backward,
    where ``scale * proxy(x)`` would cost three. ``pooled=True`` says ``x`` is already pooled
    (proxies from one source to one resolution share a single pooling of it).
    """

    @property
    def pool(self) -> nn.Module:
        """The proxy's pooling to its destination's resolution (``nn.Identity`` where none is needed)."""
        return self[0]

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, pooled: bool = False) -> torch.Tensor:
        """The proxy's output, times ``scale`` where given (see the class docstring)."""
        *body, bn = list(self)[1:] if pooled else list(self)
        for layer in body:
            x = layer(x)
        if scale is None:
            return bn(x)
        if bn.training and bn.track_running_stats:
            bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        use_batch = bn.training or bn.running_mean is None
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight * scale, bn.bias * scale, use_batch,
                            momentum, bn.eps)


def pool_key(pool: nn.Module) -> tuple | None:
    """Pooling modules with equal keys compute the same function (None: no pooling)."""
    if isinstance(pool, nn.Identity):
        return None
    if isinstance(pool, HalvingMaxPool):
        return ("halving", pool.times)
    return (type(pool).__name__, pool.extra_repr())


def make_proxy(in_shape: tuple[int, ...], out_shape: tuple[int, ...], block_macs: int) -> Proxy:
    """A proxy from a (C, H, W) tensor to an (C', H', W') tensor standing in for ``block_macs``."""
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise ValueError(f"proxies join 4-d feature maps, got {in_shape} -> {out_shape}")
    c_in, c_out = in_shape[0], out_shape[0]
    pixels = out_shape[1] * out_shape[2]
    layers: list[nn.Module] = [make_pool(in_shape[1:], out_shape[1:])]
    if block_macs and c_in * c_out * pixels > PLAIN_SHARE * block_macs:
        mid = max(8, min(c_in, c_out) // BOTTLENECK_DIVISOR)
        layers += [PointwiseConv(c_in, mid), nn.BatchNorm2d(mid), nn.ReLU(inplace=False),
                   PointwiseConv(mid, c_out), nn.BatchNorm2d(c_out)]
    else:
        layers += [PointwiseConv(c_in, c_out), nn.BatchNorm2d(c_out)]
    return Proxy(*layers)
