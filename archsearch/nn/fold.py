"""Inference form of task-specific layers: batch-norms folded into the convolution before them.

A slim network runs each proxy as pooling, 1x1 convolutions with bias and ReLUs; a proxy's gate
scales its last convolution. Fewer, cheaper operations is what lets a tailored network's latency
fall with its MACs (a batch-norm over a feature map costs a full memory pass on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from archsearch.nn.proxy import HalvingMaxPool


@dataclass
class Step:
    """One inference operation of a folded proxy: ``kind`` is pool, conv or relu."""

    kind: str
    module: nn.Module | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    index: int = 0  # position of the layer in the proxy (names the folded tensors)


def fold_proxy(proxy: nn.Sequential, scale: float = 1.0) -> list[Step]:
    """The eval-mode proxy as steps with every conv + batch-norm pair fused, output times ``scale``."""
    layers = list(proxy)
    steps: list[Step] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.Identity):
            pass
        elif isinstance(layer, (HalvingMaxPool, nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            steps.append(Step("pool", module=layer, index=i))
        elif isinstance(layer, nn.ReLU):
            steps.append(Step("relu", index=i))
        elif isinstance(layer, nn.Conv2d):
            index = i
            weight = layer.weight.detach()
            bias = layer.bias.detach() if layer.bias is not None else weight.new_zeros(layer.out_channels)
            if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                bn = layers[i + 1]
                weight, bias = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps,
                                                    bn.weight, bn.bias)
                i += 1
            steps.append(Step("conv", module=layer, weight=weight.detach().clone(), bias=bias.detach().clone(),
                              index=index))
        else:
            raise ValueError(f"cannot fold proxy layer {type(layer).__name__}")
        i += 1
    convs = [s for s in steps if s.kind == "conv"]
    if not convs:
        raise ValueError("a proxy must contain a convolution")
    convs[-1].weight.mul_(scale)
    convs[-1].bias.mul_(scale)
    return steps
