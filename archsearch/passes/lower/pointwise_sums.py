"""Lowering pass: a node's gated sum accumulated in as few passes over memory as possible.

Code generation marks the value that sums a block-boundary node's live edges
(``node.meta["sum_of"]``, with its shape in ``node.meta["shape"]``). In a slim network the terms
of that sum are universal blocks (one of them times a constant gate) and proxies whose last layer,
after folding, is a 1x1 convolution with a bias. On CPU every pass over a feature map costs about
as much as a small convolution, so this pass rewrites the sum as:

- NCHW maps: the proxies' 1x1 convolutions as batched matrix products accumulated in place
  (``baddbmm_``) into one buffer that starts as the summed biases plus the universal terms;
- channels-last maps (``pixels_major``): the same products over the maps' (pixels x channels) rows
  (``addmm_``), into a sum made contiguous channels-last first, so an in-place product always lands
  in memory the sum owns; a sum that starts with a product starts as oneDNN's 1x1 convolution.

The rewritten sum is marked ``meta["owned"]``: a ReLU after it may work in place
(:mod:`archsearch.passes.lower.relu_in_place`).
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F

from archsearch.passes.lower.graph_edit import add_chain, finish, get_tensor, set_tensor, swap, writable

BIAS_PREFIX = "proxies.bias_"  # the summed biases of node N's proxies: proxies.bias_N


@dataclass
class _Terms:
    """A sum's leaves: plain terms, one universal term times a constant, and 1x1 products."""

    plain: list[fx.Node] = field(default_factory=list)
    scaled: tuple[fx.Node, float] | None = None
    products: list[fx.Node] = field(default_factory=list)  # F.conv2d calls with 1x1 weights


def _leaves(node: fx.Node, root: bool = True) -> list[fx.Node]:
    """The terms of a chain of additions, left to right (inner additions read by nothing else)."""
    if node.op == "call_function" and node.target is operator.add and (root or len(node.users) == 1) \
            and all(isinstance(a, fx.Node) for a in node.args):
        return _leaves(node.args[0], False) + _leaves(node.args[1], False)
    return [node]


def _is_product(gm: fx.GraphModule, node: fx.Node) -> bool:
    if not (node.op == "call_function" and node.target is F.conv2d and len(node.users) == 1 and len(node.args) == 7):
        return False
    _, w, b, stride, padding, dilation, groups = node.args
    weight, bias = get_tensor(gm, w), get_tensor(gm, b)
    return (weight is not None and bias is not None and weight.dim() == 4 and tuple(weight.shape[2:]) == (1, 1)
            and len(w.users) == 1 and len(b.users) == 1 and writable(gm, w.target) and tuple(stride) == (1, 1)
            and padding in (0, (0, 0), "valid") and tuple(dilation) == (1, 1) and groups == 1)


def _terms(gm: fx.GraphModule, root: fx.Node) -> _Terms:
    out = _Terms()
    for leaf in _leaves(root):
        if _is_product(gm, leaf):
            out.products.append(leaf)
        elif (out.scaled is None and leaf.op == "call_function" and leaf.target is operator.mul
              and len(leaf.users) == 1 and isinstance(leaf.args[1], numbers.Number)
              and isinstance(leaf.args[0], fx.Node)):
            out.scaled = (leaf.args[0], float(leaf.args[1]))
        else:
            out.plain.append(leaf)
    return out


