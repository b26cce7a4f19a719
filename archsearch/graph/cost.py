"""Cost of fx nodes: multiply-accumulates (per sample) and parameters.

MACs are what torch's own FlopCounterMode counts, halved: convolutions (transposed and grouped
included), linear layers and matrix products in any form (``x @ w``, ``x.bmm(w)``, ``einsum``,
attention), wherever they run, inside a user's leaf module too; batch-norm, activations, pooling and
additions are free (the paper's "FLOPs" are these MACs). Each node's count is recorded while its
shapes are propagated on one sample (``trace.propagate_shapes``), so a node runs with its real inputs.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

MACS_META = "archsearch_macs"  # node.meta key: the node's MACs for one sample


def _get_attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def count_macs(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """``fn(*args, **kwargs)`` and the multiply-accumulates it performed."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return out, counter.get_total_flops() // 2


def node_macs(node: fx.Node) -> int:
    """Multiply-accumulates of one fx node for one sample (0 for free operations), as recorded when
    the graph's shapes were propagated."""
    return node.meta.get(MACS_META, 0)


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
    """MACs of a small module (a proxy) for one sample of shape ``in_shape``."""
    device = next(module.parameters(), torch.empty(0)).device
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            return count_macs(module, torch.zeros((1, *in_shape), device=device))[1]
    finally:
        module.train(was_training)
