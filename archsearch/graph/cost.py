"""Cost of fx nodes: multiply-accumulates (per sample) and parameters.

MACs count convolutions and linear layers only (the paper's "FLOPs"); batch-norm, activations,
pooling and additions are free. Counts are per sample, from the shapes ShapeProp recorded.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _per_sample(numel_shape: tuple[int, ...]) -> int:
    return math.prod(numel_shape[1:]) if len(numel_shape) > 1 else math.prod(numel_shape)


def _get_attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def node_macs(gm: fx.GraphModule, node: fx.Node) -> int:
    """Multiply-accumulates of one fx node for one sample (0 for free operations)."""
    out = _shape(node)
    if out is None:
        return 0
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):  # each input value meets out/groups kernels
            src = _shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None
            return _per_sample(src) * (mod.out_channels // mod.groups) * math.prod(mod.kernel_size) if src else 0
        if isinstance(mod, nn.modules.conv._ConvNd):
            return _per_sample(out) * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        if isinstance(mod, nn.Linear):
            return _per_sample(out) * mod.in_features
        return 0
    if node.op == "call_function" and node.target in (F.conv1d, F.conv2d, F.conv3d, F.linear):
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if not isinstance(weight, fx.Node) or weight.op != "get_attr":
            return 0
        w = _get_attr(gm, weight.target)
        if node.target is F.linear:
            return _per_sample(out) * w.shape[1]
        return _per_sample(out) * math.prod(w.shape[1:])
    return 0


def node_parameters(gm: fx.GraphModule, node: fx.Node) -> list[torch.Tensor]:
    """The parameter tensors a node reads directly (its module's, or a get_attr parameter)."""
    if node.op == "call_module":
        return list(gm.get_submodule(node.target).parameters())
    if node.op == "get_attr":
        value = _get_attr(gm, node.target)
        return [value] if isinstance(value, nn.Parameter) else []
    return []


def nodes_parameters(gm: fx.GraphModule, nodes: Iterable[fx.Node]) -> list[torch.Tensor]:
    """The parameter tensors fx ``nodes`` read, directly or through a get_attr input."""
    nodes = list(nodes)
    return ([p for n in nodes for p in node_parameters(gm, n)]
            + [p for n in nodes for a in n.all_input_nodes if a.op == "get_attr" for p in node_parameters(gm, a)])


def count_params(tensors: Iterable[torch.Tensor]) -> int:
    """Number of elements in distinct tensors (a tensor read twice counts once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        seen[id(t)] = t.numel()
    return sum(seen.values())


def module_macs(module: nn.Module, in_shape: tuple[int, ...]) -> int:
    """MACs of a small task-specific module (a proxy) for one sample of shape ``in_shape``."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.modules.conv._ConvTransposeNd):
            total += _per_sample(tuple(inp[0].shape)) * (mod.out_channels // mod.groups) * math.prod(mod.kernel_size)
        elif isinstance(mod, nn.modules.conv._ConvNd):
            total += _per_sample(tuple(out.shape)) * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        elif isinstance(mod, nn.Linear):
            total += _per_sample(tuple(out.shape)) * mod.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros((1, *in_shape)))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total
