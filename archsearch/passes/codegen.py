"""Code generation: BlockGraph → one flat ``torch.fx.GraphModule``.

The fx nodes of every live block are copied from the traced model into a new graph (keeping the
original module paths, so universal blocks are the very same module objects); a node with several
live inputs computes ``x = post(sum_e alpha_e * B_e(x_src(e)))``. Proxies are called layer by layer
as the plain ``torch.nn`` modules they are. Two builders:

- :func:`build_student`: gates are trainable logits (``gates.<node>``), ``alpha = softmax`` over
  live edges; returns the logits and every block output (for Omega), or the logits alone. The
  teacher is the student of a graph without proxies: the original network.
- :func:`build_slim`: gates are constants; a node with one live input has no gate. The plain graph
  is then lowered (:mod:`archsearch.passes.lower`) to the form it runs fastest in, which holds only
  torch modules, tensors and calls of torch operations (``torch.*``, ``torch.nn.functional.*``,
  ``operator.*``, Tensor methods), never an archsearch function: ``torch.load`` of it needs nothing
  but torch, and a task pack can store it as tensors plus its graph as data
  (:mod:`archsearch.io.pack`).

Every block-boundary value carries its shape (C, H, W) in ``node.meta["shape"]``, and each slim
node's sum is marked ``node.meta["sum_of"]``: what the lowering passes read.
"""
from __future__ import annotations

import operator
from typing import Callable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.graph.blockgraph import INPUT, OUTPUT, BlockGraph, Edge
from archsearch.graph.gates import alphas, gated_in_edges
from archsearch.nn.proxy import Proxy, pool_key
from archsearch.passes.lower import lower_slim, pointwise_as_matmul
from archsearch.passes.lower.graph_edit import add_chain

GATES = "gates."  # path prefix of every gate's logits in a student module
PROXIES = "proxies."  # path prefix of every proxy


def gate_target(node: str) -> str:
    """Parameter path of the gate logits of ``node`` in a student module."""
    return GATES + node


class _Emitter:
    """Copies fx nodes of the traced model into a new graph, collecting the modules and tensors they use."""

    def __init__(self, bg: BlockGraph) -> None:
        self.bg = bg
        self.src = bg.gm
        self.by_name = {n.name: n for n in bg.gm.graph.nodes}
        self.graph = fx.Graph()
        self.root: dict[str, object] = {}
        self.free: dict[str, fx.Node] = {}
        self.pools: dict[tuple, fx.Node] = {}  # (source value, pooling) -> its pooled value, computed once

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
        self._register(node)
        return self.graph.node_copy(node, lambda a: self._lookup(a, env))

    def run(self, names: list[str], env: dict[str, fx.Node]) -> None:
        for name in names:
            env[name] = self.copy(self.by_name[name], env)

    def module(self, target: str, module: nn.Module, arg: fx.Node) -> fx.Node:
        self.root[target] = module
        return self.graph.call_module(target, (arg,))

    def call(self, fn: Callable, *args: object, **kwargs: object) -> fx.Node:
        return self.graph.call_function(fn, tuple(args), kwargs)

    def block(self, attrs: dict, source: fx.Node) -> fx.Node:
        """A universal block (or the stem, or the head): its traced nodes, copied."""
        env = {attrs["in_node"]: source}
        self.run(attrs["nodes"], env)
        return env[attrs["out_node"]]

    def proxy(self, attrs: dict, source: fx.Node, share_pool: bool) -> fx.Node:
        """A proxy's layers called one by one. ``share_pool``: its pooling is called once for every
        proxy that pools ``source`` alike (the student; the slim graph leaves that to a pass)."""
        target, module = attrs["target"], attrs["module"]
        if not isinstance(module, Proxy):  # a proxy of another kind: one module call
            return self.module(target, module, source)
        x = source
        for i, layer in enumerate(module):
            if isinstance(layer, nn.Identity):
                continue
            if i == 0 and share_pool:
                key = (source.name, pool_key(layer))
                if key not in self.pools:
                    self.pools[key] = self.module(f"{target}.0", layer, source)
                x = self.pools[key]
            else:
                x = self.module(f"{target}.{i}", layer, x)
        return x

    def node_value(self, node: str, total: fx.Node, values: dict[str, fx.Node]) -> None:
        """Apply ``node``'s post operations to its sum; the result is the node's value."""
        attrs = self.bg.node(node)
        env = {attrs["pre"]: total}
        self.run(list(attrs["post"]), env)
        value = env[attrs["post"][-1]] if attrs["post"] else total
        if attrs.get("shape") is not None:
            value.meta["shape"] = tuple(attrs["shape"])
        values[node] = value

    def start(self) -> dict[str, fx.Node]:
        x = self.graph.placeholder("x")
        shape = self.bg.g.graph.get("input_shape")
        if shape is not None:
            x.meta["shape"] = tuple(shape)
        return {INPUT: x}

    def finish(self, values: dict[str, fx.Node], block_outputs: bool, name: str) -> fx.GraphModule:
        if block_outputs:
            self.graph.output((values[OUTPUT], {n: values[n] for n in self.bg.block_nodes()}))
        else:
            self.graph.output(values[OUTPUT])
        self.graph.lint()
        return fx.GraphModule(self.root, self.graph, name)


