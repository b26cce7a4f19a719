"""Code generation: BlockGraph → one flat ``torch.fx.GraphModule``.

The fx nodes of every live block are copied from the traced model into a new graph (keeping the
original module paths, so universal blocks are the very same module objects); a node with several
live inputs computes ``x = post(sum_e alpha_e * B_e(x_src(e)))``.

Two modes:
- ``student``: proxies are called as modules; gates are trainable logits (``gates.<node>``),
  ``alpha = softmax`` over live edges.
- ``slim``: gates are constants; a node with one live input has no gate at all. Task-specific layers
  run in inference form: each proxy is pooling plus 1x1 convolutions with its batch-norms and its
  alpha folded in, the last one a matrix product accumulated straight into the node's sum, over
  NCHW maps or, with ``memory_format=torch.channels_last`` (what a run emits), over the maps'
  (pixels x channels) rows; the classifier is a functional call on its tensors. Universal blocks
  stay the very same modules.
  The result holds only torch modules, tensors and calls of torch operations (``torch.*``,
  ``torch.nn.functional.*``, ``operator.*``, Tensor methods), never an archsearch function, so
  ``torch.load`` of it needs nothing but torch, and a task pack can store it as tensors plus its
  graph as data (:mod:`archsearch.io.pack`).
"""
from __future__ import annotations

import operator
from typing import Callable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from archsearch.graph.blockgraph import INPUT, OUTPUT, BlockGraph, Edge
from archsearch.graph.gates import alphas, gated_in_edges
from archsearch.nn.fold import Step, fold_proxy
from archsearch.nn.proxy import HalvingMaxPool, Proxy, pool_key
from archsearch.passes.drop_identities import drop_identities

_ALL = slice(None)
# Results of a slim node's sum that nothing else reads, so the ReLU after it may work in place.
_OWN_TEMPORARIES = (operator.add, operator.mul, torch.add, torch.unflatten)


GATES = "gates."  # path prefix of every gate's logits in a student module


def gate_target(node: str) -> str:
    """Parameter path of the gate logits of ``node`` in a student module."""
    return GATES + node


def _pointwise(conv: nn.Module | None) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1)


