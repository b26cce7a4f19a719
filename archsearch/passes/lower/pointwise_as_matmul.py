"""Lowering pass for training on CPU: task layers' 1x1 convolutions as one batched matrix product.

Same parameters, values and gradients as the convolution. On CPU, oneDNN's NCHW 1x1 convolution at
the narrow widths of proxies costs up to several times the matrix product forward and backward (it
reorders the map; docs/design-choices.md), which dominated the student's training step. The
weight is read through ``get_attr`` of the very parameter the module holds, so training updates it.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.passes.lower.graph_edit import finish, swap


def _pointwise(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid") and module.dilation == (1, 1) and module.groups == 1
            and module.bias is None)


def pointwise_as_matmul(gm: fx.GraphModule, is_task: Callable[[str], bool]) -> int:
    """In place: every one-argument call of a bias-free 1x1 task convolution becomes
    ``bmm(W.flatten(1).expand(N, -1, -1), x.flatten(2)).unflatten(2, x.shape[2:])`` (NCHW maps).
    Returns the count."""
    graph, changed = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not is_task(node.target):
            continue
        if not _pointwise(gm.get_submodule(node.target)):
            continue
        x = node.args[0]
        with graph.inserting_before(node):
            weight = graph.call_method("flatten", (graph.get_attr(f"{node.target}.weight"), 1))
            weights = graph.call_method("expand", (weight, graph.call_method("size", (x, 0)), -1, -1))
            product = graph.call_function(torch.bmm, (weights, graph.call_method("flatten", (x, 2))))
            hw = graph.call_function(operator.getitem, (graph.call_function(getattr, (x, "shape")), slice(2, None)))
            new = graph.call_method("unflatten", (product, 2, hw))
        swap(gm, node, new)
        changed += 1
    return finish(gm, changed)
