"""Where does a tailored network's time go? Per-operation wall time, original against tailored.

Runs the original network (traced by torch.fx from the eager backbone with the task's classifier)
and a run's tailored.pt node by node at one batch size, alternating the two, and sums each node's
wall time into a category: convolutions (the first one, the stem, on its own), batch-norms, proxy
matrix products, pooling, activations, sums and gate scaling, everything else. Beside each category:
its share of the time, and for the two that do the multiply-accumulates (convolutions, proxy
products) their MACs and nanoseconds per MAC. Says which part of a tailored network runs less
efficiently per MAC than the original, and so what limits its speed-up against its MAC factor.
Writes docs/benchmarks/time_breakdown.md.

    python benchmarks/time_breakdown.py RUN_DIR [--batch 64] [--repeats 15] [--threads N] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archsearch.graph.trace import symbolic_trace  # noqa: E402
from archsearch.layout import layout_name  # noqa: E402
from archsearch.nn.proxy import HalvingMaxPool  # noqa: E402
from benchmarks.common import load_pair, provenance, run_layout, run_line, set_allocator, write_doc  # noqa: E402

OTHERS = ("batch-norms", "proxy products", "pooling", "activations", "sums and gate scaling", "everything else")
# How the slim code runs proxies: (b)addbmm(_) in the NCHW form, one pointwise_sum per node (its ReLU included)
# in the channels-last form (addmm(_) over pixel rows in code emitted before it), conv2d for all but a
# pointwise-last layer.
_PRODUCTS = {"bmm", "baddbmm", "baddbmm_", "addmm", "addmm_", "conv2d", "pointwise_sum"}
_POOLS = {"maximum", "max_pool2d"}
_ACTS = {"relu", "relu_"}
_SUMS = {"add", "add_", "mul", "mul_", "iadd"}


def _name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


class _TimedRun(fx.Interpreter):
    """Runs a GraphModule node by node, adding each node's wall time to its category."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.totals: dict[str, float] = defaultdict(float)
        self.macs: dict[str, int] = defaultdict(int)
        self.counting = False  # MACs are summed on one pass only
        self._first_conv = next((n.name for n in gm.graph.nodes if n.op == "call_module"
                                 and isinstance(gm.get_submodule(n.target), nn.Conv2d)), None)

    def category(self, node: fx.Node, out: Any) -> str:
        if node.op == "call_module":
            module = self.module.get_submodule(node.target)
            if isinstance(module, nn.Conv2d):
                if node.name == self._first_conv:
                    return "stem convolution"
                return f"convolutions to {'x'.join(str(d) for d in out.shape[1:])}"
            if isinstance(module, nn.BatchNorm2d):
                return "batch-norms"
            if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d, HalvingMaxPool)):
                return "pooling"
            if isinstance(module, nn.ReLU):
                return "activations"
            return "everything else"
        name = _name(node)
        if name in _PRODUCTS:
            return "proxy products"
        if name in _POOLS:
            return "pooling"
        if name in _ACTS:
            return "activations"
        if name in _SUMS:
            return "sums and gate scaling"
        return "everything else"

    def run_node(self, node: fx.Node) -> Any:
        start = time.perf_counter()
        out = super().run_node(node)
        elapsed = time.perf_counter() - start
        if node.op in ("call_module", "call_function", "call_method"):
            cat = self.category(node, out)
            self.totals[cat] += elapsed
            if self.counting:
                self.macs[cat] += _macs(self.module, node, out, self.env)
        return out


def _macs(gm: fx.GraphModule, node: fx.Node, out: Any, env: dict) -> int:
    """Multiply-accumulates of a convolution or batched matrix-product node, from its tensors' shapes."""
    if not isinstance(out, torch.Tensor):
        return 0
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.Conv2d):
            return out.numel() * module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        return 0
    if _name(node) == "conv2d":  # F.conv2d(x, weight, …): weight is (out, in / groups, kh, kw)
        weight = env[node.args[1]]
        return out.numel() * weight[0].numel()
    if _name(node) == "pointwise_sum":  # pointwise_sum(start, rows, weights, …): each weight is (in, out)
        return sum(out.numel() * env[w].shape[0] for w in node.args[2])
    if _name(node) in ("addmm", "addmm_"):  # addmm(_)(sum, rows, weight): weight is (in, out)
        weight = node.args[-1]
        return out.numel() * env[weight].shape[0] if isinstance(weight, fx.Node) else 0
    if _name(node) in _PRODUCTS:
        weight = node.args[-2]  # (b)addbmm(_)(…, batch1, batch2): batch1 is the weight
        return out.numel() * env[weight].shape[-1] if isinstance(weight, fx.Node) else 0
    return 0