class _Emitter:
    """Copies fx nodes of the traced model into a new graph, collecting the attributes they use."""

    def __init__(self, bg: BlockGraph, lowered: tuple[str, ...] = (), pixels_major: bool = False) -> None:
        self.src = bg.gm
        self.pixels_major = pixels_major  # proxy products over (pixels x channels) rows: channels-last maps
        self.owned: set[fx.Node] = set()  # sums this module made itself, which a ReLU may overwrite
        self.by_name = {n.name: n for n in bg.gm.graph.nodes}
        self.graph = fx.Graph()
        self.root: dict[str, object] = {}
        self.free: dict[str, fx.Node] = {}
        self.lowered = lowered  # call_module targets emitted as functional calls on their tensors
        self.pools: dict[tuple, fx.Node] = {}  # (source value, pooling) -> its pooled value, computed once
        self.pixel_rows: dict[str, fx.Node] = {}  # source value -> its (pixels x channels) rows, viewed once

    def _register(self, node: fx.Node) -> None:
        if node.op == "call_module":
            self.root[node.target] = self.src.get_submodule(node.target)
        elif node.op == "get_attr":
            obj = self.src
            for part in node.target.split("."):
                obj = getattr(obj, part)
            self.root[node.target] = obj

    def _lookup(self, a: fx.Node, env: dict[str, fx.Node]) -> fx.Node:
        if a.name in env:
            return env[a.name]
        if a.name not in self.free:
            self.free[a.name] = self.copy(a, {})
        return self.free[a.name]

    def copy(self, node: fx.Node, env: dict[str, fx.Node]) -> fx.Node:
        if node.op == "call_module" and node.target in self.lowered and len(node.args) == 1 and not node.kwargs:
            return self.layer(node.target, self.src.get_submodule(node.target), self._lookup(node.args[0], env))
        self._register(node)
        return self.graph.node_copy(node, lambda a: self._lookup(a, env))

    def is_relu(self, name: str, pre: str) -> bool:
        """Whether traced node ``name`` is a ReLU of the node ``pre``."""
        node = self.by_name[name]
        if not node.args or getattr(node.args[0], "name", None) != pre:
            return False
        if node.op == "call_function":
            return node.target in (F.relu, torch.relu) and len(node.args) == 1
        if node.op == "call_method":
            return node.target == "relu"
        return node.op == "call_module" and type(self.src.get_submodule(node.target)) is nn.ReLU

    def run(self, names: list[str], env: dict[str, fx.Node]) -> None:
        for name in names:
            env[name] = self.copy(self.by_name[name], env)

    def module(self, target: str, module: nn.Module, arg: fx.Node) -> fx.Node:
        self.root[target] = module
        return self.graph.call_module(target, (arg,))

    def call(self, fn: Callable, *args: object, **kwargs: object) -> fx.Node:
        return self.graph.call_function(fn, tuple(args), kwargs)

    def tensor(self, target: str, value: torch.Tensor) -> fx.Node:
        self.root[target] = value if isinstance(value, nn.Parameter) else nn.Parameter(value)
        return self.graph.get_attr(target)

    def layer(self, target: str, module: nn.Module, arg: fx.Node) -> fx.Node:
        """A Linear or Conv2d as a functional call on its own parameters (no module object)."""
        weight = self.tensor(f"{target}.weight", module.weight)
        bias = self.tensor(f"{target}.bias", module.bias) if module.bias is not None else None
        if isinstance(module, nn.Linear):
            return self.call(F.linear, arg, weight, bias)
        if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
            return self.call(F.conv2d, arg, weight, bias, module.stride, module.padding, module.dilation, module.groups)
        raise ValueError(f"cannot lower {type(module).__name__} '{target}'")

    def shared_pool(self, target: str, module: nn.Module, arg: fx.Node) -> fx.Node:
        """``module(arg)`` as a module call, computed once for every proxy pooling ``arg`` alike."""
        key = pool_key(module)
        if key is None:
            return arg
        if (arg.name, key) not in self.pools:
            self.pools[(arg.name, key)] = self.module(target, module, arg)
        return self.pools[(arg.name, key)]

    def pool(self, module: nn.Module, arg: fx.Node) -> fx.Node:
        """Pooling in inference form (functional), computed once per source and pooling."""
        key = pool_key(module)
        if (arg.name, key) not in self.pools:
            self.pools[(arg.name, key)] = self._pool(module, arg)
        return self.pools[(arg.name, key)]

    def _pool(self, module: nn.Module, arg: fx.Node) -> fx.Node:
        if isinstance(module, HalvingMaxPool):  # as HalvingMaxPool.forward: rows, then columns
            for _ in range(module.times):
                rows = self.call(torch.unflatten, arg, 2, (-1, 2))
                arg = self.call(torch.maximum, self.call(operator.getitem, rows, (_ALL, _ALL, _ALL, 0)),
                                self.call(operator.getitem, rows, (_ALL, _ALL, _ALL, 1)))
                cols = self.call(torch.unflatten, arg, 3, (-1, 2))
                arg = self.call(torch.maximum, self.call(operator.getitem, cols, (Ellipsis, 0)),
                                self.call(operator.getitem, cols, (Ellipsis, 1)))
            return arg
        if isinstance(module, nn.MaxPool2d):
            return self.call(F.max_pool2d, arg, module.kernel_size, module.stride, module.padding, module.dilation,
                             module.ceil_mode)
        return self.call(F.adaptive_max_pool2d, arg, module.output_size)

    def steps(self, target: str, steps: list[Step], arg: fx.Node) -> fx.Node:
        """Folded proxy steps (pooling, ReLU, convolution with bias) as functional calls."""
        for step in steps:
            if step.kind == "pool":
                arg = self.pool(step.module, arg)
            elif step.kind == "relu":
                arg = self.call(F.relu, arg)
            else:
                conv = step.module
                weight = self.tensor(f"{target}.{step.index}.weight", step.weight)
                bias = self.tensor(f"{target}.{step.index}.bias", step.bias)
                arg = self.call(F.conv2d, arg, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return arg

    def gated_sum(self, bg: BlockGraph, node: str, values: dict[str, fx.Node],
                  gate_values: dict[Edge, float]) -> fx.Node:
        """A slim node's input: sum of its live edges, each times its constant gate, in few memory passes.

        Proxies whose last layer is a 1x1 convolution become matrix products accumulated straight
        into the sum (``baddbmm_`` over NCHW maps, or ``pixel_products`` for channels-last ones);
        their biases are added once, together with the universal block's gated output. On CPU every
        pass over a feature map costs about as much as a small convolution, so this is what lets
        latency fall with MACs.
        """
        edges = bg.in_edges(node)
        terms: list[fx.Node] = []
        scaled: tuple[fx.Node, float] | None = None
        products: list[tuple[fx.Node, fx.Node]] = []
        pixel_products: list[tuple[str, torch.Tensor, fx.Node]] = []
        bias: torch.Tensor | None = None
        out_hw: tuple[int, ...] = ()
        for e in edges:
            attrs = bg.edge(e)
            gate = gate_values[e] if len(edges) > 1 else 1.0
            if attrs["kind"] != "proxy":
                env = {attrs["in_node"]: values[e[0]]}
                self.run(attrs["nodes"], env)
                if gate != 1.0:
                    scaled = (env[attrs["out_node"]], gate)
                else:
                    terms.append(env[attrs["out_node"]])
                continue
            steps = fold_proxy(attrs["module"], gate)
            last = steps[-1]
            if last.kind != "conv" or not _pointwise(last.module) or len(attrs["out_shape"]) != 3:
                terms.append(self.steps(attrs["target"], steps, values[e[0]]))
                continue
            out_hw = tuple(attrs["out_shape"][1:])
            source = self.steps(attrs["target"], steps[:-1], values[e[0]])
            name = f"{attrs['target']}.{last.index}.weight"
            if self.pixels_major:
                pixel_products.append((name, last.weight, source))
            else:
                weight = self.tensor(name, last.weight.flatten(1))
                products.append((weight, self.call(torch.flatten, source, 2)))
            bias = last.bias if bias is None else bias + last.bias
        total = terms[0] if terms else None
        for t in terms[1:]:
            total = self.call(operator.add, total, t)
        if pixel_products:
            return self.pixel_products(node, bias, pixel_products, total, scaled, out_hw)
        if not products:
            if scaled is None:
                return total
            if total is None:
                return self.call(operator.mul, scaled[0], scaled[1])
            return self.call(torch.add, total, scaled[0], alpha=scaled[1])

        acc = self.tensor(f"proxies.bias_{node}", bias[:, None])
        own = None  # the sum's own temporary, which baddbmm_ may overwrite and whose dtype its products take
        if scaled is not None:
            acc = own = self.call(torch.add, self.cast(acc, scaled[0]), self.call(torch.flatten, scaled[0], 2),
                                  alpha=scaled[1])
        if total is not None:
            acc = own = self.call(torch.add, self.cast(acc, total), self.call(torch.flatten, total, 2))
        batch = self.graph.call_method("size", (products[0][1], 0))
        for weight, flat in products:
            weights = self.graph.call_method("expand", (weight, batch, -1, -1))
            if own is not None:  # in place: an out-of-place baddbmm first copies acc, one more pass over the map
                acc = self.graph.call_method("baddbmm_", (acc, self.cast(weights, own), self.cast(flat, own)))
            else:
                acc = own = self.call(torch.baddbmm, acc, weights, flat)
        return self.call(torch.unflatten, acc, 2, out_hw)

    def cast(self, x: fx.Node, like: fx.Node) -> fx.Node:
        """``x`` in ``like``'s dtype (itself when they match). Under autocast a sum is in the lower
        precision while the proxies' tensors stay float32, and so may a source (the network's input,
        where no stem comes first): an in-place product with mixed dtypes fails, a float32 bias
        promotes the whole sum. ``type_as`` rather than ``.to(like.dtype)``: no ``getattr`` in the
        code, whose names a task pack must resolve, and a fifth of the cost at batch 1."""
        return self.graph.call_method("type_as", (x, like))

    def pixel_products(self, node: str, bias: torch.Tensor, products: list[tuple[str, torch.Tensor, fx.Node]],
                       total: fx.Node | None, scaled: tuple[fx.Node, float] | None,
                       out_hw: tuple[int, ...]) -> fx.Node:
        """The products of a slim node's sum for channels-last maps: each proxy's 1x1 convolution as one
        matrix product over the map's (pixels x channels) rows, accumulated in place into a sum this
        node owns. A sum that starts with a product starts as oneDNN's 1x1 convolution with the bias
        (a fifth faster than a matrix product from the bias, which copies it out first).

        The sum is made contiguous channels-last before it is viewed as rows, so an in-place product
        always lands in it, whatever layout the maps arrive in; a source in another layout is copied,
        never written. The result is the sum, channels-last.
        """
        def rows(x: fx.Node) -> fx.Node:
            return self.call(torch.flatten, self.call(torch.permute, x, (0, 2, 3, 1)), 0, 2)

        def source_rows(x: fx.Node) -> fx.Node:  # a source feeds up to one product per later node
            if x.name not in self.pixel_rows:
                self.pixel_rows[x.name] = rows(x)
            return self.pixel_rows[x.name]

        if total is None and scaled is None:
            name, weight, source = products[0]
            products = products[1:]
            start = self.call(F.conv2d, source, self.tensor(name, weight), self.tensor(f"proxies.bias_{node}", bias))
        else:
            start = self.tensor(f"proxies.bias_{node}", bias[:, None, None])
            start = self.cast(start, total if total is not None else scaled[0])
            if total is not None:
                start = self.call(torch.add, total, start)
            if scaled is not None:
                start = self.call(torch.add, start, scaled[0], alpha=scaled[1])
        acc = self.graph.call_method("contiguous", (start,), {"memory_format": torch.channels_last})
        if products:
            sums = rows(acc)
            for name, weight, source in products:
                matrix = self.tensor(name, weight.flatten(1).t().contiguous())
                sums = self.graph.call_method("addmm_", (sums, self.cast(source_rows(source), acc), self.cast(matrix, acc)))
            grid = self.graph.call_method("view", (sums, -1, *out_hw, bias.numel()))
            acc = self.call(torch.permute, grid, (0, 3, 1, 2))
        self.owned.add(acc)
        return acc

    def student_sum(self, bg: BlockGraph, node: str, values: dict[str, fx.Node]) -> fx.Node:
        """A student node's input: softmax-gated sum of its live edges (proxies called as modules,
        their gate applied through their last batch-norm)."""
        terms: list[fx.Node] = []
        edges = bg.in_edges(node)
        weights = None
        if len(edges) > 1:
            logits = self.graph.get_attr(gate_target(node))
            self.root[gate_target(node)] = nn.Parameter(torch.tensor([float(bg.edge(e)["logit"]) for e in edges]))
            weights = self.call(torch.softmax, logits, 0)
        for i, e in enumerate(edges):
            attrs = bg.edge(e)
            alpha = self.call(operator.getitem, weights, i) if weights is not None else None
            if attrs["kind"] == "proxy":
                module = attrs["module"]
                self.root[attrs["target"]] = module
                if isinstance(module, Proxy):
                    pooled = self.shared_pool(f"{attrs['target']}.0", module.pool, values[e[0]])
                    kwargs = {"pooled": True} if pool_key(module.pool) is not None else {}
                    term = self.graph.call_module(attrs["target"], (pooled, alpha), kwargs)
                else:
                    term = self.graph.call_module(attrs["target"], (values[e[0]],))
                    if alpha is not None:
                        term = self.call(operator.mul, alpha, term)
            else:
                env = {attrs["in_node"]: values[e[0]]}
                self.run(attrs["nodes"], env)
                term = env[attrs["out_node"]]
                if alpha is not None:
                    term = self.call(operator.mul, alpha, term)
            terms.append(term)
        total = terms[0]
        for t in terms[1:]:
            total = self.call(operator.add, total, t)
        return total


def build_module(bg: BlockGraph, mode: str = "student", returns: str = "all",
                 memory_format: torch.memory_format = torch.contiguous_format) -> fx.GraphModule:
    """Generate the network a BlockGraph describes.

    ``returns="all"`` gives ``(logits, {node: tensor})`` with every block output (for the teacher
    loss); ``returns="logits"`` gives the logits alone.
    """
    if mode not in ("student", "slim") or returns not in ("all", "logits"):
        raise ValueError(f"bad mode/returns: {mode!r}/{returns!r}")
    slim = mode == "slim"
    classifier = bg.g.graph.get("classifier")
    em = _Emitter(bg, lowered=(classifier,) if slim and classifier else (),
                  pixels_major=slim and memory_format == torch.channels_last)
    gate_values = alphas(bg) if slim else {}
    values: dict[str, fx.Node] = {INPUT: em.graph.placeholder("x")}
    for node in bg.block_nodes() + [OUTPUT]:
        total = em.gated_sum(bg, node, values, gate_values) if slim else em.student_sum(bg, node, values)
        env = {bg.node(node)["pre"]: total}
        post = list(bg.node(node)["post"])
        owned = total in em.owned or (total.op == "call_function" and total.target in _OWN_TEMPORARIES)
        if slim and post and owned and em.is_relu(post[0], bg.node(node)["pre"]):
            env[post.pop(0)] = em.call(torch.relu_, total)  # the sum is this node's own temporary
        em.run(post, env)
        values[node] = env[bg.node(node)["post"][-1]] if bg.node(node)["post"] else total
    if returns == "all":
        em.graph.output((values[OUTPUT], {n: values[n] for n in bg.block_nodes()}))
    else:
        em.graph.output(values[OUTPUT])
    em.graph.lint()
    gm = fx.GraphModule(em.root, em.graph, "Student" if mode == "student" else "Tailored")
    if slim:
        drop_identities(gm)  # drop-path and the like: identities in evaluation, foreign classes in a file
    return gm


def read_gates(bg: BlockGraph, state: Mapping[str, torch.Tensor]) -> BlockGraph:
    """Copy of ``bg`` whose edge logits are the trained gate logits in a student's ``state_dict``."""
    out = bg.copy()
    for node in bg.block_nodes():
        edges = bg.in_edges(node)
        if len(edges) < 2:
            continue
        values = state[gate_target(node)].detach().tolist()
        for e, v in zip(edges, values):
            out.g.edges[e]["logit"] = float(v)
    return out


def gate_tensors(bg: BlockGraph, student: fx.GraphModule) -> dict[Edge, torch.Tensor]:
    """Differentiable alphas of a student, one scalar tensor per gated edge (1 where alone)."""
    out: dict[Edge, torch.Tensor] = {}
    for edges in gated_in_edges(bg):
        if len(edges) == 1:
            out[edges[0]] = torch.ones(())
        else:
            weights = torch.softmax(student.get_parameter(gate_target(edges[0][1])), 0)
            out.update({e: weights[i] for i, e in enumerate(edges)})
    return out
