"""Proxy layers: cheap task-specific stand-ins for a universal block.

A proxy max-pools its source to the destination's resolution, then projects channels with a 1x1
convolution and batch-norm. Where that projection alone would cost more than about a twentieth of
the block it stands in for (bottleneck blocks, wide outputs), it goes through a narrow bottleneck
instead (1x1 down, BN, ReLU, 1x1 up, BN), as in the paper's ResNet-50 experiments. Proxies are
plain ``torch.nn`` modules; the faster forms they run in (batch-norms folded, pooling and 1x1
convolutions as matrix operations) are made by lowering passes over the generated graph
(:mod:`archsearch.passes.lower`).
"""
from __future__ import annotations

import math

import torch.nn as nn

# A plain proxy is C_in*C_out MACs per output pixel; a basic ResNet block is 18x that (1/18 in the
# paper, "about 1/20"). Above this share of the block's MACs the bottleneck proxy is used.
PLAIN_SHARE = 1 / 12
BOTTLENECK_DIVISOR = 16


def make_pool(in_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> nn.Module:
    """Max-pooling from ``in_hw`` to ``out_hw``: a strided window when the ratio is whole."""
    if tuple(in_hw) == tuple(out_hw):
        return nn.Identity()
    factors = {round(i / o) for i, o in zip(in_hw, out_hw)}
    if len(factors) == 1:
        f = factors.pop()
        if f > 1 and all(i == o * f for i, o in zip(in_hw, out_hw)):
            return nn.MaxPool2d(kernel_size=f, stride=f)
        if f >= 1 and all(math.ceil(i / f) == o for i, o in zip(in_hw, out_hw)):
            return nn.MaxPool2d(kernel_size=f, stride=f, ceil_mode=True)
    return nn.AdaptiveMaxPool2d(tuple(out_hw))


class Proxy(nn.Sequential):
    """A proxy's layers (pooling, 1x1 convolutions, batch-norms), ending in a batch-norm: plain
    ``torch.nn`` modules, run as they are while training. Its gate multiplies its output in the
    generated student; the slim network folds both into its convolutions
    (:mod:`archsearch.passes.lower`)."""

    @property
    def pool(self) -> nn.Module:
        """The proxy's pooling to its destination's resolution (``nn.Identity`` where none is needed)."""
        return self[0]


def pool_key(pool: nn.Module) -> tuple | None:
    """Pooling modules with equal keys compute the same function (None: no pooling)."""
    if isinstance(pool, nn.Identity):
        return None
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
        layers += [nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=False),
                   nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    else:
        layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
    return Proxy(*layers)
