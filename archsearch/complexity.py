"""Expected complexity E[C] of a student (paper eq. 5-10), differentiable in the gates.

For a gated edge e = (s, d) with r_e = 1 - alpha_e and normalised cost C_e (its MACs over the whole
pre-trained network's, or its measured seconds over the network's with ``--cost latency``):

    E[C_e] = C_e * (1 - r_e - P_in(s) - P_out(d))
    P_in(n)  = prod of r over the gated edges entering n   (0 for x_0: the stem always runs)
    P_out(n) = prod of r over the gated edges leaving n    (0 for x_L: the head always reads it)
"""
from __future__ import annotations

import torch

from archsearch.graph.blockgraph import BlockGraph, Edge


def expected_complexity(bg: BlockGraph, alpha: dict[Edge, torch.Tensor]) -> torch.Tensor:
    """E[C] as one differentiable expression of the gate values ``alpha`` (one per gated edge)."""
    gated = bg.gated_edges()
    r = {e: 1.0 - alpha[e] for e in gated}
    zero = torch.zeros(())
    first, last = bg.block_nodes()[0], bg.last

    def p_in(n: str) -> torch.Tensor:
        edges = [e for e in gated if e[1] == n]
        return zero if n == first or not edges else torch.stack([r[e] for e in edges]).prod()

    def p_out(n: str) -> torch.Tensor:
        edges = [e for e in gated if e[0] == n]
        return zero if n == last or not edges else torch.stack([r[e] for e in edges]).prod()

    p_in_of = {n: p_in(n) for n in bg.block_nodes()}
    p_out_of = {n: p_out(n) for n in bg.block_nodes()}
    total = zero
    for e in gated:
        total = total + bg.cost_share(e) * (1.0 - r[e] - p_in_of[e[0]] - p_out_of[e[1]])
    return total
