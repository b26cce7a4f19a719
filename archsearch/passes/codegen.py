"""Code generation: BlockGraph → one flat ``torch.fx.GraphModule``.

The fx nodes of every live block are copied from the traced model into a new graph (keeping the
original module paths, so universal blocks are the very same module objects); proxies are called as
modules; a node with several live inputs computes ``x = post(sum_e alpha_e * B_e(x_src(e)))``.

Two modes:
- ``student``: gates are trainable logits (``gates.<node>``), ``alpha = softmax`` over live edges.
- ``slim``: gates are constants; each proxy's alpha folds into its last batch-norm and the universal
  block's alpha is a constant multiply; a node with one live input has no gate at all. The result
  holds only torch modules, so ``torch.load`` needs nothing of archsearch.
"""
from __future__ import annotations

import copy
import operator
from typing import Callable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.graph.blockgraph import INPUT, OUTPUT, BlockGraph, Edge
from archsearch.graph.gates import alphas, gated_in_edges


def gate_target(node: str) -> str:
    """Parameter path of the gate logits of ``node`` in a student module."""
    return f"gates.{node}"


def _fold_alpha(module: nn.Module, alpha: float) -> nn.Module:
    """Copy of a proxy whose output is scaled by ``alpha`` through its last batch-norm."""
    folded = copy.deepcopy(module)
    bns = [m for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or bns[-1].weight is None:
        raise ValueError("a proxy must end with an affine batch-norm to fold its gate")
    with torch.no_grad():
        bns[-1].weight.mul_(alpha)
        bns[-1].bias.mul_(alpha)
    return folded


class _Emitter:
    """Copies fx nodes of the traced model into a new graph, collecting the attributes they use."""

    def __init__(self, bg: BlockGraph) -> None:
        self.src = bg.gm
        self.by_name = {n.name: n for n in bg.gm.graph.nodes}
        self.graph = fx.Graph()
        self.root: dict[str, object] = {}
        self.free: dict[str, fx.Node] = {}

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

    def call(self, fn: Callable, *args: object) -> fx.Node:
        return self.graph.call_function(fn, tuple(args))


def build_module(bg: BlockGraph, mode: str = "student", returns: str = "all") -> fx.GraphModule:
    """Generate the network a BlockGraph describes.

    ``returns="all"`` gives ``(logits, {node: tensor})`` with every block output (for the teacher
    loss); ``returns="logits"`` gives the logits alone.
    """
    if mode not in ("student", "slim") or returns not in ("all", "logits"):
        raise ValueError(f"bad mode/returns: {mode!r}/{returns!r}")
    em = _Emitter(bg)
    gate_values = alphas(bg) if mode == "slim" else {}
    values: dict[str, fx.Node] = {INPUT: em.graph.placeholder("x")}
    for node in bg.block_nodes() + [OUTPUT]:
        terms: list[fx.Node] = []
        edges = bg.in_edges(node)
        for e in edges:
            attrs = bg.edge(e)
            if attrs["kind"] == "proxy":
                module = attrs["module"]
                if mode == "slim" and len(edges) > 1:
                    module = _fold_alpha(module, gate_values[e])
                terms.append(em.module(attrs["target"], module, values[e[0]]))
            else:
                env = {attrs["in_node"]: values[e[0]]}
                em.run(attrs["nodes"], env)
                value = env[attrs["out_node"]]
                if mode == "slim" and len(edges) > 1:
                    value = em.call(operator.mul, value, gate_values[e])
                terms.append(value)
        if len(terms) > 1 and mode == "student":
            logits = em.graph.get_attr(gate_target(node))
            em.root[gate_target(node)] = nn.Parameter(torch.tensor([float(bg.edge(e)["logit"]) for e in edges]))
            weights = em.call(torch.softmax, logits, 0)
            terms = [em.call(operator.mul, em.call(operator.getitem, weights, i), t) for i, t in enumerate(terms)]
        total = terms[0]
        for t in terms[1:]:
            total = em.call(operator.add, total, t)
        env = {bg.node(node)["pre"]: total}
        em.run(bg.node(node)["post"], env)
        values[node] = env[bg.node(node)["post"][-1]] if bg.node(node)["post"] else total
    if returns == "all":
        em.graph.output((values[OUTPUT], {n: values[n] for n in bg.block_nodes()}))
    else:
        em.graph.output(values[OUTPUT])
    em.graph.lint()
    return fx.GraphModule(em.root, em.graph, "Student" if mode == "student" else "Tailored")


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
