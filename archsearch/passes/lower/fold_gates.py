"""Lowering pass: a constant gate folded into the convolution it scales.

In a slim network a proxy's gate alpha is a constant multiplying the proxy's output, and that
output is a convolution (its batch-norm already folded in): ``alpha * conv(x, W, b)`` is
``conv(x, alpha W, alpha b)``, one pass over the feature map fewer.
"""
from __future__ import annotations

import numbers
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from archsearch.passes.lower.graph_edit import finish, get_tensor, set_tensor, swap, writable


def _scalable_conv(gm: fx.GraphModule, node: object) -> bool:
    """A functional convolution read by one node only, whose weight and bias nothing else reads."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is F.conv2d
            and len(node.users) == 1 and len(node.args) >= 3):
        return False
    tensors = node.args[1:3]
    return all(get_tensor(gm, t) is not None and len(t.users) == 1 and writable(gm, t.target) for t in tensors)


def fold_gates(gm: fx.GraphModule) -> int:
    """In place: ``conv * c`` and ``c * conv`` for a number ``c`` become the convolution with its
    weight and bias scaled by ``c``. Returns the count."""
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not operator.mul or len(node.args) != 2:
            continue
        a, b = node.args
        conv, scale = (a, b) if isinstance(b, numbers.Number) else (b, a)
        if not isinstance(scale, numbers.Number) or isinstance(scale, bool) or not _scalable_conv(gm, conv):
            continue
        with torch.no_grad():
            for t in conv.args[1:3]:
                set_tensor(gm, t.target, get_tensor(gm, t) * scale)
        swap(gm, node, conv)
        folded += 1
    return finish(gm, folded)
