"""What ``archsearch inspect`` shows: the BlockGraph's blocks, shapes, MACs and parameters."""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph
from archsearch.graph.trace import feature_map_problem, trace
from archsearch.passes.insert_proxies import insert_proxies


def inspect_model(model: nn.Module, input_shape: Sequence[int], leaf_modules: Sequence[str | type] = (),
                  skips: int | str | None = None) -> dict:
    """What ``archsearch inspect`` prints: the model's BlockGraph (with candidate proxies when asked)."""
    bg = trace(model, input_shape, leaf_modules)
    problem = feature_map_problem(bg)
    if problem:
        raise UserError(problem)
    return describe(insert_proxies(bg, skips) if skips else bg)


def describe(bg: BlockGraph) -> dict:
    """JSON-ready description: blocks in order, totals, and proxies when the graph has them."""
    blocks = [{"name": a["name"], "kind": a["kind"], "src": u, "dst": v, "in_shape": list(a["in_shape"]),
               "out_shape": list(a["out_shape"]), "macs": a["macs"], "params": a["params"]}
              for (u, v, _), a in bg.iter_attrs(("stem", "universal", "head"))]
    out = {"blocks": blocks, "universal_blocks": len(bg.universal()), "total_macs": bg.total_macs,
           "total_params": bg.total_params, "input_shape": list(bg.g.graph["input_shape"]),
           "classifier": bg.g.graph["classifier"]}
    if bg.proxies():
        out["proxies"] = [{"src": u, "dst": v, "macs": a["macs"], "params": a["params"],
                           "layers": [type(m).__name__ for m in a["module"]]}
                          for (u, v, _), a in bg.iter_attrs("proxy")]
    return out


def _fmt(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def table(desc: dict) -> str:
    """An aligned text table of :func:`describe`'s output."""
    rows = [("#", "block", "kind", "edge", "in", "out", "MACs", "params")]
    for i, b in enumerate(desc["blocks"]):
        rows.append((str(i), b["name"], b["kind"], f"{b['src']}→{b['dst']}", "x".join(map(str, b["in_shape"])),
                     "x".join(map(str, b["out_shape"])), _fmt(b["macs"]), _fmt(b["params"])))
    for p in desc.get("proxies", []):
        rows.append(("", "proxy", "proxy", f"{p['src']}→{p['dst']}", "", "", _fmt(p["macs"]), _fmt(p["params"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 6 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{desc['universal_blocks']} universal blocks; total {_fmt(desc['total_macs'])} MACs, "
                 f"{desc['total_params']:,} parameters (input {'x'.join(map(str, desc['input_shape']))})")
    return "\n".join(lines)
