"""Measured time of each edge of a student BlockGraph: the cost ``--cost latency`` charges.

E[C] and the choice of the leanest network count MACs by default, as DESIGN.md says. On a CPU a MAC
does not cost the same everywhere: a 3x3 convolution at full resolution costs about 1.8x per MAC
what one at the lowest resolution does (docs/design-choices.md; earlier tables in git history of docs/results.md), so a network that keeps early blocks
and drops late ones runs slower than its MACs say. Measuring each edge on the device instead lets
the search weigh blocks by what they cost there. Universal edges (and the stem and head) are timed
node by node inside one forward pass of the pre-trained network, so each sees its input as the
network leaves it; proxies are timed on their own, on a map of their input's shape. Both are
approximations: node by node each operation pays the interpreter's small overhead (negligible on
CPU at the training batch, less so on a GPU at small batches), and each proxy, timed in the form
the slim network runs it, pays its own pooling, which in the slim network proxies from one source
share.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from archsearch.errors import UserError
from archsearch.graph.blockgraph import BlockGraph, Edge
from archsearch.passes.lower import functional_task_layers, halving_pools
from archsearch.platform.latency import interleaved_latency
from archsearch.platform.memory_format import deployable_layout, training_layout


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


def edge_key(e: Edge) -> str:
    """An edge's key in the measurement: source, destination and kind (names alone can repeat, e.g. a
    user model whose first block and classifier sit in one ModuleList)."""
    return f"{e[0]}->{e[1]}:{e[2]}"


def measure_edge_seconds(bg: BlockGraph, batch: int, device: str | torch.device = "cpu",
                         repeats: int = 5) -> dict[str, float]:
    """Median seconds of one forward pass of each edge (by ``edge_key``) at ``batch``, and of the whole
    pre-trained network node by node (key ``""``); one warm-up pass first. Maps and weights are in
    the deployment layout while timed, as the tailored network will run (NCHW where the network
    refuses it, as the tailored one then will), and back in the training layout afterwards."""
    device = torch.device(device)
    x = torch.randn(batch, *bg.g.graph["input_shape"], device=device)
    modes = _eval_modes(bg.gm)
    try:
        layout, _ = deployable_layout([bg.gm], x[:2], device)
        bg.gm.to(memory_format=layout)
        x = x.contiguous(memory_format=layout)
        with torch.no_grad():
            runs: list[dict[str, float]] = []
            for _ in range(repeats + 1):
                timer = _NodeTimer(bg.gm, device)
                timer.run(x)
                runs.append(timer.seconds)
            per_node = {name: statistics.median(r[name] for r in runs[1:]) for name in runs[0]}
            out = {"": sum(per_node.values())}
            for e, attrs in bg.iter_attrs():
                if attrs["kind"] != "proxy":
                    out[edge_key(e)] = sum(per_node.get(n, 0.0) for n in attrs["nodes"])
            for e, attrs in bg.iter_attrs("proxy"):
                module = inference_form(attrs["module"], tuple(attrs["in_shape"])).to(device, memory_format=layout)
                out[edge_key(e)] = interleaved_latency({"proxy": module}, tuple(attrs["in_shape"]), batch,
                                                       repeats=repeats, warmup=1, device=str(device),
                                                       memory_format=layout)["proxy"]
    finally:
        for m, training in modes.items():
            m.train(training)
        bg.gm.to(memory_format=training_layout(device))
    return out


def inference_form(proxy: nn.Module, in_shape: tuple[int, ...]) -> fx.GraphModule:
    """A copy of ``proxy`` as the slim network runs it: batch-norms folded into functional
    convolutions, max-pooling by 2**n as pairwise maxima (:mod:`archsearch.passes.lower`)."""
    gm = fx.symbolic_trace(copy.deepcopy(proxy).eval())
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            node.meta["shape"] = tuple(in_shape)
    functional_task_layers(gm, lambda target: True)
    halving_pools(gm)
    return gm


def apply_edge_seconds(bg: BlockGraph, seconds: dict[str, float]) -> None:
    """In place: give every edge its measured ``seconds`` and the graph the original's
    ``total_seconds``, which E[C] and ``BlockGraph.cost`` then use instead of MACs."""
    def ok(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0

    keys = [edge_key(e) for e in bg.edges()]
    bad = [k for k in keys if not ok(seconds.get(k))]
    if bad or not ok(seconds.get("")) or seconds[""] <= 0:
        raise UserError(f"the run's measured costs (costs.json) do not fit this network (missing or not a time: "
                        f"{', '.join(bad[:3]) or 'the total'}); start a new run to measure them again")
    for e, attrs in bg.iter_attrs():
        attrs["seconds"] = float(seconds[edge_key(e)])
    bg.g.graph["total_seconds"] = float(seconds[""])
