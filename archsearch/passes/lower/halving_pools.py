"""Lowering pass: max-pooling by a power of two as maxima of row pairs, then of column pairs.

The same values as ``max_pool2d(x, 2**n)`` on maps whose sides 2**n divides. On CPU, max-pooling's
NCHW kernel costs more than a small convolution of the same map, which made proxies (and so
tailored networks) slow; the pairwise maxima are elementwise passes over ever smaller maps
(docs/design-choices.md). The pass reads the map's shape from ``node.meta["shape"]`` (C, H, W),
which code generation records for every block-boundary value; without it a pooling is left alone.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from archsearch.passes.lower.graph_edit import finish, swap

_ALL = slice(None)


def _pair(v: object) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _halvings(node: fx.Node) -> int:
    """How many halvings ``node`` (a ``max_pool2d`` call) is, or 0 where it is not one."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    if len(node.args) > len(names) or set(node.kwargs) - set(names):
        return 0
    bound = {**dict(zip(names, node.args)), **node.kwargs}
    x, kernel, stride = bound.get("input"), _pair(bound.get("kernel_size")), bound.get("stride")
    padding, dilation = bound.get("padding", 0), bound.get("dilation", 1)
    stride = _pair(stride) if stride not in (None, ()) else kernel
    shape = x.meta.get("shape") if isinstance(x, fx.Node) else None
    if bound.get("return_indices") or kernel[0] != kernel[1] or stride != kernel or _pair(padding or 0) != (0, 0):
        return 0
    if _pair(dilation or 1) != (1, 1) or shape is None or len(shape) != 3:
        return 0
    k = kernel[0]
    if not (isinstance(k, int) and k > 1 and k & (k - 1) == 0) or any(s % k for s in shape[1:]):
        return 0
    return k.bit_length() - 1


def halving_pools(gm: fx.GraphModule) -> int:
    """In place: every ``max_pool2d(x, 2**n)`` on a map whose sides 2**n divides becomes n rounds of
    pairwise maxima over rows, then columns. Returns the count."""
    graph, lowered = gm.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not F.max_pool2d:
            continue
        times = _halvings(node)
        if not times:
            continue
        x = node.args[0]
        with graph.inserting_before(node):
            for _ in range(times):
                rows = graph.call_function(torch.unflatten, (x, 2, (-1, 2)))
                x = graph.call_function(torch.maximum, (graph.call_function(operator.getitem, (rows, (_ALL, _ALL, _ALL, 0))),
                                                        graph.call_function(operator.getitem, (rows, (_ALL, _ALL, _ALL, 1)))))
                cols = graph.call_function(torch.unflatten, (x, 3, (-1, 2)))
                x = graph.call_function(torch.maximum, (graph.call_function(operator.getitem, (cols, (Ellipsis, 0))),
                                                        graph.call_function(operator.getitem, (cols, (Ellipsis, 1)))))
        swap(gm, node, x)
        lowered += 1
    return finish(gm, lowered)