def categories(models: dict[str, _TimedRun]) -> list[str]:
    """Every category any model has used: the convolutions (stem first, then by output shape), then the rest."""
    seen = {c for run in models.values() for c in run.totals}
    convs = sorted((c for c in seen if c.startswith("convolutions")), key=lambda c: -int(c.rsplit("x", 1)[1]))
    return ["stem convolution", *convs, *OTHERS]


def _measure(models: dict[str, _TimedRun], x: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    """Per category, the median over repeats of its seconds per forward pass, models alternating."""
    samples: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in models}
    with torch.no_grad():
        for r in range(repeats + 2):
            for name, run in models.items():
                run.totals.clear()
                run.counting = r == 0
                start = time.perf_counter()
                run.run(x)
                total = time.perf_counter() - start
                if r >= 2:
                    for cat in categories(models):
                        samples[name][cat].append(run.totals.get(cat, 0.0))
                    samples[name]["total"].append(total)
    return {m: {c: statistics.median(v) for c, v in s.items()} for m, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "time_breakdown.md",
                    help="where the table goes (results.md cites time_breakdown_resnet20.md and _resnet56.md)")
    ap.add_argument("--glibc-malloc", action="store_true",
                    help="leave glibc's allocator at its defaults (freed tensors go back to the kernel)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="5 repeats")
    args = ap.parse_args()
    allocator = set_allocator(args.glibc_malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 5
    report, eager, tailored = load_pair(args.run)
    layout = run_layout(report)  # both run as the run's code was emitted for
    original = symbolic_trace(eager).to(memory_format=layout)
    tailored = tailored.to(memory_format=layout)
    runs = {"original": _TimedRun(original), "tailored": _TimedRun(tailored)}
    x = torch.randn(args.batch, *report["input_shape"]).contiguous(memory_format=layout)
    with torch.no_grad():
        expect = tailored(x)
        got = runs["tailored"].run(x)
        runs["tailored"].totals.clear()
    if not torch.allclose(expect, got, atol=1e-5):
        raise SystemExit("the node-by-node run of tailored.pt does not reproduce its forward pass")
    t = _measure(runs, x, args.repeats)
    macs = {m: dict(r.macs) for m, r in runs.items()}
    rows = ["| category | original (ms) | share | tailored (ms) | share | original ns/MAC | tailored ns/MAC |",
            "|---|---|---|---|---|---|---|"]
    for cat in categories(runs):
        cells = []
        for m in runs:
            cells += [f"{t[m][cat] * 1e3:.2f}", f"{t[m][cat] / t[m]['total'] * 100:.0f} %"]
        eff = [f"{t[m][cat] * 1e9 / macs[m][cat]:.4f} ({macs[m][cat] / 1e9:.2f} GMAC)" if macs[m].get(cat) else "–"
               for m in runs]
        rows.append(f"| {cat} | {' | '.join(cells)} | {' | '.join(eff)} |")
    rows.append(f"| **whole forward pass** | {t['original']['total'] * 1e3:.2f} | | {t['tailored']['total'] * 1e3:.2f}"
                f" | | | |")
    factor = report["original_macs"] / report["tailored_macs"]
    speedup = t["original"]["total"] / t["tailored"]["total"]
    lines = ["# Where a tailored network's time goes", "",
             *provenance(allocator),
             run_line(report), "",
             f"Batch {args.batch}, {layout_name(layout)}; each forward pass run node by node (torch.fx Interpreter), original and tailored "
             f"alternating; per category the median over {args.repeats} passes. Node-by-node: "
             f"{speedup:.2f}x faster, {speedup / factor * 100:.0f} % of the MAC factor.", "", *rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