def task_prefixes(bg: BlockGraph) -> tuple[str, ...]:
    """Path prefixes of the task-specific parts of a generated network: proxies, gates, classifier."""
    classifier = bg.g.graph.get("classifier")
    return (PROXIES, GATES) + ((classifier + ".",) if classifier else ())


def is_task_specific(name: str, prefixes: tuple[str, ...]) -> bool:
    """True for a parameter or module path that belongs to the task, not to the shared blocks."""
    return (name + ".").startswith(prefixes)


def is_task_target(bg: BlockGraph) -> Callable[[str], bool]:
    """Whether a module path of a generated network belongs to the task (what the lowering passes may rewrite)."""
    prefixes = task_prefixes(bg)
    return lambda target: is_task_specific(target, prefixes)


def build_student(bg: BlockGraph, block_outputs: bool = True, matmul_pointwise: bool = False) -> fx.GraphModule:
    """The student of ``bg``: softmax-gated sums with trainable gate logits, proxies as their layers.

    ``block_outputs``: return ``(logits, {node: tensor})`` (every block output, for the teacher
    term), else the logits. ``matmul_pointwise``: task 1x1 convolutions as matrix products, the
    faster form for training on CPU (:func:`~archsearch.passes.lower.pointwise_as_matmul`)."""
    em = _Emitter(bg)
    values = em.start()
    for node in bg.block_nodes() + [OUTPUT]:
        edges = bg.in_edges(node)
        weights = None
        if len(edges) > 1:
            em.root[gate_target(node)] = nn.Parameter(torch.tensor([float(bg.edge(e)["logit"]) for e in edges]))
            weights = em.call(torch.softmax, em.graph.get_attr(gate_target(node)), 0)
        terms = []
        for i, e in enumerate(edges):
            attrs = bg.edge(e)
            if attrs["kind"] == "proxy":
                term = em.proxy(attrs, values[e[0]], share_pool=True)
            else:
                term = em.block(attrs, values[e[0]])
            if weights is not None:
                term = em.call(operator.mul, em.call(operator.getitem, weights, i), term)
            terms.append(term)
        em.node_value(node, add_chain(em.graph, terms), values)
    gm = em.finish(values, block_outputs, "Student")
    if matmul_pointwise:
        pointwise_as_matmul(gm, is_task_target(bg))
    return gm


def build_slim(bg: BlockGraph, memory_format: torch.memory_format = torch.contiguous_format) -> fx.GraphModule:
    """The network ``bg`` describes in inference form, returning logits: constant gates, proxies and
    classifier lowered (:func:`~archsearch.passes.lower.lower_slim`) for maps in ``memory_format``."""
    em = _Emitter(bg)
    gate_values = alphas(bg)
    values = em.start()
    for node in bg.block_nodes() + [OUTPUT]:
        edges = bg.in_edges(node)
        terms = []
        for e in edges:
            attrs = bg.edge(e)
            gate = gate_values[e] if len(edges) > 1 else 1.0
            if attrs["kind"] == "proxy":
                term = em.proxy(attrs, values[e[0]], share_pool=False)
            else:
                term = em.block(attrs, values[e[0]])
            terms.append(term if gate == 1.0 else em.call(operator.mul, term, gate))
        total = add_chain(em.graph, terms)
        if node != OUTPUT:
            total.meta["sum_of"] = node
            total.meta["shape"] = tuple(bg.edge(edges[0])["out_shape"])
        em.node_value(node, total, values)
    gm = em.finish(values, False, "Tailored")
    return lower_slim(gm, is_task_target(bg), pixels_major=memory_format == torch.channels_last)


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
