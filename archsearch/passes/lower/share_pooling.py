"""Lowering pass: one pooling of a map for every proxy that pools it alike.

Several proxies leave the same block-boundary map for the same resolution; each was emitted with
its own pooling. Max-pooling is a pure function of its arguments, so equal calls are computed once.
"""
from __future__ import annotations

import torch.fx as fx
import torch.nn.functional as F

from archsearch.passes.lower.graph_edit import finish, swap

POOLING = (F.max_pool2d, F.adaptive_max_pool2d)


def _key(node: fx.Node) -> tuple:
    return (node.target, node.args, tuple(sorted(node.kwargs.items())))


def share_pooling(gm: fx.GraphModule) -> int:
    """In place: every functional max-pooling equal to an earlier one (same function, same
    arguments) is replaced by it. Returns the count of calls removed."""
    first: dict[tuple, fx.Node] = {}
    shared = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in POOLING:
            continue
        key = _key(node)
        if key in first:
            swap(gm, node, first[key])
            shared += 1
        else:
            first[key] = node
    return finish(gm, shared)
