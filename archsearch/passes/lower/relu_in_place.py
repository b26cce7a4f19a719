"""Lowering pass: the ReLU after a node's sum works in place when the sum is the network's own
temporary.

A sum made by the network (an addition, or a sum rewritten by
:mod:`~archsearch.passes.lower.pointwise_sums`, ``meta["owned"]``) and read by nothing but its ReLU
can be overwritten: ``relu_`` saves allocating and writing a second map. NaN stays NaN.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from archsearch.passes.lower.graph_edit import finish, swap

_TEMPORARIES = (operator.add, operator.mul, torch.add)  # each returns a new tensor


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    if len(node.args) != 1 or any(k != "inplace" for k in node.kwargs):
        return False
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu)
    if node.op == "call_method":
        return node.target == "relu"
    return node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.ReLU


def _owned(node: object) -> bool:
    return (isinstance(node, fx.Node) and "sum_of" in node.meta and len(node.users) == 1
            and (node.meta.get("owned") or (node.op == "call_function" and node.target in _TEMPORARIES)))


def relu_in_place(gm: fx.GraphModule) -> int:
    """In place: a ReLU whose argument is a node's sum that the network owns becomes ``torch.relu_``.
    Returns the count."""
    changed = 0
    for node in list(gm.graph.nodes):
        if not (_owned(node.args[0] if node.args else None) and _is_relu(gm, node)):
            continue
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(torch.relu_, (node.args[0],))
        swap(gm, node, new)
        changed += 1
    return finish(gm, changed)
