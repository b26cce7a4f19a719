"""Are tailored networks faster in proportion to their MACs? Real runs, original against tailored.

For each run directory: the original network (the backbone with the task's classifier, an eager
nn.Module as a user would run it) and the run's tailored.pt, both in the memory layout the run
emitted its code for (channels-last; NCHW for runs made before reports named one), timed
interleaved in one process (warm-up, median of repeats) at batch 1 and batch 64 on CPU, once per
thread setting. The
measurement is repeated in rounds: this machine's 2-thread timings move between states that
change the tailored network's time far more than the original's, so each row gives the median
over rounds and the range of the per-round ratio. Reports each speed-up next to the MAC factor.
Writes docs/benchmarks/tailored_speed.md.

    python benchmarks/tailored_speed.py RUN_DIR [RUN_DIR ...] [--rounds 5] [--repeats 10] [--threads 0,1] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (at_least_one, chosen, load_pair, provenance, run_layout, set_allocator,  # noqa: E402
                               write_doc)
from archsearch.runtime.compare import parse_counts  # noqa: E402
from archsearch.errors import UserError  # noqa: E402
from archsearch.platform.latency import latency_rounds  # noqa: E402
from archsearch.platform.memory_format import layout_name  # noqa: E402

BATCHES = (1, 32, 64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--rounds", type=at_least_one, default=5, help="independent interleaved measurements per row")
    ap.add_argument("--repeats", type=at_least_one, default=10, help="timed passes per network and round")
    ap.add_argument("--threads", default="0,1", help="comma-separated torch CPU thread counts; 0 is torch's default")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks" / "tailored_speed.md")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 5 passes")
    ap.add_argument("--glibc-malloc", action="store_true",
                    help="leave glibc's allocator at its defaults (freed tensors go back to the kernel)")
    args = ap.parse_args()
    allocator = set_allocator(args.glibc_malloc)
    if args.quick:
        args.rounds, args.repeats = 2, 5
    default = torch.get_num_threads()
    try:
        threads = [n or default for n in parse_counts(args.threads, "--threads", allow_zero=True)]
    except UserError as exc:
        ap.error(str(exc))
    rows = ["| run | k | layout | MACs kept | MAC factor | threads | batch 1 (ms) | batch 32 (ms) | batch 64 (ms) "
            "| speed-up b1 | speed-up b32 | speed-up b64 | b64 speed-up / MAC factor | per-round range |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in args.runs:
        report, original, tailored = load_pair(run)
        layout = run_layout(report)  # the one its code was emitted for
        models = {"original": original.to(memory_format=layout), "tailored": tailored.to(memory_format=layout)}
        factor = report["original_macs"] / report["tailored_macs"]
        for n in threads:
            torch.set_num_threads(n)  # restored below, before the provenance line reads it
            per_round = {b: latency_rounds(models, tuple(report["input_shape"]), b, args.rounds, args.repeats,
                                           memory_format=layout) for b in BATCHES}
            t = {b: {m: statistics.median(per_round[b][m]) for m in models} for b in BATCHES}
            s1, s32, s64 = (t[b]["original"] / t[b]["tailored"] for b in BATCHES)
            ratios = [o / s / factor * 100 for o, s in zip(per_round[64]["original"], per_round[64]["tailored"])]
            verdict = "" if s64 / factor >= 0.8 else " (short)"
            rows.append(f"| {run.name} ({report['dataset']}) | {chosen(report)} | {layout_name(layout)} | "
                        f"{report['tailored_macs'] / report['original_macs'] * 100:.1f} % | {factor:.2f}x | {n} | "
                        f"{t[1]['original'] * 1e3:.2f} → {t[1]['tailored'] * 1e3:.2f} | "
                        f"{t[32]['original'] * 1e3:.1f} → {t[32]['tailored'] * 1e3:.1f} | "
                        f"{t[64]['original'] * 1e3:.1f} → {t[64]['tailored'] * 1e3:.1f} | {s1:.2f}x | {s32:.2f}x | "
                        f"{s64:.2f}x | "
                        f"**{s64 / factor * 100:.1f} %**{verdict} | {min(ratios):.1f}–{max(ratios):.1f} % |")
            print(rows[-1], flush=True)
    torch.set_num_threads(default)
    lines = ["# Tailored networks: measured CPU speed against MACs", "",
             *provenance(allocator, threads="torch threads as in each row's column"), "",
             "Original: the backbone with the task's classifier (eager). Tailored: the run's tailored.pt. Both "
             "in the layout the run emitted its network for (its report's memory_format; NCHW before it had one). "
             f"{args.rounds} rounds per row; in each, the two interleaved in one process, median of {args.repeats} "
             "after 3 warm-up passes. Times and speed-ups: medians over the rounds; range: the lowest and highest "
             "round's batch-64 ratio.", "", *rows]
    write_doc(args.doc, lines)


if __name__ == "__main__":
    main()