class _Rewriter:
    """Emits the new form of each marked sum, before the sum it replaces."""

    def __init__(self, gm: fx.GraphModule, pixels_major: bool) -> None:
        self.gm, self.graph, self.pixels_major = gm, gm.graph, pixels_major
        self.rows_of: dict[fx.Node, fx.Node] = {}  # a source's (pixels x channels) rows, viewed once

    def call(self, fn, *args, **kwargs) -> fx.Node:
        return self.graph.call_function(fn, tuple(args), kwargs)

    def method(self, name: str, *args, **kwargs) -> fx.Node:
        return self.graph.call_method(name, tuple(args), kwargs)

    def cast(self, x: fx.Node, like: fx.Node) -> fx.Node:
        """``x`` in ``like``'s dtype. Under autocast a sum is in the lower precision while the tensors
        stay float32: an in-place product with mixed dtypes fails, a float32 bias promotes the whole
        sum. ``type_as``: no ``getattr`` in the code, whose names a task pack must resolve."""
        return self.method("type_as", x, like)

    def tensor(self, target: str, value: torch.Tensor) -> fx.Node:
        set_tensor(self.gm, target, value)
        return self.graph.get_attr(target)

    def rewrite(self, root: fx.Node) -> fx.Node | None:
        """The replacement of sum ``root`` (inserted before it), or None to leave it as it is."""
        terms = _terms(self.gm, root)
        shape = root.meta.get("shape")
        if not terms.products or shape is None or len(shape) != 3:
            if terms.scaled is None or not terms.plain or terms.products:
                return None
            total = add_chain(self.graph, terms.plain)
            return self.call(torch.add, total, terms.scaled[0], alpha=terms.scaled[1])
        total = add_chain(self.graph, terms.plain) if terms.plain else None
        biases = [get_tensor(self.gm, p.args[2]) for p in terms.products]
        bias = biases[0]
        for b in biases[1:]:
            bias = bias + b
        name = BIAS_PREFIX + root.meta["sum_of"]
        if self.pixels_major:
            return self.pixel_products(terms, total, bias, name, tuple(shape[1:]))
        return self.batched_products(terms, total, bias, name, tuple(shape[1:]))

    def batched_products(self, terms: _Terms, total: fx.Node | None, bias: torch.Tensor, name: str,
                         out_hw: tuple[int, ...]) -> fx.Node:
        """NCHW: ``baddbmm_`` of each product into a buffer of the flattened sum."""
        acc = self.tensor(name, bias[:, None])
        own = None  # the sum's own temporary, which baddbmm_ may overwrite and whose dtype its products take
        if terms.scaled is not None:
            u, c = terms.scaled
            acc = own = self.call(torch.add, self.cast(acc, u), self.call(torch.flatten, u, 2), alpha=c)
        if total is not None:
            acc = own = self.call(torch.add, self.cast(acc, total), self.call(torch.flatten, total, 2))
        flats = [self.call(torch.flatten, p.args[0], 2) for p in terms.products]
        batch = self.method("size", flats[0], 0)
        for p, flat in zip(terms.products, flats):
            matrix = self.tensor(p.args[1].target, get_tensor(self.gm, p.args[1]).flatten(1))
            weights = self.method("expand", matrix, batch, -1, -1)
            if own is not None:  # in place: an out-of-place baddbmm first copies acc, one more pass over the map
                acc = self.method("baddbmm_", acc, self.cast(weights, own), self.cast(flat, own))
            else:
                acc = own = self.call(torch.baddbmm, acc, weights, flat)
        return self.call(torch.unflatten, acc, 2, out_hw)

    def rows(self, x: fx.Node) -> fx.Node:
        return self.call(torch.flatten, self.call(torch.permute, x, (0, 2, 3, 1)), 0, 2)

    def source_rows(self, x: fx.Node) -> fx.Node:
        """A source's rows, viewed once for every product it feeds (placed right after the source)."""
        if x not in self.rows_of:
            with self.graph.inserting_after(x):
                permuted = self.graph.call_function(torch.permute, (x, (0, 2, 3, 1)))
            with self.graph.inserting_after(permuted):
                self.rows_of[x] = self.graph.call_function(torch.flatten, (permuted, 0, 2))
        return self.rows_of[x]

    def pixel_products(self, terms: _Terms, total: fx.Node | None, bias: torch.Tensor, name: str,
                       out_hw: tuple[int, ...]) -> fx.Node:
        """Channels-last: ``addmm_`` of each product into the (pixels x channels) rows of the sum."""
        products = list(terms.products)
        if total is None and terms.scaled is None:
            first = products.pop(0)
            start = self.call(F.conv2d, first.args[0], first.args[1], self.tensor(name, bias))
        else:
            like = total if total is not None else terms.scaled[0]
            start = self.cast(self.tensor(name, bias[:, None, None]), like)
            if total is not None:
                start = self.call(torch.add, total, start)
            if terms.scaled is not None:
                start = self.call(torch.add, start, terms.scaled[0], alpha=terms.scaled[1])
        acc = self.method("contiguous", start, memory_format=torch.channels_last)
        if products:
            sums = self.rows(acc)
            for p in products:
                matrix = self.tensor(p.args[1].target, get_tensor(self.gm, p.args[1]).flatten(1).t().contiguous())
                sums = self.method("addmm_", sums, self.cast(self.source_rows(p.args[0]), acc), self.cast(matrix, acc))
            grid = self.method("view", sums, self.method("size", acc, 0), *out_hw, bias.numel())  # another size fails
            acc = self.call(torch.permute, grid, (0, 3, 1, 2))
        return acc


def fuse_pointwise_sums(gm: fx.GraphModule, pixels_major: bool = False) -> int:
    """In place: every marked sum (``meta["sum_of"]``) with 1x1 products among its terms, or a
    constant-gated universal term, is rewritten as the module docstring says. ``pixels_major``: the
    network runs channels-last. Returns the count of sums rewritten."""
    rewriter = _Rewriter(gm, pixels_major)
    fused = 0
    for root in [n for n in gm.graph.nodes if "sum_of" in n.meta]:
        with gm.graph.inserting_before(root):
            new = rewriter.rewrite(root)
        if new is None:
            continue
        new.meta["owned"] = True
        swap(gm, root, new)
        fused += 1
    return finish(gm, fused)
