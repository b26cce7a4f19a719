"""Graph pass: prune a trained student to the blocks the task needs (paper section 3.5).

1. Drop proxies whose gate alpha is under ``theta``.
2. Drop the ``k`` universal blocks with the lowest alpha.
3. Repeat until nothing changes: a node that is still read (or is x_L) but has lost every input
   keeps its highest-gated proxy, even one under ``theta``, so x_0 stays connected to x_L (this
   stands in for input exclusion, which would otherwise cut the network in two); then a node other
   than x_L with no live outgoing edge kills its incoming edges (output exclusion). Restoring
   inputs first keeps one removed block from emptying every node before it.
Nodes left with no edge are removed. Gate logits of the survivors are kept; alphas are then the
softmax over the live edges only.
"""
from __future__ import annotations

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph, Edge
from archsearch.graph.gates import alphas


def prune(bg: BlockGraph, k: int, theta: float = 0.05) -> BlockGraph:
    """Pruned copy of a student BlockGraph (edge ``logit`` attributes hold the trained gates)."""
    universal = bg.universal()
    if not 0 <= k <= len(universal):
        raise UserError(f"cannot remove {k} blocks: the network has {len(universal)} universal blocks")
    alpha = alphas(bg)
    dead: set[Edge] = {e for e in bg.proxies() if alpha[e] < theta}
    dead |= set(sorted(universal, key=lambda e: (alpha[e], bg.node(e[1])["index"]))[:k])
    live = lambda e: e not in dead  # noqa: E731
    order = bg.block_nodes()
    changed = True
    while changed:
        changed = False
        for n in reversed(order[1:]):
            read = n == bg.last or any(live(e) for e in bg.out_edges(n))
            if read and not any(live(e) for e in bg.in_edges(n)):
                candidates = [e for e in bg.in_edges(n) if bg.edge(e)["kind"] == "proxy"]
                if not candidates:
                    raise UserError(f"node {n} lost every input and has no proxy to keep it connected; "
                                    "use --skips 1 or more")
                dead.discard(max(candidates, key=lambda e: alpha[e]))
                changed = True
        for n in reversed(order[1:-1]):
            ins = [e for e in bg.in_edges(n) if live(e)]
            if ins and not any(live(e) for e in bg.out_edges(n)):
                dead |= set(ins)
                changed = True
    out = bg.copy()
    out.g.remove_edges_from(dead)
    out.g.remove_nodes_from([n for n in order if out.g.degree(n) == 0])
    return out


def removed_blocks(student: BlockGraph, pruned: BlockGraph) -> list[str]:
    """Names of the universal blocks the pruning removed."""
    return [student.edge(e)["name"] for e in student.universal() if not pruned.g.has_edge(*e)]
