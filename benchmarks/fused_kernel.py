"""Does the fused proxy kernel make tailored networks faster? The same network three ways, interleaved.

For each pair BEFORE:AFTER of run directories holding the same tailored network (BEFORE emitted by
earlier code, AFTER by this code, e.g. a copy of the run resumed after deleting its tailored.pt), four
models are timed interleaved in one process, channels-last, batch 1 and 64, in rounds: the original
network; BEFORE's tailored.pt; AFTER's tailored.pt with the fused kernel (archsearch/nn/pointwise.py);
and AFTER's tailored.pt with the kernel turned off (its torch form, what runs where no compiler is).
Reports each tailored network's speed-up as a share of the MAC factor. Writes docs/benchmarks/fused_kernel.md.

    python benchmarks/fused_kernel.py BEFORE:AFTER [BEFORE:AFTER ...] [--rounds 5] [--repeats 10] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least_one, chosen, load_pair, probe_ms, provenance, run_layout,  # noqa: E402
                               set_allocator, write_doc)
from archsearch.latency import latency_rounds  # noqa: E402
from archsearch.nn import pointwise  # noqa: E402

BATCHES = (1, 64)


def without_kernel(model: torch.nn.Module) -> Callable[[torch.Tensor], object]:
    """``model`` called with the fused kernel turned off: its proxies' sums run as torch operations."""
    def call(x: torch.Tensor) -> object:
        built = pointwise.kernel
        pointwise.kernel = lambda: None
        try:
            return model(x)
        finally:
            pointwise.kernel = built
    return call


def machine_state(probe: torch.Tensor, threads: int) -> float:
    """The probe of benchmarks/thread_states.py at ``threads`` (torch's default): this machine's
    two-thread state, which moves a lean network's two-thread time far more than an original's."""
    measuring = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return probe_ms(probe)
    finally:
        torch.set_num_threads(measuring)


def pair(text: str) -> tuple[Path, Path]:
    """argparse type: BEFORE:AFTER, two run directories."""
    before, sep, after = text.partition(":")
    if not sep or not before or not after:
        raise argparse.ArgumentTypeError(f"give BEFORE:AFTER, two run directories, not '{text}'")
    return Path(before), Path(after)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", nargs="+", type=pair, metavar="BEFORE:AFTER")
    ap.add_argument("--rounds", type=at_least_one, default=5, help="independent interleaved measurements per row")
    ap.add_argument("--repeats", type=at_least_one, default=10, help="timed passes per model and round")
    ap.add_argument("--threads", type=at_least_one, default=1, help="torch CPU threads")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "fused_kernel.md")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 passes")
    args = ap.parse_args()
    allocator = set_allocator()
    if args.quick:
        args.rounds, args.repeats = 2, 5
    if pointwise.kernel() is None:
        raise SystemExit("the fused proxy kernel is off or could not be built (see above); nothing to compare")
    default = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = ["| network | k | MAC factor | batch | original (ms) | before (ms) | kernel (ms) | kernel off (ms) "
            "| kernel / before | share of MAC factor: before → kernel (kernel off) | per-round range, kernel | probe (ms) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    probe = torch.randn(256, 256)
    for before_dir, after_dir in args.pairs:
        report, original, before = load_pair(before_dir)
        after_report, _, after = load_pair(after_dir)
        if (after_report["tailored_macs"], after_report["chosen_k"]) != (report["tailored_macs"], report["chosen_k"]):
            raise SystemExit(f"{before_dir} and {after_dir} hold different networks; give two emissions of one")
        layout = run_layout(after_report)
        original, before, after = (m.to(memory_format=layout) for m in (original, before, after))
        models = {"original": original, "before": before, "kernel": after, "off": without_kernel(after)}
        factor = report["original_macs"] / report["tailored_macs"]
        for batch in BATCHES:
            with torch.no_grad():
                per_round = latency_rounds(models, tuple(report["input_shape"]), batch, args.rounds, args.repeats,
                                           memory_format=layout)
            t = {m: statistics.median(v) * 1e3 for m, v in per_round.items()}
            share = {m: t["original"] / t[m] / factor * 100 for m in ("before", "kernel", "off")}
            rounds = [o / k / factor * 100 for o, k in zip(per_round["original"], per_round["kernel"])]
            verdict = "" if batch != 64 or share["kernel"] >= 80 else " (short)"
            rows.append(f"| {after_dir.name} ({report['dataset']}) | {chosen(report)} | {factor:.2f}x | {batch} | "
                        f"{t['original']:.2f} | {t['before']:.2f} | {t['kernel']:.2f} | {t['off']:.2f} | "
                        f"{t['before'] / t['kernel']:.3f}x | {share['before']:.1f} → **{share['kernel']:.1f} %**"
                        f"{verdict} ({share['off']:.1f} %) | {min(rounds):.1f}–{max(rounds):.1f} % | "
                        f"{machine_state(probe, default):.3f} |")
            print(rows[-1], flush=True)
    lines = ["# The fused proxy kernel: the same tailored networks before and after", "",
             *provenance(allocator), "",
             "Original: the backbone with the task's classifier (eager). Before: tailored.pt as earlier code "
             "emitted it. Kernel: tailored.pt as this code emits it. Kernel off: the same tailored.pt with the "
             "kernel turned off. All channels-last, under torch.no_grad, interleaved in one process: "
             f"{args.rounds} rounds of {args.repeats} passes after 3 warm-up passes; medians over the rounds. "
             "Share of the MAC factor: speed-up over the original divided by the MAC factor (bar: 80 % at batch 64). "
             f"Probe: a 256x256 matrix product on {default} threads after the row (benchmarks/thread_states.py: "
             "about 0.170 ms in this machine's fast two-thread state, 0.18–0.22 ms in its slow one).",
             "", *rows]
    torch.set_num_threads(default)
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
