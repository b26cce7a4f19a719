"""Would channels-last lift a tailored network's CPU speed-up toward its MAC factor?

On this CPU a 16-channel 3x3 convolution at 32x32 costs about 1.5x per MAC in NCHW what it costs in
channels-last (oneDNN reorders NCHW maps), while at 8x8 with 64 channels the two layouts cost the
same; networks that keep the full-resolution blocks pay the most for NCHW. This times, for each
run, the original (eager backbone with the task's classifier) and the tailored network three ways,
all interleaved in one process: NCHW as emitted; both moved to channels-last with the tailored
network's code unchanged; and channels-last with each proxy product computed as one matrix product
over the NHWC view (pixels x channels) instead of a batched product over NCHW maps, so that the
tailored network's maps stay channels-last from end to end. The last form is a probe (the emitted
code had no such path then), written here so that the question is answered by measurement. Since
then archsearch emits that form itself (docs/results.md, *Channels-last, emitted*); this benchmark
takes runs emitted in NCHW, made before reports named a memory_format, and
benchmarks/tailored_speed.py compares the two emissions side by side.
Writes docs/benchmarks/channels_last.md.

    python benchmarks/channels_last.py RUN_DIR [RUN_DIR ...] [--rounds 5] [--repeats 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torch.fx as fx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least_one, chosen, load_pair, provenance, require_nchw_run,  # noqa: E402
                               set_allocator, write_doc)
from archsearch.latency import latency_rounds  # noqa: E402

CL = torch.channels_last
FORMS = ("NCHW, as emitted", "channels-last, products as emitted", "channels-last, NHWC products")


def _rows(t: torch.Tensor) -> torch.Tensor | None:
    """A (N, C, L) map whose channels are innermost as an (N*L, C) matrix view; None if it is not."""
    n, c, length = t.shape
    if t.stride(1) != 1 or t.stride(2) != c or t.stride(0) != c * length:
        return None
    return t.transpose(1, 2).reshape(n * length, c)


def nhwc_baddbmm(acc: torch.Tensor, weights: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``torch.baddbmm(acc, weights, flat)`` as one matrix product where ``flat`` is channels-innermost."""
    x = _rows(flat)
    if x is None:
        return torch.baddbmm(acc, weights, flat)
    n, _, length = flat.shape
    if acc.dim() == 2:  # the bias alone: a new sum
        return torch.addmm(acc.t(), x, weights[0].t()).view(n, length, -1).transpose(1, 2)
    out = acc.clone(memory_format=torch.preserve_format)
    return nhwc_baddbmm_(out, weights, flat)


def nhwc_baddbmm_(acc: torch.Tensor, weights: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``acc.baddbmm_(weights, flat)`` as one in-place matrix product where both are channels-innermost."""
    a, x = _rows(acc), _rows(flat)
    if a is None or x is None:
        return acc.baddbmm_(weights, flat)
    a.addmm_(x, weights[0].t())
    return acc


def nhwc_products(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of a tailored network whose proxy products run as NHWC matrix products."""
    gm = copy.deepcopy(gm)
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch.baddbmm:
            node.target = nhwc_baddbmm
        elif node.op == "call_method" and node.target == "baddbmm_":
            with gm.graph.inserting_before(node):
                new = gm.graph.call_function(nhwc_baddbmm_, node.args)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--rounds", type=at_least_one, default=5, help="independent interleaved measurements")
    ap.add_argument("--repeats", type=at_least_one, default=10, help="timed passes per network and round")
    ap.add_argument("--batch", type=at_least_one, default=64)
    ap.add_argument("--threads", type=at_least_one, default=1, help="torch CPU threads")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "channels_last.md")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 passes")
    args = ap.parse_args()
    allocator = set_allocator()
    if args.quick:
        args.rounds, args.repeats = 2, 5
    torch.set_num_threads(args.threads)
    rows = ["| run | MAC factor | form | original (ms) | tailored (ms) | speed-up | of the MAC factor |",
            "|---|---|---|---|---|---|---|"]
    for run in args.runs:
        report, original, tailored = load_pair(run)
        require_nchw_run(run, report)
        shape = tuple(report["input_shape"])
        probe = nhwc_products(tailored)
        with torch.no_grad():
            x = torch.randn(4, *shape)
            gap = (probe.to(memory_format=CL)(x.contiguous(memory_format=CL)) - tailored(x)).abs().max().item()
        if gap > 1e-3:
            raise SystemExit(f"{run}: the NHWC probe differs from the tailored network by {gap:g}")
        pairs = [({"o": original, "t": tailored}, torch.contiguous_format),
                 ({"o": copy.deepcopy(original).to(memory_format=CL),
                   "t": copy.deepcopy(tailored).to(memory_format=CL)}, CL),
                 ({"o": copy.deepcopy(original).to(memory_format=CL), "t": probe.to(memory_format=CL)}, CL)]
        factor = report["original_macs"] / report["tailored_macs"]
        per_round = {i: {"o": [], "t": []} for i in range(len(pairs))}
        for _ in range(args.rounds):  # forms alternate round by round, so a slow moment hits all three
            for i, (models, layout) in enumerate(pairs):
                t = latency_rounds(models, shape, args.batch, 1, args.repeats, memory_format=layout)
                per_round[i]["o"] += t["o"]
                per_round[i]["t"] += t["t"]
        for i, form in enumerate(FORMS):
            o, s = statistics.median(per_round[i]["o"]), statistics.median(per_round[i]["t"])
            verdict = "" if o / s / factor >= 0.8 else " (short)"
            rows.append(f"| {run.name} ({report['dataset']}, k={chosen(report)}) | {factor:.2f}x | {form} | "
                        f"{o * 1e3:.1f} | {s * 1e3:.1f} | {o / s:.2f}x | **{o / s / factor * 100:.1f} %**{verdict} |")
            print(rows[-1], flush=True)
    lines = ["# Channels-last on CPU: original and tailored networks, three forms", "",
             *provenance(allocator), "",
             f"Batch {args.batch}; {args.rounds} rounds, in each the three forms one after another, each form's "
             f"two networks interleaved, median of {args.repeats} passes after 3 warm-up passes; times are medians "
             "over the rounds.", "", *rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
