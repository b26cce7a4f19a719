"""Expected complexity E[C] of a student (paper eq. 5-10), differentiable in the gates.

For a gated edge e = (s, d) with r_e = 1 - alpha_e and normalised cost C_e (its MACs over the whole
pre-trained network's, or its measured seconds over the network's with ``--cost latency``):

    E[C_e] = C_e * (1 - r_e - P_in(s) - P_out(d))
    P_in(n)  = prod of r over the gated edges entering n   (0 for x_0: the stem always runs)
    P_out(n) = prod of r over the gated edges leaving n    (0 for x_L: the head always reads it)

:class:`Complexity` compiles the formula once from a BlockGraph into index tensors, so a training
step evaluates it with a handful of tensor operations instead of a Python loop over edges and nodes.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from archsearch.graph.blockgraph import BlockGraph, Edge
from archsearch.graph.gates import gated_in_edges
from archsearch.passes.codegen import gate_target


def _padded(groups: list[list[int]], pad: int) -> torch.Tensor:
    """Rows of edge indices, padded with ``pad`` (the index of a constant 1) to one width."""
    width = max([len(g) for g in groups] + [1])
    return torch.tensor([g + [pad] * (width - len(g)) for g in groups], dtype=torch.int64)


class Complexity:
    """E[C] of one BlockGraph as a function of its gate vector (alphas in :attr:`edges` order).

    ``edges`` lists the gated edges node by node in gate-slot order, as :func:`gate_vector` lays out a
    student's alphas. Building it walks the graph once; calling it costs a gather and two products.
    """

    def __init__(self, bg: BlockGraph) -> None:
        groups = gated_in_edges(bg)
        shared = [g for g in groups if len(g) > 1]  # nodes whose gate weighs several edges
        self.edges: list[Edge] = [e for g in shared for e in g] + [g[0] for g in groups if len(g) == 1]
        self.gate_nodes = [g[0][1] for g in shared]
        self.rows = torch.tensor([i for i, g in enumerate(shared) for _ in g], dtype=torch.int64)
        self.cols = torch.tensor([j for g in shared for j in range(len(g))], dtype=torch.int64)
        self.width = max([len(g) for g in shared] + [1])
        self.alone = len(groups) - len(shared)
        self._params: tuple[int, list[torch.Tensor]] | None = None
        if set(self.edges) != set(bg.gated_edges()):
            raise ValueError("every gated edge must enter a block node")
        nodes = bg.block_nodes()
        index = {e: i for i, e in enumerate(self.edges)}
        pad = len(self.edges)  # r is extended by one constant 1: the neutral element of the products
        into = [[index[e] for e in self.edges if e[1] == n] for n in nodes]
        out_of = [[index[e] for e in self.edges if e[0] == n] for n in nodes]
        self.into, self.out_of = _padded(into, pad), _padded(out_of, pad)
        # P_in is 0 at x_0 and P_out at x_L (always computed), and both are 0 where no gated edge is
        keep_in = [bool(g) and n != nodes[0] for g, n in zip(into, nodes)]
        keep_out = [bool(g) and n != bg.last for g, n in zip(out_of, nodes)]
        self.keep_in = torch.tensor(keep_in, dtype=torch.float32)
        self.keep_out = torch.tensor(keep_out, dtype=torch.float32)
        node_index = {n: i for i, n in enumerate(nodes)}
        self.src = torch.tensor([node_index[e[0]] for e in self.edges], dtype=torch.int64)
        self.dst = torch.tensor([node_index[e[1]] for e in self.edges], dtype=torch.int64)
        self.cost = torch.tensor([bg.cost_share(e) for e in self.edges], dtype=torch.float32)

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """E[C] for the gate values ``alpha`` (one per edge of :attr:`edges`), differentiable."""
        if self.cost.device != alpha.device:
            for name in ("into", "out_of", "keep_in", "keep_out", "src", "dst", "cost", "rows", "cols"):
                setattr(self, name, getattr(self, name).to(alpha.device))
        r = 1.0 - alpha.float()
        extended = torch.cat([r, r.new_ones(1)])
        p_in = extended[self.into].prod(dim=1) * self.keep_in
        p_out = extended[self.out_of].prod(dim=1) * self.keep_out
        return (self.cost * (1.0 - r - p_in[self.src] - p_out[self.dst])).sum()


    def alphas(self, student: fx.GraphModule) -> torch.Tensor:
        """A student's alphas in :attr:`edges` order: every node's softmax over its gate logits in one
        padded softmax (an edge alone into its node has alpha 1)."""
        if self._params is None or self._params[0] != id(student):
            self._params = (id(student), [student.get_parameter(gate_target(n)) for n in self.gate_nodes])
        params = self._params[1]
        if not params:
            return torch.ones(self.alone)
        logits = torch.cat(params)
        padded = logits.new_full((len(params), self.width), float("-inf")).index_put((self.rows, self.cols), logits)
        gated = torch.softmax(padded, dim=1)[self.rows, self.cols]
        return torch.cat([gated, gated.new_ones(self.alone)])


def gate_vector(bg: BlockGraph, student: fx.GraphModule) -> torch.Tensor:
    """A student's alphas in :class:`Complexity` order (see :meth:`Complexity.alphas`)."""
    return Complexity(bg).alphas(student)


def expected_complexity(bg: BlockGraph, alpha: dict[Edge, torch.Tensor]) -> torch.Tensor:
    """E[C] as one differentiable expression of the gate values ``alpha`` (one per gated edge)."""
    compiled = Complexity(bg)
    return compiled(torch.stack([torch.as_tensor(alpha[e], dtype=torch.float32) for e in compiled.edges]))
