"""Measured time of each edge of a student BlockGraph: the cost ``--cost latency`` charges.

E[C] and the choice of the leanest network count MACs by default, as DESIGN.md says. On a CPU a MAC
does not cost the same everywhere: a 3x3 convolution at full resolution costs about 1.8x per MAC
what one at the lowest resolution does (docs/results.md), so a network that keeps early blocks
and drops late ones runs slower than its MACs say. Measuring each edge on the device instead lets
the search weigh blocks by what they cost there. Universal edges (and the stem and head) are timed
node by node inside one forward pass of the pre-trained network, so each sees its input as the
network leaves it; proxies are timed on their own, on a map of their input's shape.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _NodeTimer(fx.Interpreter):
    """Runs a GraphModule node by node, keeping each node's wall time."""

    def __init__(self, gm: fx.GraphModule, device: torch.device) -> None:
        super().__init__(gm)
        self.device = device
        self.seconds: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        _sync(self.device)
        start = time.perf_counter()
        out = super().run_node(n)
        _sync(self.device)
        self.seconds[n.name] = time.perf_counter() - start
        return out


def _eval_modes(module: nn.Module) -> dict[nn.Module, bool]:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    return modes


def measure_edge_seconds(bg: BlockGraph, batch: int, device: str | torch.device = "cpu",
                         repeats: int = 5) -> dict[str, float]:
    """Median seconds of one forward pass of each edge (by edge name) at ``batch``, and of the whole
    pre-trained network node by node (key ``""``); one warm-up pass first."""
    device = torch.device(device)
    x = torch.randn(batch, *bg.g.graph["input_shape"], device=device)
    modes = _eval_modes(bg.gm)
    try:
        with torch.no_grad():
            runs: list[dict[str, float]] = []
            for _ in range(repeats + 1):
                timer = _NodeTimer(bg.gm, device)
                timer.run(x)
                runs.append(timer.seconds)
            per_node = {name: statistics.median(r[name] for r in runs[1:]) for name in runs[0]}
            out: dict[str, float] = defaultdict(float)
            out[""] = sum(per_node.values())
            for _, attrs in bg.iter_attrs():
                if attrs["kind"] != "proxy":
                    out[attrs["name"]] = sum(per_node.get(n, 0.0) for n in attrs["nodes"])
            for _, attrs in bg.iter_attrs("proxy"):
                module = attrs["module"].to(device)
                proxy_modes = _eval_modes(module)
                source = torch.randn(batch, *attrs["in_shape"], device=device)
                times = []
                for i in range(repeats + 1):
                    _sync(device)
                    start = time.perf_counter()
                    module(source)
                    _sync(device)
                    if i:
                        times.append(time.perf_counter() - start)
                for m, training in proxy_modes.items():
                    m.train(training)
                out[attrs["name"]] = statistics.median(times)
    finally:
        for m, training in modes.items():
            m.train(training)
    return dict(out)


def apply_edge_seconds(bg: BlockGraph, seconds: dict[str, float]) -> None:
    """In place: give every edge its measured ``seconds`` and the graph the original's
    ``total_seconds``, which E[C] and ``BlockGraph.cost`` then use instead of MACs."""
    missing = [a["name"] for _, a in bg.iter_attrs() if a["name"] not in seconds]
    if missing or not isinstance(seconds.get(""), (int, float)) or seconds[""] <= 0:
        raise UserError(f"the measured costs do not fit this network (missing: {', '.join(missing[:3]) or 'the total'}); "
                        "delete the run's costs.json to measure again")
    for _, attrs in bg.iter_attrs():
        attrs["seconds"] = float(seconds[attrs["name"]])
    bg.g.graph["total_seconds"] = float(seconds[""])
