"""Gate values of a BlockGraph: softmax of the edge logits over the live edges into each node."""
from __future__ import annotations

import torch

from archsearch.graph.blockgraph import BlockGraph, Edge


def gated_in_edges(bg: BlockGraph) -> list[list[Edge]]:
    """For each block node, the edges its gate weighs (in gate-slot order)."""
    groups = [[e for e in bg.in_edges(node) if bg.edge(e)["kind"] != "stem"] for node in bg.block_nodes()]
    return [g for g in groups if g]


def alphas(bg: BlockGraph) -> dict[Edge, float]:
    """Gate values: softmax of the edge logits over the live edges into each node (1 when alone)."""
    out: dict[Edge, float] = {}
    for edges in gated_in_edges(bg):
        values = torch.softmax(torch.tensor([float(bg.edge(e)["logit"]) for e in edges]), 0)
        out.update({e: float(v) for e, v in zip(edges, values)})
    return out
