"""A BlockGraph as plain JSON: what reports, pictures and task packs read about an architecture.

``architecture_dict(student, tailored)`` lists every node and every edge of the student, each edge
with its gate value and whether it survived in the tailored graph, so a picture can show removed
blocks faded and a report can count what was kept without torch or the search code.
"""
from __future__ import annotations

from archsearch.graph.blockgraph import INPUT, OUTPUT, BlockGraph
from archsearch.graph.gates import alphas

ARCHITECTURE_ATTR = "archsearch_architecture"  # a JSON string attribute on saved modules


def architecture_dict(student: BlockGraph, tailored: BlockGraph | None = None, name: str = "") -> dict:
    """Nodes and edges of ``student``; ``live``/``alpha`` describe ``tailored`` (default: the student)."""
    final = tailored if tailored is not None else student
    gate = alphas(final)
    nodes = [{"name": n, "index": student.node(n)["index"], "shape": list(student.node(n)["shape"] or [])}
             for n in [INPUT] + student.block_nodes() + [OUTPUT]]
    edges = []
    for e, a in student.iter_attrs():
        live = final.g.has_edge(*e)
        edges.append({"src": e[0], "dst": e[1], "kind": a["kind"], "name": a["name"],
                      "in_shape": list(a["in_shape"] or []), "out_shape": list(a["out_shape"] or []),
                      "macs": a["macs"], "params": a["params"], "live": live,
                      "alpha": gate.get(e) if live and a["kind"] in ("universal", "proxy") else None})
    live_edges = [e for e in edges if e["live"]]
    return {
        "name": name, "input_shape": list(student.g.graph["input_shape"]), "nodes": nodes, "edges": edges,
        "totals": {"original_macs": student.total_macs, "original_params": student.total_params,
                   "macs": sum(e["macs"] for e in live_edges), "params": final.params(),
                   "task_specific_params": final.task_params()},
    }

