"""Cost of fx nodes: multiply-accumulates (per sample) and parameters.

MACs count convolutions, linear layers and matrix products only (the paper's "FLOPs"); batch-norm,
activations, pooling and additions are free. Counts are per sample, from the shapes ShapeProp recorded.
"""
from __future__ import annotations

import math
import operator
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


def _layer_macs(mod: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int | None:
    """MACs of one conv, transposed conv or linear layer for its in/out shapes; None for other modules."""
    if isinstance(mod, nn.modules.conv._ConvTransposeNd):  # each input value meets out/groups kernels
        return _per_sample(in_shape) * (mod.out_channels // mod.groups) * math.prod(mod.kernel_size)
    if isinstance(mod, nn.modules.conv._ConvNd):
        return _per_sample(out_shape) * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
    if isinstance(mod, nn.Linear):
        return _per_sample(out_shape) * mod.in_features
    return None


_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_MATMULS = (torch.matmul, torch.bmm, torch.mm, operator.matmul)


def node_macs(gm: fx.GraphModule, node: fx.Node) -> int:
    """Multiply-accumulates of one fx node for one sample (0 for free operations).

    A module fx kept whole (a user's leaf module) is counted by running it once on a zero sample."""
    out = _shape(node)
    if out is None:
        return 0
    args = [a for a in node.args if isinstance(a, fx.Node)]
    src = _shape(args[0]) if args else None
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if src is None:
            return 0
        macs = _layer_macs(mod, src, out)
        if macs is not None:
            return macs
        if len(args) != 1 or not any(isinstance(m, _LAYERS) for m in mod.modules()):
            return 0
        return module_macs(mod, src[1:])
    if node.op == "call_function" and node.target in (F.conv1d, F.conv2d, F.conv3d, F.linear):
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        if not isinstance(weight, fx.Node) or weight.op != "get_attr":
            return 0
        w = _get_attr(gm, weight.target)
        if node.target is F.linear:
            return _per_sample(out) * w.shape[1]
        return _per_sample(out) * math.prod(w.shape[1:])
    if node.op == "call_function" and node.target in _MATMULS and src is not None and len(src) >= 2:
        return _per_sample(out) * src[-1]  # each output value sums over the first operand's last dim
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
    """MACs of a small module (a proxy, a user's leaf module) for one sample of shape ``in_shape``."""
    total = 0
    device = next(module.parameters(), torch.empty(0)).device

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if inp and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
            total += _layer_macs(mod, tuple(inp[0].shape), tuple(out.shape)) or 0

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros((1, *in_shape), device=device))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total
